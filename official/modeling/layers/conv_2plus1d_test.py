"""Tests for the (N*T)HWC temporal convolution, the inference BN fold and fixed padding."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import bottleneck
from official.modeling.layers import conv_2plus1d
from official.modeling.layers import stems


def _conv3d_reference(clip, kernel, dilation):
  """A `(k, 1, 1)` Conv3D on `[N, T, H, W, C]` with the same weights, SAME padding.

  The dilation is expressed the way the authors did: zeros inserted between the taps of an
  undilated kernel, so the reference does not rely on the dilation path under test.
  """
  k, _, c, f = kernel.shape
  dilated = np.zeros(((k - 1) * dilation + 1, 1, 1, c, f), np.float32)
  dilated[::dilation, 0, 0] = kernel[:, 0]
  return tf.nn.conv3d(clip, dilated, strides=[1] * 5, padding="SAME").numpy()


@pytest.mark.parametrize("kernel_size,dilation,frames", [
    (3, 1, 4), (3, 2, 4), (5, 1, 6), (5, 4, 4), (3, 4, 8), (3, 8, 8), (5, 2, 3),
])
def test_temporal_conv_equals_conv3d(kernel_size, dilation, frames):
  rng = np.random.default_rng(0)
  clip = rng.normal(size=(2, frames, 3, 5, 4)).astype(np.float32)
  layer = conv_2plus1d.TemporalConv(6, kernel_size, frames, dilation)
  out = layer(clip.reshape(2 * frames, 3, 5, 4)).numpy()
  expected = _conv3d_reference(clip, layer.kernel.numpy(), dilation)
  np.testing.assert_allclose(out, expected.reshape(2 * frames, 3, 5, 6), atol=1e-5)


def test_temporal_conv_ones_kernel_counts_frames_in_window():
  # 3 frames, kernel 3, ones everywhere: the edge frames see 2 frames, the middle one 3.
  layer = conv_2plus1d.TemporalConv(1, 3, 3)
  layer.build((None, 2, 2, 4))
  layer.kernel.assign(np.ones((3, 1, 4, 1), np.float32))
  out = layer(np.ones((3, 2, 2, 4), np.float32)).numpy()
  np.testing.assert_array_equal(out[:, 0, 0, 0], [8.0, 12.0, 8.0])


def test_temporal_conv_gradient_through_dilation_matches_conv3d():
  rng = np.random.default_rng(1)
  clip = rng.normal(size=(1, 4, 2, 2, 3)).astype(np.float32)
  layer = conv_2plus1d.TemporalConv(2, 3, 4, temporal_dilation=2)
  layer.build((None, 2, 2, 3))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(clip.reshape(4, 2, 2, 3)) ** 2)
  grad = tape.gradient(loss, layer.kernel).numpy()
  kernel = tf.Variable(layer.kernel.numpy())
  with tf.GradientTape() as tape:
    dilated = tf.stack([kernel[0], tf.zeros_like(kernel[0]), kernel[1],
                        tf.zeros_like(kernel[0]), kernel[2]])[:, :, None]
    loss = tf.reduce_sum(tf.nn.conv3d(clip, dilated, [1] * 5, "SAME") ** 2)
  np.testing.assert_allclose(grad, tape.gradient(loss, kernel).numpy(), rtol=1e-5)


def test_dead_taps_are_skipped_but_kept_as_weights():
  layer = conv_2plus1d.TemporalConv(2, 5, 4, temporal_dilation=4)
  layer.build((None, 1, 1, 3))
  assert layer.kernel.shape == (5, 1, 3, 2)
  assert (layer._first_tap, layer._last_tap) == (2, 2)  # pylint: disable=protected-access


def test_fixed_padding_strided_conv_grid():
  # 4x4 input of ones, 3x3 ones kernel, stride 2: pad 1 before and after, VALID. The
  # output pixel (0, 0) covers the top-left corner (4 ones), (1, 1) a full 3x3 window.
  conv = conv_2plus1d.spatial_conv(1, 3, 2, name="conv")
  x = conv_2plus1d.fixed_padding(np.ones((1, 4, 4, 1), np.float32), 3, 2)
  conv.build(x.shape)
  conv.kernel.assign(np.ones((3, 3, 1, 1), np.float32))
  np.testing.assert_array_equal(conv(x).numpy()[0, :, :, 0], [[4.0, 6.0], [6.0, 9.0]])


def test_fixed_padding_is_identity_for_stride_one():
  x = np.ones((1, 3, 3, 1), np.float32)
  assert conv_2plus1d.fixed_padding(x, 7, 1) is x


def test_batch_norm_settings():
  bn = conv_2plus1d.batch_norm("bn", zero_init=True)
  bn.build((None, 3))
  assert bn.momentum == 0.99 and bn.epsilon == 1e-5
  np.testing.assert_array_equal(bn.gamma.numpy(), np.zeros(3))


def test_serialization_round_trip():
  layer = conv_2plus1d.TemporalConv(3, 3, 2, temporal_dilation=2, name="conv_temporal")
  x = np.random.default_rng(2).normal(size=(4, 2, 2, 5)).astype(np.float32)
  expected = layer(x).numpy()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == layer.get_config()
  np.testing.assert_array_equal(clone(x).numpy(), expected)


@pytest.mark.parametrize("kwargs", [
    {"filters": 0, "kernel_size": 3, "num_frames": 4},
    {"filters": 2, "kernel_size": 3, "num_frames": 0},
    {"filters": 2, "kernel_size": 3, "num_frames": 4, "temporal_dilation": 0},
])
def test_bad_arguments(kwargs):
  with pytest.raises(ValueError, match="positive int"):
    conv_2plus1d.TemporalConv(**kwargs)


@pytest.mark.parametrize("kernel_size,dilation", [(2, 2), (4, 3)])
def test_even_dilated_kernel_is_rejected(kernel_size, dilation):
  # Its taps would sit at 0, d, ... after the centre frame, where a dilated 'SAME' Conv3D
  # puts them half a dilation earlier: rather an error than a silently different conv.
  with pytest.raises(ValueError, match="odd `kernel_size`"):
    conv_2plus1d.TemporalConv(2, kernel_size, 8, dilation)


def _random_batch_norm(channels, rng, input_shape):
  bn = conv_2plus1d.batch_norm("bn")
  bn.build(input_shape)
  bn.set_weights([rng.uniform(0.5, 2.0, channels).astype(np.float32),   # gamma
                  rng.normal(size=channels).astype(np.float32),         # beta
                  rng.normal(size=channels).astype(np.float32),         # moving mean
                  rng.uniform(0.1, 3.0, channels).astype(np.float32)])  # moving variance
  return bn


@pytest.mark.parametrize("kernel_size,strides", [(1, 1), (3, 1), (3, 2), (1, 2), (7, 2)])
def test_folded_conv_batch_norm_equals_conv_then_batch_norm(kernel_size, strides):
  rng = np.random.default_rng(1)
  frames = rng.normal(size=(4, 9, 9, 5)).astype(np.float32)
  conv = conv_2plus1d.spatial_conv(6, kernel_size, strides, "conv")
  conv.build(frames.shape)
  bn = _random_batch_norm(6, rng, conv.compute_output_shape(frames.shape))
  reference = bn(conv(frames), training=False).numpy()
  folded = conv_2plus1d.conv_batch_norm(conv, bn, frames, training=False).numpy()
  np.testing.assert_allclose(folded, reference, rtol=1e-5, atol=1e-5)
  # In training the batch statistics are used: exactly the two layers.
  np.testing.assert_array_equal(
      conv_2plus1d.conv_batch_norm(conv, bn, frames, training=True).numpy(),
      bn(conv(frames), training=True).numpy())


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 2), (5, 4)])
def test_folded_temporal_conv_batch_norm_equals_conv_then_batch_norm(kernel_size, dilation):
  rng = np.random.default_rng(2)
  frames = rng.normal(size=(2 * 4, 3, 5, 4)).astype(np.float32)
  conv = conv_2plus1d.TemporalConv(6, kernel_size, 4, dilation)
  conv.build(frames.shape)
  bn = _random_batch_norm(6, rng, (8, 3, 5, 6))
  reference = bn(conv(frames), training=False).numpy()
  folded = conv_2plus1d.conv_batch_norm(conv, bn, frames, training=False).numpy()
  np.testing.assert_allclose(folded, reference, rtol=1e-5, atol=1e-5)


# kernel, dilation, frames: every dilation of the paper's structures (1, 2, 4, 8), frames
# divisible by the dilation or not, dead taps (|offset| >= frames) and a single frame.
TEMPORAL_CASES = [
    (3, 1, 4), (3, 2, 4), (5, 1, 6), (5, 4, 4), (3, 4, 8), (3, 8, 8), (5, 2, 3),
    (3, 2, 5), (3, 4, 6), (5, 4, 6), (3, 3, 8), (5, 2, 8), (3, 8, 3), (3, 2, 1),
    (4, 1, 5), (2, 1, 3),  # even kernels (undilated: Conv3D's SAME puts the extra tap after)
]


def _conv3d_reference_tf(clip, kernel, dilation):
  """`_conv3d_reference` in TF ops, differentiable in `clip` and `kernel`."""
  k = kernel.shape[0]
  zeros = tf.zeros_like(kernel[0])
  taps = []
  for j in range(k):
    taps.append(kernel[j])
    if j < k - 1:
      taps.extend([zeros] * (dilation - 1))
  # [(k-1)*d+1, 1, C, F] -> [(k-1)*d+1, 1, 1, C, F]
  dilated = tf.stack(taps)[:, :, None]
  return tf.nn.conv3d(clip, dilated, strides=[1] * 5, padding="SAME")


@pytest.mark.parametrize("kernel_size,dilation,frames", TEMPORAL_CASES)
@pytest.mark.parametrize("training", [True, False, None])
@pytest.mark.parametrize("channels,filters", [(4, 5), (7, 3)])
def test_temporal_conv_forward_and_gradients_equal_conv3d(kernel_size, dilation, frames,
                                                          training, channels, filters):
  # Forward and both gradients (input, kernel) against the zero-inserted Conv3D, in
  # training and inference alike; more output channels than input ones and fewer (the
  # kernel gradient's matmuls then run in the other order).
  rng = np.random.default_rng(7)
  clip = tf.constant(rng.normal(size=(2, frames, 3, 2, channels)).astype(np.float32))
  upstream = tf.constant(rng.normal(size=(2, frames, 3, 2, filters)).astype(np.float32))
  layer = conv_2plus1d.TemporalConv(filters, kernel_size, frames, dilation)
  layer.build((None, 3, 2, channels))
  kernel = tf.Variable(layer.kernel.numpy())
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(clip)
    # [N, T, H, W, C] -> [N*T, H, W, C]
    out = layer(tf.reshape(clip, [-1, 3, 2, channels]), training=training)
    loss = tf.reduce_sum(tf.reshape(out, upstream.shape) * upstream)
    expected = _conv3d_reference_tf(clip, kernel, dilation)
    expected_loss = tf.reduce_sum(expected * upstream)
  np.testing.assert_allclose(tf.reshape(out, expected.shape).numpy(), expected.numpy(),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(tape.gradient(loss, clip).numpy(),
                             tape.gradient(expected_loss, clip).numpy(),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(tape.gradient(loss, layer.kernel).numpy(),
                             tape.gradient(expected_loss, kernel).numpy(),
                             rtol=1e-5, atol=1e-5)


def _backward_graph(conv, input_shape):
  """The graph of `conv`'s forward and both gradients on a `[N, H, W, C]` input."""

  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(conv(x) ** 2)
    return tape.gradient(loss, [x, conv.kernel])

  return tf.function(step).get_concrete_function(
      tf.TensorSpec(input_shape, tf.float32)).graph


