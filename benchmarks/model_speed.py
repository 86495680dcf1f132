r"""Model step time: inference or one training step of a gin-configured model. One JSON line.

  python -m benchmarks.model_speed --gin_file=gin/base/model_assemblenet_plus50.gin \
      --frames=8 --size=224 --batch=1 --mode=infer --precision=float32 --ceiling

Inputs are random tensors of the model's input shapes (built once, outside the timed
region). `--mode=infer` times `model(x, training=False)`; `--mode=train` times forward,
backward and an SGD update (sigmoid cross-entropy on random multi-hot labels). The step is
a `tf.function` (`--xla` sets `jit_compile=True`), traced and run `--warmup` times before
`--runs` timed runs; `median_s`/`min_s` are over the timed runs (time.perf_counter around
the step, synchronised by reading the result back).

`--precision`: float32, bfloat16 or float16 select the Keras policies float32,
mixed_bfloat16 and mixed_float16 (variables stay float32; the head and the representation
flow stay float32 by design).

Fields: median_s, min_s, clips_per_s (batch / median_s), peak_rss_mb (ru_maxrss of this
process once the model steps are timed, before the ceiling matmul), gflops_per_clip (for
infer: the forward FLOPs of `official.tools.model_info`; for train: 3x that, the usual
forward + backward estimate), achieved_gflops_per_s (gflops_per_clip * clips_per_s),
load_avg_1m (os.getloadavg at the end), intra_op_threads / inter_op_threads (in effect),
tf_cpu_allocator (`bfc`: TF's pool, which the package's commands select with Eigen's
kernels unless TF_CPU_ALLOCATOR_USE_BFC is set; `default`: malloc), onednn_kernels (bool).
With `--ceiling`: ceiling_gflops_per_s (median of a 4096^3 matmul in the chosen
precision's compute dtype) and fraction_of_ceiling.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
import gin
import keras
import numpy as np
import tensorflow as tf

from official import runtime
from official.modeling import builders
from official.tools import model_info

# --gin_file and --gin_param are model_info's flags (defined when it is imported).
FLAGS = flags.FLAGS
_FRAMES = flags.DEFINE_integer("frames", None, "Frames per clip (build_model.num_frames).")
_SIZE = flags.DEFINE_integer("size", None, "Image size (build_model.image_size).")
_BATCH = flags.DEFINE_integer("batch", 1, "Clips per step.")
_MODE = flags.DEFINE_enum("mode", "infer", ["infer", "train"], "What one step does.")
_XLA = flags.DEFINE_bool("xla", False, "Compile the step with XLA (jit_compile=True).")
_PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16", "float16"],
                               "Compute precision (Keras mixed policies for 16 bits).")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed steps (at least 5).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after tracing.")
_CEILING = flags.DEFINE_bool("ceiling", False, "Also time a 4096^3 matmul in the precision.")
_CEILING_SIZE = flags.DEFINE_integer("ceiling_size", 4096, "Matmul size for --ceiling.")
_INTRA = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF default).")
_INTER = flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF default).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random inputs and weights.")

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
COMPUTE_DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}


def random_inputs(model, batch, seed):
  """Random tensors of the model's input shapes and dtypes: `{name: [batch, ...]}`."""
  rng = np.random.default_rng(seed)
  inputs = {}
  for key, tensor in model.input.items():
    shape = [batch] + list(tensor.shape[1:])
    dtype = tf.as_dtype(tensor.dtype)
    if dtype.is_integer:
      # Object class-id maps: ids in [0, K) (ADE-20K: 150 + "other").
      values = rng.integers(0, getattr(model, "num_object_classes", 151), size=shape)
    else:
      values = rng.uniform(-1.0, 1.0, size=shape)
    inputs[key] = tf.constant(values, dtype=dtype)
  return inputs


