"""Test-only checks that need logical CPU devices set up before TensorFlow initialises, run
in a fresh process by tests/test_train_distributed.py. Prints one JSON line.

  python tests/distributed_checks.py loss_scale REPLICAS OVERFLOW_REPLICA
  TF_CONFIG=... python tests/distributed_checks.py loss_scale multi_worker OVERFLOW_WORKER
  python tests/distributed_checks.py empty_replica_eval
  python tests/distributed_checks.py train --mode=... (official.train on 2 logical CPUs)
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

if "TF_CONFIG" not in os.environ:
  _CPU = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(_CPU,
                                             [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from official.training import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from official.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def _strategy(replicas):
  if replicas == "multi_worker":  # One CPU replica per worker process.
    return tf.distribute.MultiWorkerMirroredStrategy()
  devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
  return tf.distribute.MirroredStrategy(devices)


def loss_scale(replicas, overflow_replica):
  """One mixed_float16 step whose float16 gradients overflow on one replica's half of the
  batch, then two normal steps: the loss scaling must skip the bad step everywhere."""
  strategy = _strategy(replicas)
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    with strategy.scope():
      rgb = keras.Input((4, 8, 8, 3), name="rgb")
      hidden = keras.layers.Dense(16, name="hidden")(keras.layers.Flatten()(rgb))
      model = keras.Model({"rgb": rgb},
                          keras.layers.Dense(12, dtype="float32", name="logits")(hidden))
      optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  from official.training import strategies  # pylint: disable=g-import-not-at-top
  trainer = trainer_lib.Trainer(strategy, model, optimizer, losses.build_loss(),
                                tempfile.mkdtemp(), global_batch_size=4, train_steps=3,
                                checkpoint_interval=100, log_interval=1,
                                is_chief=strategies.is_chief(strategy),
                                worker_id=strategies.task_id(strategy))
  clips = np.random.RandomState(0).uniform(-1, 1, (3, 4, 4, 8, 8, 3)).astype(np.float32)
  # Step 0: examples 2r and 2r + 1 (replica r's half when there are two) overflow float16.
  clips[0, 2 * overflow_replica:2 * overflow_replica + 2] *= 3e3
  labels = np.zeros((4, 12), np.float32)
  labels[:, 0] = 1
  dataset = tf.data.Dataset.from_tensor_slices(({"rgb": clips}, np.stack([labels] * 3)))
  initial = {v.path: v.numpy() for v in model.trainable_variables}
  try:
    trainer.train(dataset.repeat())
    error = None
  except Exception as e:  # pylint: disable=broad-except
    error = f"{type(e).__name__}: {e}"[:300]
  weights = [v.numpy() for v in model.trainable_variables]
  return {"error": error, "loss_scale": float(optimizer.dynamic_scale.numpy()),
          "finite": bool(all(np.isfinite(w).all() for w in weights)),
          "moved": bool(any(not np.array_equal(v.numpy(), initial[v.path])
                            for v in model.trainable_variables))}


def empty_replica_eval():
  """Evaluation of 5 views in batches of 4 on 2 replicas: the last batch gives one replica
  no view. Scores against one replica's."""
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  gin_flags.parse_gin([os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")], [])
  rng = np.random.default_rng(0)
  rgb = rng.uniform(-1, 1, (5, 4, 32, 32, 3)).astype(np.float32)
  labels = (rng.random((5, 12)) < 0.3).astype(np.float32)
  ids = np.array([b"v0", b"v1", b"v2", b"v3", b"v4"])
  dataset = tf.data.Dataset.from_tensor_slices(({"rgb": rgb, "video_id": ids}, labels))
  result, weights = {}, None
  for replicas in (1, 2):
    strategy = _strategy(replicas)
    with strategy.scope():
      model = builders.build_model()
      optimizer = keras.optimizers.SGD(0.01)
    if weights is None:
      weights = model.get_weights()
    model.set_weights(weights)
    trainer = trainer_lib.Trainer(strategy, model, optimizer, losses.build_loss(),
                                  tempfile.mkdtemp(), global_batch_size=4, train_steps=1)
    try:
      scores = trainer.evaluate(dataset.batch(4))
      result[replicas] = {"ids": [i.decode() if isinstance(i, bytes) else str(i)
                                  for i in scores.video_ids],
                          "scores": np.asarray(scores.scores).tolist()}
    except Exception as e:  # pylint: disable=broad-except
      result[replicas] = {"error": f"{type(e).__name__}: {e}"[:300]}
  return result


def shard_resume(data_dir):
  """Under a two-worker cluster: the clips (bytes) this worker trains on at steps 6-11 of
  `build_dataset`'s stream, uninterrupted and resumed at step 6, as the trainer shares
  the global batches of 4 out."""
  from official.data import input_pipeline  # pylint: disable=g-import-not-at-top
  strategy = _strategy("multi_worker")
  steps = {}
  for start in (0, 6):
    dataset = input_pipeline.build_dataset(
        "charades/synthetic", "train", data_dir, batch_size=4, num_frames=2, image_size=16,
        seed=3, shuffle_buffer=4, deterministic=True, start_batch=start)
    iterator = iter(trainer_lib.distribute(strategy, dataset))
    clips = []
    for _ in range(12 - start):
      features, _ = next(iterator)
      clips.append([clip.tobytes().hex()[:64] for part in
                    strategy.experimental_local_results(features["rgb"])
                    for clip in part.numpy()])
    steps[start] = clips[6 - start:]
  return steps


if __name__ == "__main__":
  if sys.argv[1] == "train":
    from absl import app  # pylint: disable=g-import-not-at-top
    from official import train  # pylint: disable=g-import-not-at-top
    app.run(lambda argv: sys.exit(train.main(argv)), argv=[sys.argv[0]] + sys.argv[2:])
  if sys.argv[1] == "shard_resume":
    print("RESULT " + json.dumps(shard_resume(sys.argv[2])))
    sys.exit(0)
  if sys.argv[1] == "loss_scale":
    replicas = sys.argv[2] if sys.argv[2] == "multi_worker" else int(sys.argv[2])
    output = loss_scale(replicas, int(sys.argv[3]))
  else:
    output = empty_replica_eval()
  print("RESULT " + json.dumps(output))