@pytest.mark.parametrize("dilation", [2, 4])
def test_dilated_temporal_conv_backward_is_plain_convolutions(dilation):
  # The dilation folded into the frame axis: forward and input gradient are undilated
  # forward Conv2Ds (the input gradient with the kernel turned, not Conv2DBackpropInput,
  # slow with Eigen's kernels), the kernel gradient one matmul per tap, without the
  # strided-slice gradients of a shifted-sum form.
  layer = conv_2plus1d.TemporalConv(5, 3, 8, dilation)
  layer.build((None, 3, 2, 4))
  graph = _backward_graph(layer, [16, 3, 2, 4])
  types = [op.type for op in graph.get_operations()]
  assert types.count("Conv2D") == 2 and "MatMul" in types
  assert not set(types) & {"StridedSliceGrad", "Conv2DBackpropFilter", "Conv2DBackpropInput",
                           "AddN"}, types
  dilations = [op.get_attr("dilations") for op in graph.get_operations()
               if op.type.startswith("Conv2D")]
  assert all(d == [1, 1, 1, 1] for d in dilations), dilations


def _padded_strided_conv_bn(rng):
  """ReLU -> `fixed_padding` -> 3x3/2 conv with its BN folded: the block's layer 2."""
  conv = conv_2plus1d.spatial_conv(6, 3, 2, "conv")
  conv.build((None, 10, 10, 5))
  bn = _random_batch_norm(6, rng, (None, 5, 5, 6))
  def step(frames):
    x = conv_2plus1d.fixed_padding(tf.nn.relu(frames), 3, 2)
    return conv_2plus1d.conv_batch_norm(conv, bn, x, training=False)
  return step