def make_step(model, mode, xla, num_classes, batch, seed):
  """The step function: `step(inputs) -> a scalar`, compiled with XLA when asked."""
  if mode == "infer":
    def infer(inputs):
      return tf.reduce_sum(tf.nn.sigmoid(model(inputs, training=False)))
    return tf.function(infer, jit_compile=xla)

  optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
  optimizer.build(model.trainable_variables)
  labels = tf.cast(
      tf.random.stateless_uniform([batch, num_classes], [seed, 1]) < 0.1, tf.float32)

  def train(inputs):
    with tf.GradientTape() as tape:
      logits = model(inputs, training=True)
      loss = tf.reduce_mean(
          tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return tf.function(train, jit_compile=xla)


def model_bindings(gin_params, frames, size):
  """`gin_params` plus the bindings of `--frames` and `--size` (None: the gin file's)."""
  params = list(gin_params)
  if frames is not None:
    params.append(f"build_model.num_frames = {frames}")
  if size is not None:
    params.append(f"build_model.image_size = {size}")
  return params


def time_calls(fn, runs, warmup):
  """Step times in seconds of `runs` calls after `warmup` untimed ones."""
  for _ in range(warmup):
    fn().numpy()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn().numpy()  # Reading the value back waits for the whole step.
    times.append(time.perf_counter() - start)
  return times


def matmul_ceiling(precision, size, runs):
  """GFLOP/s of a `size`^3 matmul in the compute dtype of `precision` (median of runs)."""
  dtype = COMPUTE_DTYPES[precision]
  a = tf.cast(tf.random.stateless_normal([size, size], [1, 2]), dtype)
  b = tf.cast(tf.random.stateless_normal([size, size], [3, 4]), dtype)
  matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
  times = time_calls(matmul, max(runs, 5), 2)
  return 2 * size**3 / statistics.median(times) / 1e9


def benchmark(gin_files, gin_params, frames, size, batch, mode, xla, precision, runs,
              warmup, ceiling, ceiling_size=4096, seed=0):
  """Builds the model, times it and returns the JSON-able record."""
  if runs < 5:
    raise ValueError(f"`runs` must be at least 5. Received: {runs}")
  if batch < 1:
    raise ValueError(f"`batch` must be positive. Received: {batch}")
  params = model_bindings(gin_params, frames, size)
  gin.parse_config_files_and_bindings(gin_files, params, skip_unknown=True)
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(POLICIES[precision])
  try:
    keras.utils.set_random_seed(seed)
    model = builders.build_model()
    info = model_info.model_info(model)
    forward_gflops = info["gflops_per_clip"]
    inputs = random_inputs(model, batch, seed)
    step = make_step(model, mode, xla, model.output.shape[-1], batch, seed)
    times = time_calls(lambda: step(inputs), runs, warmup)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  median_s = statistics.median(times)
  gflops_per_clip = forward_gflops * (3 if mode == "train" else 1)
  clips_per_s = batch / median_s
  record = {
      "model": model.name,
      "gin_files": list(gin_files),
      "gin_params": params,
      "input_shapes": info["input_shapes"],
      "batch": batch,
      "mode": mode,
      "xla": xla,
      "precision": precision,
      "runs": runs,
      "warmup": warmup,
      "median_s": median_s,
      "min_s": min(times),
      "times_s": times,
      "clips_per_s": clips_per_s,
      "peak_rss_mb": peak_rss_mb,
      "forward_gflops_per_clip": forward_gflops,
      "gflops_per_clip": gflops_per_clip,
      "achieved_gflops_per_s": gflops_per_clip * clips_per_s,
      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
      "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
      "cpu_count": os.cpu_count(),
      # TF's CPU allocator: "bfc" (what the package's commands choose with Eigen's kernels)
      # or "default" (malloc), as TF reads TF_CPU_ALLOCATOR_USE_BFC.
      "tf_cpu_allocator": runtime.cpu_allocator(),
      "onednn_kernels": runtime.onednn_kernels(),
  }
  if ceiling:
    record["ceiling_size"] = ceiling_size
    record["ceiling_gflops_per_s"] = matmul_ceiling(precision, ceiling_size, runs)
    record["fraction_of_ceiling"] = (
        record["achieved_gflops_per_s"] / record["ceiling_gflops_per_s"])
  record["load_avg_1m"] = os.getloadavg()[0]
  return record


def apply_thread_flags():
  """Sets TF's intra- and inter-op thread counts from `--intra_op_threads` and
  `--inter_op_threads` (0 leaves TF's default), as the trainer's flags of the same names
  do. Call before TF runs any op (`official.runtime.set_thread_counts` raises otherwise)."""
  runtime.set_thread_counts(_INTRA.value, _INTER.value)


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  apply_thread_flags()
  record = benchmark(FLAGS.gin_file, FLAGS.gin_param, _FRAMES.value, _SIZE.value,
                     _BATCH.value, _MODE.value, _XLA.value, _PRECISION.value, _RUNS.value,
                     _WARMUP.value, _CEILING.value, _CEILING_SIZE.value, _SEED.value)
  print(json.dumps(record, sort_keys=True))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
