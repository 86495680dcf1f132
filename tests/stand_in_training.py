"""Test-only stand-ins (a tiny Conv3D + BN classifier, an in-memory clip dataset) and a
command line that trains them under a chosen strategy, for tests that need fresh processes
(logical devices, worker clusters, kill -9).

  python tests/stand_in_training.py --strategy=mirrored --devices=2 --steps=1 \
      --model_dir=D --out=W.npz [--delay=0.05] [--ema]
"""

import argparse
import os
import sys
import time

import numpy as np

NUM_FRAMES, SIZE, NUM_CLASSES = 2, 8, 3


def stand_in_model():
  import keras  # pylint: disable=g-import-not-at-top
  rgb = keras.Input((NUM_FRAMES, SIZE, SIZE, 3), name="rgb")
  x = keras.layers.Conv3D(4, 3, padding="same", use_bias=False, name="conv")(rgb)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.GlobalAveragePooling3D()(x)
  return keras.Model({"rgb": rgb}, keras.layers.Dense(NUM_CLASSES, name="logits")(x))


def stand_in_clips(num_clips=32, seed=0):
  rng = np.random.default_rng(seed)
  rgb = rng.uniform(-1, 1, (num_clips, NUM_FRAMES, SIZE, SIZE, 3)).astype(np.float32)
  labels = (rng.random((num_clips, NUM_CLASSES)) < 0.4).astype(np.float32)
  return rgb, labels


def stand_in_train_dataset(batch_size, delay=0.0):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rgb, labels = stand_in_clips()
  ds = tf.data.Dataset.from_tensor_slices(({"rgb": rgb}, labels)).repeat()
  ds = ds.batch(batch_size, drop_remainder=True)
  if delay:
    def slow(features, labels):
      tf.py_function(lambda: time.sleep(delay), [], [])
      return features, labels
    ds = ds.map(slow)
  return ds


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--strategy", default="one_device")
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--checkpoint_interval", type=int, default=1000)
  parser.add_argument("--delay", type=float, default=0.0)
  parser.add_argument("--ema", action="store_true")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if args.devices > 1:  # Must happen before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)
  from official.training import losses  # pylint: disable=g-import-not-at-top
  from official.training import optimization  # pylint: disable=g-import-not-at-top
  from official.training import reproducibility  # pylint: disable=g-import-not-at-top
  from official.training import strategies  # pylint: disable=g-import-not-at-top
  from official.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  reproducibility.set_seed_and_determinism(0, deterministic=True)
  strategy = strategies.build_strategy(args.strategy)
  with strategy.scope():
    model = stand_in_model()
    if strategy.num_replicas_in_sync > 1:
      trainer_lib.use_sync_batch_norm(model)
    schedule = optimization.build_learning_rate(args.steps, base_learning_rate=0.1,
                                                schedule="cosine", warmup_steps=0)
    optimizer = optimization.build_optimizer(schedule, name="sgd", momentum=0.9,
                                             weight_decay=1e-3)
  trainer = trainer_lib.Trainer(
      strategy, model, optimizer, losses.build_loss(), args.model_dir,
      global_batch_size=args.batch, train_steps=args.steps,
      ema_decay=0.9 if args.ema else None, checkpoint_interval=args.checkpoint_interval,
      log_interval=10, is_chief=strategies.is_chief(strategy),
      worker_id=strategies.task_id(strategy))
  trainer.train(stand_in_train_dataset(args.batch, args.delay))
  weights = {w.path: np.asarray(w.numpy()) for w in model.weights}
  if trainer.ema is not None:
    weights.update({f"ema/{i}": s.numpy() for i, s in enumerate(trainer.ema.shadow)})
  if strategies.is_chief(strategy):
    np.savez(args.out, **weights)
  print(f"replicas={strategy.num_replicas_in_sync} step={int(trainer.step.numpy())}")
  return 0


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main())