def _bottleneck_block(rng):
  """The first block of a node: projection shortcut, stride 2 (as in the smoke model)."""
  block = bottleneck.BottleneckBlock(4, 8, num_frames=2, spatial_strides=2,
                                     use_projection=True)
  block.build((None, 9, 9, 5))
  block.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                     for w in block.get_weights()])
  return lambda frames: block(frames, training=False)


def _rgb_stem(rng):
  """The 7x7/2 stem conv after `fixed_padding` of the input frames."""
  stem = stems.RGBStem(8, num_frames=2)
  stem.build((None, 2, 9, 9, 5))
  stem.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                    for w in stem.get_weights()])
  # [N*T, H, W, C] -> [N, T, H, W, C]
  return lambda frames: stem(tf.reshape(frames, [-1, 2, 9, 9, 5]), training=False)


@pytest.mark.parametrize("build", [_padded_strided_conv_bn, _bottleneck_block, _rgb_stem])
def test_folded_inference_in_a_graph_equals_eager(build):
  # The trainer's eval step: `strategy.run` of the model inside a `tf.function`. With
  # oneDNN's graph rewrites (TF's default on CPUs with AVX512_BF16, VNNI or AMX), a fold
  # that waited for the Pad before its conv made the graph cyclic ("N nodes in a cycle").
  step = build(np.random.default_rng(4))
  frames = np.random.default_rng(5).normal(size=(4, 9, 9, 5)).astype(np.float32)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  graph_step = tf.function(lambda x: strategy.run(step, args=(x,)))
  np.testing.assert_allclose(graph_step(frames).numpy(), step(frames).numpy(),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [_padded_strided_conv_bn, _bottleneck_block, _rgb_stem])
