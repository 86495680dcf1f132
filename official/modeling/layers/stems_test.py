"""Tests for the RGB, flow and object stems."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import stems


def _clip(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_rgb_stem_layers_and_shape():
  stem = stems.RGBStem(4, num_frames=3, temporal_dilation=2)
  out = stem(_clip((2, 3, 16, 16, 3)), training=False)
  assert out.shape == (6, 4, 4, 4)
  assert stem.conv_spatial.kernel.shape == (7, 7, 3, 4)
  assert stem.conv_spatial.strides == (2, 2)
  assert stem.conv_temporal.kernel.shape == (5, 1, 4, 4)
  assert stem.conv_temporal.temporal_dilation == 2
  assert stem.count_params() == 7 * 7 * 3 * 4 + 4 * 4 + 5 * 4 * 4 + 4 * 4


def test_rgb_stem_matches_its_parts():
  # 7x7/2 conv with explicit (3, 3) padding, BN, ReLU, temporal conv, BN, ReLU, 3x3/2 pool.
  stem = stems.RGBStem(2, num_frames=2)
  clip = _clip((1, 2, 8, 8, 3))
  out = stem(clip, training=False).numpy()
  frames = np.pad(clip.reshape(2, 8, 8, 3), [[0, 0], [3, 3], [3, 3], [0, 0]])
  kernel = stem.conv_spatial.kernel.numpy()
  x = np.zeros((2, 4, 4, 2), np.float32)
  for i in range(4):
    for j in range(4):
      x[:, i, j] = np.einsum("nhwc,hwcf->nf", frames[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7],
                             kernel)
  bn = 1.0 / np.sqrt(1.0 + 1e-5)
  x = np.maximum(x * bn, 0.0)
  t = stem.conv_temporal.kernel.numpy()[:, 0]  # [5, C, F]; centre tap is index 2
  y = np.stack([x[0] @ t[2] + x[1] @ t[3], x[0] @ t[1] + x[1] @ t[2]])
  y = np.maximum(y * bn, 0.0)
  # 3x3/2 SAME max-pool of 4x4 (TF pads 0 before, 1 after): windows start at 0 and 2.
  pooled = np.zeros((2, 2, 2, 2), np.float32)
  for i in range(2):
    for j in range(2):
      pooled[:, i, j] = y[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
  np.testing.assert_allclose(out, pooled, atol=1e-4)


def test_flow_stem_shape_and_weights():
  stem = stems.FlowStem(5, num_frames=2)
  out = stem(_clip((1, 2, 16, 16, 2)), training=False)
  assert out.shape == (2, 4, 4, 5)
  assert [w.shape for w in stem.trainable_weights] == [(7, 7, 2, 5), (5,), (5,)]


def _max_pool_4x4_same(maps):
  """NumPy reference: TF's 4x4/4 SAME max-pool of `[N, H, W, C]` (pads after the
  centre: floor(pad / 2) before, the rest after)."""
  n, height, width, channels = maps.shape
  out_h, out_w = -(-height // 4), -(-width // 4)
  pad_h, pad_w = 4 * out_h - height, 4 * out_w - width
  padded = np.full((n, 4 * out_h, 4 * out_w, channels), -np.inf, np.float32)
  padded[:, pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width] = maps
  return padded.reshape(n, out_h, 4, out_w, 4, channels).max(axis=(2, 4))


def test_object_stem_is_a_4x4_max_pool_of_the_one_hot_map():
  stem = stems.ObjectStem(num_frames=2, num_classes=3)
  ids = np.zeros((1, 2, 8, 8), np.uint8)
  ids[0, 0, 5, 6] = 1   # lands in pooled cell (1, 1), frame 0
  ids[0, 1, 0, 3] = 2   # cell (0, 0), frame 1
  out = stem(ids).numpy()
  expected = np.zeros((2, 2, 2, 3), np.float32)
  expected[..., 0] = 1.0  # every window holds background pixels
  expected[0, 1, 1, 1] = 1.0
  expected[1, 0, 0, 2] = 1.0
  np.testing.assert_array_equal(out, expected)
  assert not stem.weights


@pytest.mark.parametrize("stem", [
    stems.RGBStem(2, num_frames=3), stems.FlowStem(2, num_frames=3),
])
def test_wrong_frame_count_is_rejected(stem):
  with pytest.raises(ValueError, match="num_frames=3, but the clip has 4 frames"):
    stem(np.zeros((1, 4, 8, 8, 3), np.float32))


def test_object_stem_rejects_a_clip_with_the_wrong_frame_count():
  with pytest.raises(ValueError, match="num_frames=3, but the clip has 4 frames"):
    stems.ObjectStem(num_frames=3)(np.zeros((1, 4, 8, 8), np.uint8))


@pytest.mark.parametrize("stem", [
    stems.RGBStem(3, num_frames=2, temporal_dilation=2, name="node_0_rgb_stem"),
    stems.FlowStem(3, num_frames=2, name="node_2_flow_stem"),
])
def test_serialization_round_trip(stem):
  clip = _clip((1, 2, 8, 8, 3))
  expected = stem(clip, training=False).numpy()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(stem))
  clone.set_weights(stem.get_weights())
  assert clone.get_config() == stem.get_config()
  np.testing.assert_array_equal(clone(clip, training=False).numpy(), expected)


@pytest.mark.parametrize("height,width", [(16, 16), (18, 22), (5, 7)])
def test_object_stem_equals_a_numpy_max_pool_of_the_one_hot_map(height, width):
  rng = np.random.default_rng(4)
  # Few classes, so windows hold repeated and absent ids alike.
  # Ids 6 and 7 are outside [0, 6): no class.
  ids = rng.integers(0, 8, size=(2, 3, height, width)).astype(np.uint8)
  from_ids = stems.ObjectStem(num_frames=3, num_classes=6)(ids).numpy()
  # [N, T, H, W] -> [N*T, H, W, 6] one-hot (ids 6 and 7: all zero)
  one_hot = np.eye(8, dtype=np.float32)[ids.reshape(6, height, width)][..., :6]
  expected = _max_pool_4x4_same(one_hot)
  assert from_ids.dtype == np.float32
  assert from_ids.shape == expected.shape == (6, -(-height // 4), -(-width // 4), 6)
  np.testing.assert_array_equal(from_ids, expected)


def test_object_stem_on_ids_exact_value_and_config():
  ids = np.zeros((1, 1, 8, 4), np.int32)
  ids[0, 0, 5, 2] = 2  # lower window gets classes 0 and 2; the upper one only class 0
  ids[0, 0, 1, 1] = -1  # no class
  stem = stems.ObjectStem(num_frames=1, num_classes=3, name="objects")
  expected = [[[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]]]
  np.testing.assert_array_equal(stem(ids).numpy()[:, :, 0], expected)
  compiled = tf.function(lambda x: stem(x), jit_compile=True)  # pylint: disable=unnecessary-lambda
  np.testing.assert_array_equal(compiled(ids).numpy()[:, :, 0], expected)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(stem))
  assert clone.get_config() == stem.get_config()
  with pytest.raises(ValueError, match="num_classes"):
    stems.ObjectStem(num_frames=1, num_classes=0)
  with pytest.raises(ValueError, match="integer class ids"):
    stem(np.zeros((1, 1, 8, 4), np.float32))
  with pytest.raises(ValueError, match="integer class ids"):
    stem(np.zeros((1, 1, 8, 4, 3), np.float32))


def test_object_stem_graph_has_no_bincount_which_xla_runs_100x_slower():
  # Regression: a per-window binary bincount made every XLA-compiled training step of an
  # object model about 100x slower (10 s instead of 0.1 s per demo step).
  stem = stems.ObjectStem(num_frames=2, num_classes=5)
  graph = tf.function(stem).get_concrete_function(
      tf.TensorSpec([1, 2, 8, 8], tf.uint8)).graph
  ops = {op.type for op in graph.get_operations()}
  assert not any("Bincount" in op for op in ops), sorted(ops)
  assert "OneHot" in ops
