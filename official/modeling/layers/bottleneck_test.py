"""Tests for the interleaved (2+1)D bottleneck blocks."""

import keras
import numpy as np
import pytest

from official.modeling.layers import bottleneck


def _clip(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_projection_block_starts_as_its_shortcut():
  # bn_expand's gamma is 0, so at initialisation the block is relu(BN(1x1/2 conv(x))).
  block = bottleneck.BottleneckBlock(2, 4, num_frames=2, spatial_strides=2,
                                     use_projection=True)
  x = _clip((4, 5, 5, 3))
  out = block(x, training=False).numpy()
  kernel = block.conv_shortcut.kernel.numpy()[0, 0]
  shortcut = np.einsum("nhwc,cf->nhwf", x[:, ::2, ::2], kernel) / np.sqrt(1.0 + 1e-5)
  np.testing.assert_allclose(out, np.maximum(shortcut, 0.0), atol=1e-5)
  assert out.shape == (4, 3, 3, 8)


def test_identity_block_starts_as_identity():
  block = bottleneck.BottleneckBlock(2, 4, num_frames=2, temporal_first=True)
  x = np.abs(_clip((4, 3, 3, 8)))
  np.testing.assert_allclose(block(x, training=False).numpy(), x, atol=1e-6)


def test_identity_shortcut_needs_matching_width():
  block = bottleneck.BottleneckBlock(2, 4, num_frames=2)
  with pytest.raises(ValueError, match="identity shortcut needs 8 input channels"):
    block(np.zeros((2, 3, 3, 5), np.float32))


def test_block_group_interleaves_1x1_and_temporal_first_layers():
  group = bottleneck.BlockGroup(2, 4, num_blocks=3, num_frames=2, spatial_strides=2,
                                temporal_dilation=4)
  group.build((None, 6, 6, 5))
  first_layers = [b.conv_reduce.name for b in group.blocks]
  assert first_layers == ["conv_pointwise", "conv_temporal", "conv_pointwise"]
  assert [b.use_projection for b in group.blocks] == [True, False, False]
  assert [b.spatial_strides for b in group.blocks] == [2, 1, 1]
  assert group.blocks[1].conv_reduce.temporal_dilation == 4
  # Exact parameter count: shortcut 5*8 + BN, then per block the three convs and BNs.
  bn = lambda c: 4 * c  # gamma, beta, moving mean, moving variance
  block0 = 5 * 8 + bn(8) + 5 * 2 + bn(2) + 9 * 2 * 4 + bn(4) + 4 * 8 + bn(8)
  temporal = 3 * 8 * 2 + bn(2) + 9 * 2 * 4 + bn(4) + 4 * 8 + bn(8)
  pointwise = 8 * 2 + bn(2) + 9 * 2 * 4 + bn(4) + 4 * 8 + bn(8)
  assert group.count_params() == block0 + temporal + pointwise
  out = group(_clip((4, 6, 6, 5)), training=True)
  assert out.shape == (4, 3, 3, 8)


def test_block_group_trains_every_weight():
  group = bottleneck.BlockGroup(2, 4, num_blocks=2, num_frames=2, temporal_dilation=2)
  x = _clip((4, 3, 3, 5))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  group(x)
  # Give the zero-initialised gammas a value so every layer is on the gradient path.
  for block in group.blocks:
    block.bn_expand.gamma.assign(np.ones(8, np.float32))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(group(x, training=True) ** 2)
  grads = tape.gradient(loss, group.trainable_weights)
  for weight, grad in zip(group.trainable_weights, grads):
    assert grad is not None and np.any(grad.numpy() != 0), weight.path


def test_serialization_round_trip():
  group = bottleneck.BlockGroup(2, 4, num_blocks=2, num_frames=2, spatial_strides=2,
                                temporal_dilation=2, name="node_5_blocks")
  x = _clip((4, 5, 5, 3))
  group(x)
  for block in group.blocks:
    block.bn_expand.gamma.assign(np.full(8, 0.5, np.float32))
  expected = group(x, training=False).numpy()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(group))
  clone.set_weights(group.get_weights())
  assert clone.get_config() == group.get_config()
  np.testing.assert_array_equal(clone(x, training=False).numpy(), expected)


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_blocks"):
    bottleneck.BlockGroup(2, 4, num_blocks=0, num_frames=2)
  with pytest.raises(ValueError, match="spatial_strides"):
    bottleneck.BottleneckBlock(2, 4, num_frames=2, spatial_strides=0)