def test_folds_never_wait_for_a_pad(build):
  # Machine-independent form of the test above: oneDNN's graph pass merges each `Pad` into
  # the conv it feeds and hands the Pad's control edges to that conv, so no op may have a
  # control input on a `Pad` (the folds wait for the tensor the `Pad` pads instead).
  step = build(np.random.default_rng(4))
  graph = tf.function(step).get_concrete_function(
      tf.TensorSpec([4, 9, 9, 5], tf.float32)).graph
  ops = graph.get_operations()
  assert any(op.type == "Pad" for op in ops)
  waiting_for_a_pad = [op.name for op in ops
                       if any(c.type == "Pad" for c in op.control_inputs)]
  assert not waiting_for_a_pad
  # The folds still wait for their conv's (unpadded) input.
  assert any(op.control_inputs for op in ops if op.type == "ReadVariableOp")


def _keras_reference_conv(conv):
  """A plain `keras.layers.Conv2D` with `conv`'s configuration and kernel."""
  reference = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=conv.strides,
                                  padding=conv.padding, use_bias=False)
  reference.build((None, None, None, conv.kernel.shape[2]))
  reference.kernel.assign(conv.kernel)
  return reference


@pytest.mark.parametrize("kernel_size,strides,height,width,channels,filters", [
    (1, 1, 9, 11, 5, 7), (1, 1, 9, 11, 9, 3), (3, 1, 9, 11, 5, 7), (7, 1, 9, 11, 5, 7),
    (1, 2, 9, 11, 5, 7), (1, 2, 8, 6, 5, 7), (1, 3, 7, 9, 5, 7), (1, 2, 9, 11, 9, 3),
    (3, 2, 9, 11, 5, 7)])
