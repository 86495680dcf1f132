"""Video ids through the distributed evaluation step: long ids never collide."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.training import losses
from official.training import optimization
from official.training import strategies
from official.training import trainer as trainer_lib

# Two ids that agree on their first 150 characters.
LONG_IDS = ["x" * 150 + "_clip_a", "x" * 150 + "_clip_b"]


def _trainer(model_dir):
  strategy = strategies.build_strategy("one_device")
  with strategy.scope():
    rgb = keras.Input((1, 2, 2, 3), name="rgb")
    model = keras.Model({"rgb": rgb}, keras.layers.Dense(2)(keras.layers.Flatten()(rgb)))
    optimizer = optimization.build_optimizer(0.1, name="sgd", momentum=0.0)
  return trainer_lib.Trainer(strategy, model, optimizer, losses.build_loss(),
                             str(model_dir), global_batch_size=2, train_steps=1)


def test_long_video_ids_are_kept_whole_through_evaluation(tmp_path):
  x = np.stack([np.full((1, 2, 2, 3), v, np.float32) for v in (0.5, -0.5, 0.25, -0.25)])
  labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
  ids = [LONG_IDS[0], LONG_IDS[1], LONG_IDS[0], LONG_IDS[1]]
  dataset = tf.data.Dataset.from_tensor_slices(
      ({"rgb": x, "video_id": tf.constant(ids)}, labels)).batch(2)
  scores = _trainer(tmp_path).evaluate(dataset, max_video_id_length=200)
  assert scores.video_ids == LONG_IDS
  assert scores.views_per_video == 2


def test_an_id_longer_than_the_limit_is_an_error_not_a_collision():
  with pytest.raises(tf.errors.InvalidArgumentError, match="longer than 128 characters"):
    trainer_lib.encode_video_ids(tf.constant(LONG_IDS))
  codes = trainer_lib.encode_video_ids(tf.constant(LONG_IDS), max_length=157)
  assert codes.shape == (2, 157)
  assert trainer_lib.decode_video_ids(codes.numpy()) == LONG_IDS
