"""Same-machine speed baseline: the TF Model Garden port of AssembleNet++-50 (full_asnp50).

Runs in its own virtualenv (TF 2.19 + tf_keras + tf-models-official, made by `setup.sh`),
never in this package's. One JSON line with the fields `benchmarks/model_speed.py` shares
(median_s, min_s, times_s, peak_rss_mb), so the two can be compared in one table:

  WORK=/tmp/port_baseline MODELS=/path/to/tensorflow/models benchmarks/port_baseline/setup.sh
  /tmp/port_baseline/venv/bin/python benchmarks/port_baseline/bench_port.py \
      --src=/tmp/port_baseline/src --mode=infer --runs=7 --warmup=2

Builds the model exactly as the port's own test does for the object-input case
(official/projects/assemblenet/modeling/assemblenet_plus_test.py):
  asnp.assemblenet_plus(assemblenet_depth=50, num_classes=..., num_frames=...,
      model_structure=full_asnp50_structure,
      model_edge_weights=full_asnp_structure_weights,
      input_specs=(InputSpec((B*T,H,W,3)), InputSpec((B*T,H,W,151))),
      use_object_input=True, attention_mode="peer")
and times an inference step or a training step (forward + backward +
SGD(momentum=0.9) with sigmoid cross-entropy on random multi-hot labels).


"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

# The port mixes `tf.keras` (assemblenet.py, rep_flow_2d_layer.py) and
# `tf_keras` (assemblenet_plus.py); both must be Keras 2 (tf_keras).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU baseline


NUM_OBJECT_CLASSES = 151  # ADE-20k, as in the port's test.


def parse_args():
  p = argparse.ArgumentParser()
  p.add_argument("--src", required=True,
                 help="setup.sh's src/ folder: the wheel's `official` plus the port's files")
  p.add_argument("--mode", choices=["infer", "train"], default="infer")
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--num_classes", type=int, default=157)
  p.add_argument("--lr", type=float, default=0.01)
  p.add_argument("--threads", type=int, default=0,
                 help="intra/inter op threads (0 = TF default)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def main():
  args = parse_args()
  sys.path.insert(0, args.src)

  import numpy as np
  import tensorflow as tf
  import tf_keras

  if args.threads > 0:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  tf.random.set_seed(args.seed)
  rng = np.random.default_rng(args.seed)

  from official.projects.assemblenet.configs import assemblenet as asn_config
  from official.projects.assemblenet.modeling import assemblenet_plus as asnp

  b, t, s = args.batch, args.frames, args.size
  vid_shape = (b * t, s, s, 3)
  obj_shape = (b * t, s, s, NUM_OBJECT_CLASSES)
  input_specs = (tf_keras.layers.InputSpec(shape=vid_shape),
                 tf_keras.layers.InputSpec(shape=obj_shape))

  t0 = time.perf_counter()
  model = asnp.assemblenet_plus(
      assemblenet_depth=50,
      num_classes=args.num_classes,
      num_frames=t,
      model_structure=asn_config.full_asnp50_structure,
      model_edge_weights=asn_config.full_asnp_structure_weights,
      input_specs=input_specs,
      use_object_input=True,
      attention_mode="peer",
  )
  build_s = time.perf_counter() - t0

  # Inputs: RGB in [-1, 1]; object input = per-pixel one-hot class maps
  # (151 channels), which the port's object stem max-pools 4x4.
  rgb = tf.constant(rng.uniform(-1.0, 1.0, size=vid_shape).astype(np.float32))
  cls = rng.integers(0, NUM_OBJECT_CLASSES, size=obj_shape[:-1])
  obj = tf.constant(np.eye(NUM_OBJECT_CLASSES, dtype=np.float32)[cls])
  inputs = {"image": rgb, "object": obj}
  labels = tf.constant(
      (rng.uniform(size=(b, args.num_classes)) < 0.05).astype(np.float32))

  if args.mode == "infer":

    @tf.function
    def step(x):
      return model(x, training=False)
  else:
    opt = tf_keras.optimizers.SGD(learning_rate=args.lr, momentum=0.9)

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                    logits=logits))
      grads = tape.gradient(loss, model.trainable_variables)
      opt.apply_gradients(zip(grads, model.trainable_variables))
      return loss

  t0 = time.perf_counter()
  out = step(inputs)
  _ = out.numpy()
  first_s = time.perf_counter() - t0  # includes tracing
  for _ in range(max(0, args.warmup - 1)):
    _ = step(inputs).numpy()

  times = []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    r = step(inputs)
    _ = r.numpy()
    times.append(time.perf_counter() - t0)

  n_params = int(model.count_params())
  n_trainable = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
  res = {
      "impl": "tf-model-garden-port",
      "mode": args.mode,
      "median_s": statistics.median(times),
      "min_s": min(times),
      "runs": args.runs,
      "warmup": args.warmup,
      "times_s": times,
      "first_call_s": first_s,
      "build_s": build_s,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "params": n_params,
      "trainable_params": n_trainable,
      "batch": b,
      "frames": t,
      "size": s,
      "num_classes": args.num_classes,
      "tf_version": tf.__version__,
      "tf_keras_version": tf_keras.__version__,
      "threads": args.threads,
  }
  print(json.dumps(res))


if __name__ == "__main__":
  main()