def test_spatial_conv_equals_keras_conv2d_with_gradients(kernel_size, strides, height, width,
                                                         channels, filters):
  # The block convs' forward, input gradient and kernel gradient against Keras' Conv2D
  # (TF's own gradients), after `fixed_padding` as in the blocks. Strided 1x1 convs (the
  # projection shortcuts) take their own input gradient, on sizes that the stride divides
  # and that it does not; strided 3x3 convs take TF's path. 1x1 kernels with more input
  # than output channels take the other matmul order for their kernel gradient.
  rng = np.random.default_rng(kernel_size + 10 * strides + height + channels)
  conv = conv_2plus1d.spatial_conv(filters, kernel_size, strides, "conv")
  conv.build((None, height, width, channels))
  conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype(np.float32))
  reference = _keras_reference_conv(conv)
  frames = conv_2plus1d.fixed_padding(
      tf.constant(rng.normal(size=(3, height, width, channels)).astype(np.float32)),
      kernel_size, strides)
  upstream = None
  results = []
  for layer in (conv, reference):
    with tf.GradientTape() as tape:
      tape.watch(frames)
      outputs = layer(frames)
      if upstream is None:
        upstream = tf.constant(rng.normal(size=outputs.shape).astype(np.float32))
      loss = tf.reduce_sum(outputs * upstream)
    results.append([outputs] + tape.gradient(loss, [frames, layer.kernel]))
  for got, want in zip(*results):
    # Round-off relative to the largest value (sums of up to 7*7*5 products here).
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                               atol=1e-6 * np.abs(want.numpy()).max())


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_stride_1_spatial_conv_backward_avoids_slow_ops(monkeypatch, kernel_size):
  # Input gradient: a forward Conv2D with the kernel turned, never Conv2DBackpropInput
  # (1.2-3.9x slower than the forward conv with TF's Eigen kernels); a 1x1 kernel's
  # gradient is one MatMul, a 3x3's (with oneDNN's kernels) TF's Conv2DBackpropFilter.
  monkeypatch.setattr(conv_2plus1d, "_eigen_kernels", lambda: False)
  conv = conv_2plus1d.spatial_conv(6, kernel_size, 1, "conv")
  conv.build((None, 5, 5, 4))
  types = [op.type for op in _backward_graph(conv, [2, 5, 5, 4]).get_operations()]
  assert types.count("Conv2D") == 2 and "Conv2DBackpropInput" not in types, types
  if kernel_size == 1:
    assert "MatMul" in types and "Conv2DBackpropFilter" not in types, types
  else:
    assert types.count("Conv2DBackpropFilter") == 1, types


def test_strided_1x1_conv_input_gradient_is_a_matmul():
  # The projection shortcut's input gradient: one MatMul by the kernel's transpose, spread
  # onto the stride grid, never Conv2DBackpropInput (with TF's Eigen kernels 4.5x the
  # CPU time, 67 against 15 ms at [8, 14, 14, 1024] -> 2048 channels, stride 2).
  conv = conv_2plus1d.spatial_conv(6, 1, 2, "conv")
  conv.build((None, 7, 8, 4))
  types = [op.type for op in _backward_graph(conv, [2, 7, 8, 4]).get_operations()]
  assert "Conv2DBackpropInput" not in types and "MatMul" in types, types


