r"""Forward, input-gradient and kernel-gradient times of a model's spatial convolutions.

  python -m benchmarks.conv_backward --gin_file=gin/base/model_assemblenet_plus50.gin \
      --frames=8 --size=224 --batch=1

Builds the model as `benchmarks/model_speed.py` does (same flags, the thread counts
included: with `--intra_op_threads=1` the times are each pass's CPU work), runs one
training-mode forward pass that records every `keras.layers.Conv2D` call (input shape,
kernel shape, strides, padding; the temporal convolutions are `TemporalConv`s and are not
included), then times each distinct shape on random tensors, in isolation: the forward
conv, and the gradients with respect to the input and to the kernel, each a `tf.function`
whose graph keeps only what that gradient needs (median of `--runs` calls after
`--warmup`), once as the package computes them (`conv_2plus1d.conv2d`, whose backward
forms depend on the shape and on TF's CPU kernel library) and once as TF's own gradient
(`Conv2DBackpropInput`, `Conv2DBackpropFilter`, keys `tf_*`). Prints one JSON line per
shape (`gflop`: 2 FLOPs per multiply-add of one call; times in ms; `count`: calls per
forward pass), then a JSON line of totals over all calls with the GFLOP/s of each pass.

What it answers: how far the backward convolutions run from the forward's speed, and what
the convolutions alone cost, which bounds a whole training step from below
(docs/performance.md, issue 18).
"""

import collections
import json
import os
import statistics

from absl import app
from absl import flags
import gin
import keras
import numpy as np
import tensorflow as tf

from benchmarks import model_speed
from official import runtime
from official.modeling import builders
from official.modeling.layers import conv_2plus1d

FLAGS = flags.FLAGS


def spatial_conv_calls(model, inputs):
  """`Counter{(input shape, kernel shape, strides, padding): calls}` of one training-mode
  forward pass of `model` on `inputs`."""
  calls = collections.Counter()
  original_call = keras.layers.Conv2D.call

  def recording_call(layer, x):
    calls[(tuple(x.shape), tuple(layer.kernel.shape), tuple(layer.strides),
           layer.padding.upper())] += 1
    return original_call(layer, x)

  keras.layers.Conv2D.call = recording_call
  try:
    model(inputs, training=True)
  finally:
    keras.layers.Conv2D.call = original_call
  return calls


def _median_ms(fn, runs, warmup):
  return 1e3 * statistics.median(model_speed.time_calls(fn, runs, warmup))


def time_conv(input_shape, kernel_shape, strides, padding, runs=7, warmup=2, seed=0):
  """Times of one conv shape (`strides`: an int): `gflop`; `forward_ms`; `input_grad_ms`
  and `kernel_grad_ms` of the package's conv (`conv_2plus1d.conv2d`, what
  `conv_2plus1d.Conv2D` runs); `tf_input_grad_ms` and `tf_kernel_grad_ms` of
  `tf.nn.conv2d`'s own gradient (TF's backprop ops)."""
  x = tf.random.stateless_normal(input_shape, [seed, 1])
  kernel = tf.random.stateless_normal(kernel_shape, [seed, 2])
  package_conv = lambda a, b: conv_2plus1d.conv2d(a, b, strides, padding)
  tf_conv = lambda a, b: tf.nn.conv2d(a, b, strides, padding)
  output_shape = tf_conv(x, kernel).shape
  dy = tf.random.stateless_normal(output_shape, [seed, 3])
  # Reads back one value (whatever the rank), so little is copied.
  first = lambda t: tf.reduce_sum(tf.reshape(t, [-1])[:1])

  def gradient(conv, wrt):
    with tf.GradientTape() as tape:
      tape.watch(wrt)
      y = conv(x, kernel)
    return first(tape.gradient(y, wrt, output_gradients=dy))

  timed = lambda fn: _median_ms(tf.function(fn), runs, warmup)
  return {
      "gflop": 2 * int(np.prod(output_shape)) * int(np.prod(kernel_shape[:3])) / 1e9,
      "forward_ms": timed(lambda: first(tf_conv(x, kernel))),
      "input_grad_ms": timed(lambda: gradient(package_conv, x)),
      "kernel_grad_ms": timed(lambda: gradient(package_conv, kernel)),
      "tf_input_grad_ms": timed(lambda: gradient(tf_conv, x)),
      "tf_kernel_grad_ms": timed(lambda: gradient(tf_conv, kernel)),
  }


def benchmark(gin_files, gin_params, frames, size, batch, runs, warmup, seed=0):
  """Yields one record per distinct conv shape, largest input first."""
  if runs < 5:
    raise ValueError(f"`runs` must be at least 5. Received: {runs}")
  params = model_speed.model_bindings(gin_params, frames, size)
  gin.parse_config_files_and_bindings(gin_files, params, skip_unknown=True)
  keras.utils.set_random_seed(seed)
  model = builders.build_model()
  calls = spatial_conv_calls(model, model_speed.random_inputs(model, batch, seed))
  for (input_shape, kernel_shape, strides, padding), count in sorted(
      calls.items(), key=lambda kv: -int(np.prod(kv[0][0]))):
    record = {"input_shape": list(input_shape), "kernel_shape": list(kernel_shape),
              "strides": strides[0], "padding": padding, "count": count}
    # Keras' strides are (s, s): the package's conv takes the int, as conv_2plus1d.Conv2D passes it.
    record.update(time_conv(input_shape, kernel_shape, strides[0], padding, runs, warmup, seed))
    yield record


def totals(records):
  """Sums over all calls (`count` times each record) and the GFLOP/s of each pass."""
  total = {"calls": sum(r["count"] for r in records),
           "gflop": sum(r["gflop"] * r["count"] for r in records)}
  for key in ("forward_ms", "input_grad_ms", "kernel_grad_ms", "tf_input_grad_ms",
              "tf_kernel_grad_ms"):
    total[key] = sum(r[key] * r["count"] for r in records)
    total[key.replace("_ms", "_gflops_per_s")] = total["gflop"] / total[key] * 1e3
  total["load_avg_1m"] = os.getloadavg()[0]
  total["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
  total["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
  return total


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  model_speed.apply_thread_flags()
  records = []
  for record in benchmark(FLAGS.gin_file, FLAGS.gin_param, model_speed._FRAMES.value,  # pylint: disable=protected-access
                          model_speed._SIZE.value, model_speed._BATCH.value,  # pylint: disable=protected-access
                          model_speed._RUNS.value, model_speed._WARMUP.value):  # pylint: disable=protected-access
    records.append(record)
    print(json.dumps(record), flush=True)
  print(json.dumps({"totals": totals(records)}))


if __name__ == "__main__":
  app.run(main)
