"""Tests for the fused training batch norm: against Keras' layer and a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import batch_norm

SHAPE = (4, 3, 5, 6)  # [N*T, H, W, C]: n = 60 values per channel


def _pair(rng, **kwargs):
  """A `FusedBatchNorm` and a Keras `BatchNormalization` with the same random weights."""
  fused = batch_norm.FusedBatchNorm(momentum=0.9, epsilon=1e-5, **kwargs)
  plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
  channels = SHAPE[-1]
  weights = [rng.uniform(0.5, 2.0, channels), rng.normal(size=channels),
             rng.normal(size=channels), rng.uniform(0.1, 3.0, channels)]
  for layer in (fused, plain):
    layer.build(SHAPE)
    layer.set_weights([w.astype(np.float32) for w in weights])
  return fused, plain


def _inputs(rng):
  return (3.0 * rng.normal(size=SHAPE) + 1.5).astype(np.float32)


def test_training_output_equals_keras_batch_norm():
  rng = np.random.default_rng(0)
  fused, plain = _pair(rng)
  x = _inputs(rng)
  np.testing.assert_allclose(fused(x, training=True).numpy(),
                             plain(x, training=True).numpy(), rtol=1e-5, atol=1e-5)


def test_training_gradients_equal_keras_batch_norm():
  rng = np.random.default_rng(1)
  fused, plain = _pair(rng)
  x = tf.constant(_inputs(rng))
  upstream = tf.constant(rng.normal(size=SHAPE).astype(np.float32))
  grads = []
  for layer in (fused, plain):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=True) * upstream)
    grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
  for got, expected in zip(*grads):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_moving_statistics_use_unbiased_variance():
  rng = np.random.default_rng(2)
  fused, _ = _pair(rng)
  moving_mean, moving_variance = fused.moving_mean.numpy(), fused.moving_variance.numpy()
  x = _inputs(rng)
  fused(x, training=True)
  values = x.reshape(-1, SHAPE[-1]).astype(np.float64)
  n = values.shape[0]
  batch_variance = values.var(axis=0) * n / (n - 1)  # unbiased, as TF1's fused BN
  np.testing.assert_allclose(fused.moving_mean.numpy(),
                             0.9 * moving_mean + 0.1 * values.mean(axis=0), rtol=1e-5)
  np.testing.assert_allclose(fused.moving_variance.numpy(),
                             0.9 * moving_variance + 0.1 * batch_variance, rtol=1e-5)


def test_moving_statistics_are_updated_by_the_fused_kernel():
  # The kernel returns the moving averages itself (`exponential_avg_factor`): a training
  # call traces no element-wise op for them, only the two assignments.
  rng = np.random.default_rng(4)
  fused, _ = _pair(rng)
  graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
      tf.TensorSpec(SHAPE, tf.float32)).graph
  types = [op.type for op in graph.get_operations()]
  assert types.count("FusedBatchNormV3") == 1, types
  assert types.count("AssignVariableOp") == 2, types
  assert not {"Mul", "AddV2", "Sub"} & set(types), types


def test_inference_and_frozen_layer_equal_keras_batch_norm():
  rng = np.random.default_rng(3)
  fused, plain = _pair(rng)
  x = _inputs(rng)
  np.testing.assert_array_equal(fused(x, training=False).numpy(),
                                plain(x, training=False).numpy())
  fused.trainable = plain.trainable = False
  moving_variance = fused.moving_variance.numpy()
  np.testing.assert_array_equal(fused(x, training=True).numpy(),
                                plain(x, training=True).numpy())
  np.testing.assert_array_equal(fused.moving_variance.numpy(), moving_variance)


def test_synchronized_falls_back_to_keras_batch_norm():
  rng = np.random.default_rng(4)
  fused, plain = _pair(rng, synchronized=True)
  x = _inputs(rng)
  np.testing.assert_array_equal(fused(x, training=True).numpy(),
                                plain(x, training=True).numpy())
  np.testing.assert_array_equal(fused.moving_variance.numpy(),
                                plain.moving_variance.numpy())


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
  rng = np.random.default_rng(5)
  fused = batch_norm.FusedBatchNorm(epsilon=1e-5, dtype=policy)
  plain = keras.layers.BatchNormalization(epsilon=1e-5, dtype=policy)
  x = _inputs(rng)
  for layer in (fused, plain):
    layer.build(SHAPE)
  out = fused(tf.cast(x, fused.compute_dtype), training=True)
  expected = plain(tf.cast(x, plain.compute_dtype), training=True)
  assert out.dtype == fused.compute_dtype
  assert fused.moving_variance.dtype == "float32"
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(),
                             tf.cast(expected, tf.float32).numpy(), atol=0.05)


def test_weights_and_config_are_keras_batch_norm():
  fused = batch_norm.FusedBatchNorm(momentum=0.99, epsilon=1e-5, gamma_initializer="zeros",
                                    name="bn_expand")
  fused.build(SHAPE)
  assert [w.path for w in fused.weights] == [
      "bn_expand/gamma", "bn_expand/beta", "bn_expand/moving_mean",
      "bn_expand/moving_variance"]
  assert fused.count_params() == 4 * SHAPE[-1]
  assert isinstance(fused, keras.layers.BatchNormalization)  # the trainer's sync switch


def test_serialization_round_trip(tmp_path):
  rng = np.random.default_rng(6)
  fused, _ = _pair(rng, name="bn")
  x = _inputs(rng)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
  clone.set_weights(fused.get_weights())
  assert type(clone) is batch_norm.FusedBatchNorm
  assert clone.get_config() == fused.get_config()
  np.testing.assert_array_equal(clone(x, training=False).numpy(),
                                fused(x, training=False).numpy())
  model = keras.Sequential([keras.Input(SHAPE[1:]), fused])
  model.save(tmp_path / "bn.keras")
  loaded = keras.saving.load_model(tmp_path / "bn.keras")
  assert type(loaded.layers[0]) is batch_norm.FusedBatchNorm
  np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                model(x, training=False).numpy())


def test_uses_the_fused_kernel_in_training():
  fused = batch_norm.FusedBatchNorm()
  fused.build(SHAPE)
  graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
      tf.TensorSpec(SHAPE, tf.float32)).graph
  assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_training_with_a_plain_non_float32_dtype(dtype):
  # Layer dtype (variables included) other than float32 without a mixed policy: the fused
  # kernel runs in float32 where it must, and the moving statistics keep their dtype.
  rng = np.random.default_rng(6)
  x = _inputs(rng)
  fused = batch_norm.FusedBatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)
  plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)
  outputs = [layer(tf.cast(x, dtype), training=True) for layer in (fused, plain)]
  assert outputs[0].dtype == outputs[1].dtype == tf.as_dtype(dtype)
  tolerance = {"float64": 1e-5, "float16": 5e-3, "bfloat16": 5e-2}[dtype]
  np.testing.assert_allclose(tf.cast(outputs[0], tf.float32).numpy(),
                             tf.cast(outputs[1], tf.float32).numpy(), rtol=tolerance,
                             atol=tolerance)
  assert fused.moving_mean.dtype == plain.moving_mean.dtype
  values = tf.cast(tf.cast(x, dtype), tf.float64).numpy().reshape(-1, SHAPE[-1])
  np.testing.assert_allclose(tf.cast(fused.moving_mean, tf.float64).numpy(),
                             0.1 * values.mean(axis=0), rtol=tolerance, atol=tolerance)