@pytest.mark.parametrize("batch,channels,filters,product_shape", [
    (2, 8, 4, [4, 8]), (2, 4, 8, [4, 8]), (1, 64, 4, [64, 4])])
def test_1x1_kernel_gradient_matmul_takes_the_faster_order(batch, channels, filters,
                                                           product_shape):
  # [C, M] x [M, F], or [F, M] x [M, C] then a transpose when C > F and the contraction is
  # at least C long: with TF's Eigen and oneDNN kernels alike that ran up to 2.5x faster.
  conv = conv_2plus1d.spatial_conv(filters, 1, 1, "conv")
  conv.build((None, 5, 5, channels))
  products = [op.outputs[0].shape.as_list()
              for op in _backward_graph(conv, [batch, 5, 5, channels]).get_operations()
              if op.type == "MatMul"]
  assert products == [product_shape], products


def test_temporal_conv_kernel_gradient_matmuls_take_the_faster_order():
  # The same rule for each tap of a temporal conv: 16 channels in, 4 out, 2*4*9 positions.
  conv = conv_2plus1d.TemporalConv(4, 3, num_frames=4)
  conv.build((None, 3, 3, 16))
  products = [op.outputs[0].shape.as_list()
              for op in _backward_graph(conv, [8, 3, 3, 16]).get_operations()
              if op.type == "MatMul"]
  assert products == [[4, 16]] * 3, products


def test_spatial_conv_in_mixed_bfloat16_and_its_config():
  rng = np.random.default_rng(3)
  frames = tf.constant(rng.normal(size=(2, 6, 6, 4)).astype(np.float32))
  conv = conv_2plus1d.spatial_conv(5, 3, 1, "conv", dtype="mixed_bfloat16")
  conv.build((None, 6, 6, 4))
  reference = _keras_reference_conv(conv)
  with tf.GradientTape(persistent=True) as tape:
    outputs = conv(frames)
    loss = tf.reduce_sum(tf.cast(outputs, tf.float32) ** 2)
  grad = tape.gradient(loss, conv.kernel)
  assert outputs.dtype == tf.bfloat16 and conv.kernel.dtype == tf.float32
  assert grad.dtype == tf.float32
  with tf.GradientTape() as tape:
    want = reference(frames)
    want_grad = tape.gradient(tf.reduce_sum(want ** 2), reference.kernel)
  np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), want.numpy(),
                             rtol=0.02, atol=0.05)
  np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), rtol=0.05,
                             atol=0.05 * np.abs(want_grad.numpy()).max())
  copy = conv_2plus1d.Conv2D.from_config(conv.get_config())
  assert isinstance(copy, keras.layers.Conv2D)
  assert (copy.filters, copy.kernel_size, copy.strides, copy.padding, copy.name) == \
      (5, (3, 3), (1, 1), "same", "conv")


def _random_conv_and_frames(kernel_size, strides, channels, batch):
  """A built 4-filter `spatial_conv` with a random kernel, and random `[batch, 11, 10,
  channels]` frames after `fixed_padding`, as the blocks feed it."""
  rng = np.random.default_rng(kernel_size + channels)
  conv = conv_2plus1d.spatial_conv(4, kernel_size, strides, "conv")
  conv.build((None, None, None, channels))
  conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype(np.float32))
  frames = conv_2plus1d.fixed_padding(
      tf.constant(rng.normal(size=(batch, 11, 10, channels)).astype(np.float32)),
      kernel_size, strides)
  return conv, frames


@pytest.mark.parametrize("eigen", [True, False])
@pytest.mark.parametrize("kernel_size,strides,channels,as_conv", [
    (3, 1, 5, True), (5, 1, 2, True), (7, 2, 3, True), (7, 2, 2, True), (3, 2, 16, False)])
