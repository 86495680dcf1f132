"""Tests for the classification head."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import heads


def _features(seed, shape=(6, 4)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _set_classifier(head, width, seed=9):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(width, head.num_classes)).astype(np.float32)
  bias = rng.normal(size=(head.num_classes,)).astype(np.float32)
  head.classifier.set_weights([kernel, bias])
  return kernel, bias


def _head(head, nodes):
  """The backbone's `FinalFeatures` of `nodes` through `head`."""
  return head(heads.FinalFeatures(head.num_frames)(nodes))


def test_final_features_are_the_mean_of_the_final_nodes_per_frame():
  a, b = _features(0), _features(1)  # 2 clips x 3 frames, 4 channels
  features = heads.FinalFeatures(num_frames=3)([a, b]).numpy()
  np.testing.assert_allclose(features, ((a + b) / 2).reshape(2, 3, 4), rtol=1e-6)
  np.testing.assert_array_equal(heads.FinalFeatures(num_frames=3)([a]).numpy(),
                                a.reshape(2, 3, 4))


def test_mean_over_frames_and_final_nodes():
  a, b = _features(0), _features(1)  # 2 clips x 3 frames, 4 channels
  head = heads.ClassificationHead(5, num_frames=3)
  _head(head, [a, b])
  kernel, bias = _set_classifier(head, 4)
  pooled = ((a + b) / 2).reshape(2, 3, 4).mean(axis=1)
  np.testing.assert_allclose(_head(head, [a, b]).numpy(), pooled @ kernel + bias,
                             rtol=1e-5, atol=1e-6)


def test_max_pool_predictions():
  a = _features(2, (8, 4))  # 2 clips x 4 frames
  head = heads.ClassificationHead(3, num_frames=4, max_pool_predictions=True)
  _head(head, [a])
  kernel, bias = _set_classifier(head, 4)
  logits = (a @ kernel + bias).reshape(2, 4, 3)
  soft = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(_head(head, [a]).numpy(), (soft * logits).sum(axis=1), rtol=1e-5,
                             atol=1e-6)


def test_default_head_has_no_dropout_and_dropout_rate_is_honoured():
  # Regression: the TF2 port silently ignored the dropout setting.
  assert heads.ClassificationHead(3, num_frames=2).dropout is None
  head = heads.ClassificationHead(3, num_frames=2, dropout_rate=0.5)
  x = np.ones((10, 2, 64), np.float32)
  assert head.dropout.rate == 0.5
  np.testing.assert_array_equal(head(x, training=False).numpy(),
                                head(x, training=False).numpy())
  assert not np.allclose(head(x, training=True).numpy(), head(x, training=False).numpy())


def test_float32_logits_under_mixed_precision():
  head = heads.ClassificationHead(3, num_frames=2, dtype="float32")
  out = head(tf.cast(_features(3, (2, 2, 4)), tf.float16))
  assert out.dtype == tf.float32
  kernel, _ = head.classifier.get_weights()
  assert abs(kernel.std() - 0.01) < 0.005


def test_final_nodes_must_share_width():
  with pytest.raises(ValueError, match="same width"):
    heads.FinalFeatures(num_frames=2)([_features(0, (2, 4)), _features(1, (2, 5))])
  with pytest.raises(ValueError, match=r"\[N, T, C\]"):
    heads.ClassificationHead(3, num_frames=2)(_features(0, (2, 4)))
  with pytest.raises(ValueError, match="dropout_rate"):
    heads.ClassificationHead(3, num_frames=2, dropout_rate=1.0)


def test_serialization_round_trip():
  head = heads.ClassificationHead(3, num_frames=3, max_pool_predictions=True,
                                  dropout_rate=0.1, name="head")
  x = _features(4, (2, 3, 4))
  expected = head(x).numpy()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
  if not clone.built:
    clone.build(x.shape)
  clone.set_weights(head.get_weights())
  assert clone.get_config() == head.get_config()
  np.testing.assert_array_equal(clone(x).numpy(), expected)
