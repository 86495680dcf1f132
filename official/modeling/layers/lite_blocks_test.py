"""Tests for the AssembleNet++lite layers against plain conv3d compositions.

The reference convolutions are `tf.nn.conv3d` with the authors' hand-dilated kernels (zeros
inserted between temporal taps) on inputs padded by hand as TF's SAME does, followed by
batch norm written out from the layer's own statistics: nothing of Keras' Conv3D, its
dilation or its padding is reused.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import lite_blocks


def _same_pads(size, kernel, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return [total // 2, total - total // 2]


def _reference_conv(x, kernel, spatial_strides=1, temporal_dilation=1):
  """SAME conv3d of clips `[N, T, H, W, C]`, dilated in time by inserting zero taps."""
  kernel = np.asarray(kernel)
  if temporal_dilation > 1 and kernel.shape[0] > 1:
    taps = []
    for j, tap in enumerate(kernel):
      taps.append(tap)
      if j < kernel.shape[0] - 1:
        taps.extend([np.zeros_like(tap)] * (temporal_dilation - 1))
    kernel = np.stack(taps)
  kt, kh, kw = kernel.shape[:3]
  _, t, h, w, _ = x.shape
  pads = [[0, 0], _same_pads(t, kt, 1), _same_pads(h, kh, spatial_strides),
          _same_pads(w, kw, spatial_strides), [0, 0]]
  return tf.nn.conv3d(tf.pad(x, pads), kernel.astype(np.float32),
                      strides=[1, 1, spatial_strides, spatial_strides, 1],
                      padding="VALID").numpy()


def _reference_bn(y, bn, training):
  if training:
    mean, var = y.mean(axis=(0, 1, 2, 3)), y.var(axis=(0, 1, 2, 3))
  else:
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
  return (y - mean) / np.sqrt(var + 1e-5) * bn.gamma.numpy() + bn.beta.numpy()


def _randomize_batch_norms(layer, seed=0):
  """Random gamma (also the zero-initialised ones), beta and moving statistics."""
  rng = np.random.default_rng(seed)
  for weight in layer.weights:
    if "gamma" in weight.path or "moving_variance" in weight.path:
      weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    elif "beta" in weight.path or "moving_mean" in weight.path:
      weight.assign(rng.uniform(-0.3, 0.3, weight.shape).astype(np.float32))


def _reference_block(block, x, training):
  relu = lambda v: np.maximum(v, 0.0)
  conv_bn = lambda conv, bn, v, s=1, d=1: _reference_bn(
      _reference_conv(v, conv.kernel.numpy(), s, d), bn, training)
  s, d = block.spatial_strides, block.temporal_dilation
  shortcut = x
  if block.use_projection:
    shortcut = conv_bn(block.conv_shortcut, block.bn_shortcut, x, s)
  y = relu(conv_bn(block.conv_expand, block.bn_expand, x))
  if s > 1:
    y = relu(conv_bn(block.conv_spatial, block.bn_spatial, y, s))
    y = relu(conv_bn(block.conv_temporal, block.bn_temporal, y, 1, d))
  else:
    y = relu(conv_bn(block.conv_3d, block.bn_3d, y, 1, d))
  y = conv_bn(block.conv_project, block.bn_project, y)
  return relu(y + shortcut)


def _clip(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("strides,dilation,projection,size", [
    (2, 2, True, 9),    # (2+1)D middle, odd size (SAME pads only after for even sizes)
    (2, 1, True, 8),
    (1, 3, True, 8),    # 3x3x3 middle dilated in time
    (1, 1, False, 8),   # identity shortcut
])
@pytest.mark.parametrize("training", [False, True])
def test_inverted_bottleneck_equals_conv3d_composition(strides, dilation, projection, size,
                                                       training):
  channels = 6 if projection else 5
  block = lite_blocks.InvertedBottleneckBlock((7, 4, 5), spatial_strides=strides,
                                              temporal_dilation=dilation,
                                              use_projection=projection)
  x = _clip((2, 5, size, size, channels))
  block.build(x.shape)
  _randomize_batch_norms(block)
  got = block(x, training=training).numpy()
  expected = _reference_block(block, x, training)
  out = -(-size // strides)
  assert got.shape == (2, 5, out, out, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_inverted_bottleneck_layers_and_widths():
  strided = lite_blocks.InvertedBottleneckBlock((27, 27, 12), spatial_strides=2,
                                                temporal_dilation=4, use_projection=True)
  strided.build((None, 8, 16, 16, 24))
  kernels = {w.path.split("/")[-2]: tuple(w.shape) for w in strided.weights
             if w.path.endswith("kernel")}
  assert kernels == {
      "conv_shortcut": (1, 1, 1, 24, 12), "conv_expand": (1, 1, 1, 24, 27),
      "conv_spatial": (1, 3, 3, 27, 27), "conv_temporal": (3, 1, 1, 27, 27),
      "conv_project": (1, 1, 1, 27, 12)}
  plain = lite_blocks.InvertedBottleneckBlock((27, 27, 12))
  plain.build((None, 8, 8, 8, 12))
  assert {w.path.split("/")[-2] for w in plain.weights if w.path.endswith("kernel")} == {
      "conv_expand", "conv_3d", "conv_project"}
  # The residual branch starts closed: gamma of the last BN is zero.
  assert not np.any(plain.bn_project.gamma.numpy())


def test_dilated_temporal_kernels_use_the_authors_hand_built_initialisation():
  # conv1d_bn draws tf.random.truncated_normal(stddev=sqrt(2 / (3 * C_in))) for d > 1.
  conv = lite_blocks.temporal_conv3d(64, 2, "t")
  conv.build((None, 4, 4, 4, 256))
  samples = conv.kernel.numpy().ravel()
  stddev = math.sqrt(2.0 / (3 * 256))
  assert np.abs(samples).max() <= 2 * stddev + 1e-6
  # A N(0, s) truncated at 2s has standard deviation 0.8796 s.
  assert abs(samples.std() / (0.87962566 * stddev) - 1) < 0.02
  plain = lite_blocks.temporal_conv3d(64, 1, "t1")
  plain.build((None, 4, 4, 4, 256))
  assert abs(plain.kernel.numpy().std() / math.sqrt(1.0 / (3 * 256)) - 1) < 0.02


def test_group_runs_frames_through_clips_with_one_projection():
  group = lite_blocks.InvertedBottleneckGroup((8, 8, 6), num_blocks=3, num_frames=4,
                                              spatial_strides=2, temporal_dilation=2)
  frames = _clip((2 * 4, 9, 9, 5))
  group.build(frames.shape)
  _randomize_batch_norms(group)
  got = group(frames, training=False).numpy()
  x = frames.reshape(2, 4, 9, 9, 5)
  for block in group.blocks:
    x = _reference_block(block, x, False)
  np.testing.assert_allclose(got, x.reshape(8, 5, 5, 6), rtol=1e-4, atol=1e-4)
  assert [b.use_projection for b in group.blocks] == [True, False, False]
  assert [b.spatial_strides for b in group.blocks] == [2, 1, 1]


@pytest.mark.parametrize("training", [False, True])
def test_lite_stem_equals_conv3d_composition(training):
  stem = lite_blocks.LiteStem(24, num_frames=5, temporal_dilation=2)
  clip = _clip((2, 5, 10, 10, 3))
  stem.build(clip.shape)
  _randomize_batch_norms(stem)
  got = stem(clip, training=training).numpy()
  relu = lambda v: np.maximum(v, 0.0)
  y = relu(_reference_bn(_reference_conv(clip, stem.conv_spatial.kernel.numpy(), 2),
                         stem.bn_spatial, training))
  y = relu(_reference_bn(_reference_conv(y, stem.conv_temporal.kernel.numpy(), 1, 2),
                         stem.bn_temporal, training))
  assert got.shape == (10, 5, 5, 24)  # [N*T, H/2, W/2, 24]: no max-pool
  np.testing.assert_allclose(got, y.reshape(10, 5, 5, 24), rtol=1e-4, atol=1e-4)


def test_lite_object_stem_is_the_2x2_max_pool_of_the_one_hot_map():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 12, (2, 3, 8, 6)).astype(np.uint8)
  ids[0, 0, 0, 0] = 200  # out of range: no class
  stem = lite_blocks.LiteObjectStem(num_frames=3, num_classes=12)
  got = stem(tf.constant(ids)).numpy()
  one_hot = tf.one_hot(tf.reshape(tf.cast(ids, tf.int32), [-1, 8, 6]), 12)
  expected = tf.nn.max_pool2d(one_hot, 2, 2, "SAME").numpy()
  assert got.shape == (6, 4, 3, 12)
  np.testing.assert_array_equal(got, expected)
  assert stem.weights == []


def test_lite_head_convs_equal_pointwise_convs_with_batch_norm():
  head = lite_blocks.LiteHeadConvs((7, 9))
  x = _clip((6, 3, 3, 5))
  head.build(x.shape)
  _randomize_batch_norms(head)
  for training in (False, True):
    y = x[None]  # frames as one clip: a 1x1x1 conv is per frame
    for conv, bn in zip(head.convs, head.bns):
      y = np.maximum(_reference_bn(
          _reference_conv(y, conv.kernel.numpy()[None]), bn, training), 0.0)
    np.testing.assert_allclose(head(x, training=training).numpy(), y[0], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("make,shape", [
    (lambda: lite_blocks.InvertedBottleneckBlock((5, 4, 3), 2, 2, True), (1, 4, 8, 8, 2)),
    (lambda: lite_blocks.InvertedBottleneckGroup((5, 4, 3), 2, 4, 2, 3), (4, 8, 8, 2)),
    (lambda: lite_blocks.LiteStem(6, 4, 2), (1, 4, 8, 8, 3)),
    (lambda: lite_blocks.LiteHeadConvs((5, 7)), (4, 2, 2, 3)),
])
def test_serialization_round_trip(make, shape):
  layer = make()
  x = _clip(shape)
  layer.build(x.shape)
  _randomize_batch_norms(layer)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert clone.built  # rebuilt from the config alone
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == layer.get_config()
  np.testing.assert_array_equal(clone(x, training=False).numpy(),
                                layer(x, training=False).numpy())


def test_object_stem_round_trip():
  stem = lite_blocks.LiteObjectStem(2, 7, name="objects")
  clone = lite_blocks.LiteObjectStem.from_config(stem.get_config())
  assert clone.get_config() == stem.get_config()


def test_every_learned_weight_gets_a_gradient():
  group = lite_blocks.InvertedBottleneckGroup((5, 4, 3), 2, 4, 2, 2)
  x = tf.constant(_clip((8, 6, 6, 2)))
  group.build(x.shape)
  _randomize_batch_norms(group)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(group(x, training=True) ** 2)
  grads = tape.gradient(loss, group.trainable_weights)
  # Block 0 (strided): 5 convs + 5 BNs (gamma, beta); block 1 (3x3x3 middle): 3 + 3.
  assert len(grads) == len(group.trainable_weights) == 5 * 3 + 3 * 3
  assert all(g is not None and np.any(g.numpy()) for g in grads)


@pytest.mark.parametrize("make,message", [
    (lambda: lite_blocks.InvertedBottleneckBlock((5, 4)), "three positive ints"),
    (lambda: lite_blocks.InvertedBottleneckBlock((5, 4, 0)), "three positive ints"),
    (lambda: lite_blocks.InvertedBottleneckBlock((5, 4, 3), spatial_strides=2),
     "projection shortcut"),
    (lambda: lite_blocks.InvertedBottleneckGroup((5, 4, 3), 0, 4), "num_blocks"),
    (lambda: lite_blocks.LiteStem(8, 4, temporal_dilation=0), "temporal_dilation"),
    (lambda: lite_blocks.LiteObjectStem(4, None), "num_classes"),
    (lambda: lite_blocks.LiteHeadConvs((432,)), "two positive ints"),
])
def test_invalid_arguments_raise(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_identity_shortcut_needs_matching_channels():
  block = lite_blocks.InvertedBottleneckBlock((5, 4, 3))
  with pytest.raises(ValueError, match="identity shortcut needs 3"):
    block.build((None, 4, 8, 8, 2))


# Outputs of the authors' own functions (`inverted_bottleneck_3dblock`, `lite_conv_stem` of
# google-research assemblenet/assemblenet_plus_lite.py, TF1 graph under TF 2.15.1) for
# random inputs and weights, written by the script in docs/assemblenet_plus_lite.md: per
# case `x`, the variables in creation order `wNN` and the output `y`.
_AUTHORS = np.load(__file__.rsplit("/", 1)[0] + "/testdata/authors_lite_blocks.npz")
_AUTHORS_CASES = {
    "block_s2_d2": (lambda: lite_blocks.InvertedBottleneckBlock((6, 4, 5), 2, 2, True)),
    "block_s1_d3": (lambda: lite_blocks.InvertedBottleneckBlock((6, 4, 5), 1, 3, True)),
    "block_s1_identity": (lambda: lite_blocks.InvertedBottleneckBlock((6, 4, 5))),
    "stem_d2": (lambda: lite_blocks.LiteStem(8, num_frames=4, temporal_dilation=2)),
}


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("name", sorted(_AUTHORS_CASES))
def test_equals_the_authors_functions(name, mode):
  key = f"{name}/{mode}"
  x, expected = _AUTHORS[f"{key}/x"], _AUTHORS[f"{key}/y"]
  weights = [_AUTHORS[k] for k in sorted(_AUTHORS.files)
             if k.startswith(key + "/w")]
  layer = _AUTHORS_CASES[name]()
  layer.build(x.shape)
  if name.startswith("stem"):
    pairs = [(layer.conv_spatial, layer.bn_spatial), (layer.conv_temporal, layer.bn_temporal)]
  else:
    pairs = ([(layer.conv_shortcut, layer.bn_shortcut)] if layer.use_projection else []) + [
        (layer.conv_expand, layer.bn_expand)] + layer._middle() + [
            (layer.conv_project, layer.bn_project)]
  # The authors create each conv's kernel, then its batch norm's gamma, beta, moving mean
  # and moving variance.
  variables = [v for conv, bn in pairs for v in (conv.kernel, bn.gamma, bn.beta,
                                                 bn.moving_mean, bn.moving_variance)]
  assert [tuple(v.shape) for v in variables] == [w.shape for w in weights]
  for variable, value in zip(variables, weights):
    variable.assign(value)
  got = layer(x, training=mode == "train").numpy()
  np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