def test_kernel_gradient_as_a_forward_conv_with_eigen_kernels(monkeypatch, eigen, kernel_size,
                                                              strides, channels, as_conv):
  # With TF's Eigen kernels (oneDNN off, no GPU), the kernel gradient of a stride-1 conv and
  # of a strided conv of at most 4 input channels (the RGB and flow stems) is one forward
  # Conv2D with batch and channels swapped, no Conv2DBackpropFilter (which took 1.2-1.3x
  # and, at the stems, 2.6-3.2x its CPU time); with oneDNN's, and for other strided convs,
  # TF's op. The values equal Keras' Conv2D (TF's own gradients) either way.
  monkeypatch.setattr(conv_2plus1d, "_eigen_kernels", lambda: eigen)
  conv, frames = _random_conv_and_frames(kernel_size, strides, channels, batch=3)
  graph = _backward_graph(conv, frames.shape.as_list())
  types = [op.type for op in graph.get_operations()]
  assert ("Conv2DBackpropFilter" not in types) == (eigen and as_conv), types

  def gradients(layer):
    with tf.GradientTape() as tape:
      tape.watch(frames)
      loss = tf.reduce_sum(layer(frames) ** 2)
    return tape.gradient(loss, [frames, layer.kernel])

  for got, want in zip(tf.function(lambda: gradients(conv))(),
                       gradients(_keras_reference_conv(conv))):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                               atol=1e-6 * np.abs(want.numpy()).max())


@pytest.mark.parametrize("kernel_size,strides,channels", [(3, 1, 5), (7, 2, 3)])
def test_kernel_gradient_as_a_conv_has_second_order_gradients(monkeypatch, kernel_size,
                                                              strides, channels):
  # The gradient of the kernel gradient (e.g. a gradient penalty) through the Eigen forms
  # equals TF's own. A stride as the conv's dilation would fail here: TF's CPU kernels
  # cannot back-propagate through a dilation, so strides go through space-to-batch.
  monkeypatch.setattr(conv_2plus1d, "_eigen_kernels", lambda: True)
  conv, frames = _random_conv_and_frames(kernel_size, strides, channels, batch=2)

  def second_order(layer):
    with tf.GradientTape() as outer:
      outer.watch(frames)
      with tf.GradientTape() as inner:
        loss = tf.reduce_sum(layer(frames) ** 2)
      penalty = tf.reduce_sum(inner.gradient(loss, layer.kernel) ** 2)
    return outer.gradient(penalty, [frames, layer.kernel])

  for got, want in zip(second_order(conv), second_order(_keras_reference_conv(conv))):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                               atol=1e-5 * np.abs(want.numpy()).max())


@pytest.mark.parametrize("strides,batch", [(1, 0), (1, None), (2, 0), (2, None)])
def test_kernel_gradient_as_a_conv_of_an_empty_batch_is_zero(strides, batch):
  # A replica's share of a short last batch can be empty: its kernel gradient is zero (a
  # conv cannot take a kernel of 0 input channels), whether the batch size is known when
  # the graph is traced or not.
  inputs = tf.zeros([0, 9, 9, 3])
  upstream = tf.zeros([0, 7 if strides == 1 else 4, 7 if strides == 1 else 4, 4])
  traced = tf.function(
      lambda x, dy: conv_2plus1d._kernel_gradient_as_conv(x, dy, (3, 3, 3, 4), strides))  # pylint: disable=protected-access
  if batch is None:
    traced = traced.get_concrete_function(tf.TensorSpec([None, 9, 9, 3]),
                                          tf.TensorSpec([None] + upstream.shape[1:]))
  grad = traced(inputs, upstream)
  np.testing.assert_array_equal(grad.numpy(), np.zeros((3, 3, 3, 4), np.float32))


@pytest.mark.parametrize("strides", [2, [2], [2, 2], (1, 2, 2, 1), [1, 1], [1, 2]])
def test_conv2d_takes_strides_as_tf_nn_conv2d_does(strides):
  # An int, a pair or the four NHWC strides, as `tf.nn.conv2d` accepts them.
  rng = np.random.default_rng(5)
  inputs = tf.constant(rng.normal(size=(2, 7, 6, 3)).astype(np.float32))
  kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
  np.testing.assert_allclose(
      conv_2plus1d.conv2d(inputs, kernel, strides, "VALID").numpy(),
      tf.nn.conv2d(inputs, kernel, strides, "VALID").numpy(), rtol=1e-5, atol=1e-5)
