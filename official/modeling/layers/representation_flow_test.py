"""RepresentationFlow against an independent NumPy TV-L1 written from the authors' ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import representation_flow


def _correlate_same(image, kernel, axis):
  """TF 'SAME' cross-correlation of [B, H, W] with a 1-D kernel along `axis` (1 or 2)."""
  k = len(kernel)
  before = (k - 1) // 2
  pad = [(0, 0)] * 3
  pad[axis] = (before, k - 1 - before)
  padded = np.pad(image, pad)
  out = np.zeros_like(image)
  size = image.shape[axis]
  for tap, weight in enumerate(kernel):
    out += weight * np.take(padded, np.arange(tap, tap + size), axis=axis)
  return out


def _numpy_tvl1(clip, num_iterations=40, theta=0.3, lam=0.15, tau=0.25):
  """The authors' rep_flow (bottleneck=1) in float64, op by op, per frame pair."""
  gray = clip.astype(np.float64).mean(axis=-1)
  gray = 255.0 * (gray - gray.min()) / (gray.max() - gray.min())
  n, t, h, w = gray.shape
  img1 = gray[:, :-1].reshape(-1, h, w)
  img2 = gray[:, 1:].reshape(-1, h, w)
  grad_kernel, diff_kernel = [-0.5, 0.0, 0.5], [-1.0, 1.0]
  t_ = abs(theta) + 1e-12
  l_t, taut = lam * t_, tau / t_

  def divergence(p1, p2):
    p1 = np.pad(p1[:, :, :-1], [(0, 0), (0, 0), (1, 0)])
    p2 = np.pad(p2[:, :-1, :], [(0, 0), (1, 0), (0, 0)])
    return _correlate_same(p1, diff_kernel, 2) + _correlate_same(p2, diff_kernel, 1)

  def forward_grad(x):
    return _correlate_same(x, diff_kernel, 2), _correlate_same(x, diff_kernel, 1)

  u1, u2 = np.zeros_like(img1), np.zeros_like(img1)
  p11, p12, p21, p22 = (np.zeros_like(img1) for _ in range(4))
  g2x = _correlate_same(img2, grad_kernel, 2)
  g2y = _correlate_same(img2, grad_kernel, 1)
  grad = g2x**2 + g2y**2 + 1e-12
  rho_c = img2 - g2x * u1 - g2y * u2 - img1
  for _ in range(num_iterations):
    rho = rho_c + g2x * u1 + g2y * u2 + 1e-12
    mask1 = rho < -l_t * grad
    mask2 = rho > l_t * grad
    mask3 = ~mask1 & ~mask2 & (grad > 1e-12)
    v1 = (np.where(mask1, l_t * g2x, 0) + np.where(mask2, -l_t * g2x, 0) +
          np.where(mask3, (-rho / grad) * g2x, 0) + u1)
    v2 = (np.where(mask1, l_t * g2y, 0) + np.where(mask2, -l_t * g2y, 0) +
          np.where(mask3, (-rho / grad) * g2y, 0) + u2)
    u1 = v1 + t_ * divergence(p11, p12)
    u2 = v2 + t_ * divergence(p21, p22)
    u1x, u1y = forward_grad(u1)
    u2x, u2y = forward_grad(u2)
    n1 = 1.0 + taut * np.sqrt(u1x**2 + u1y**2 + 1e-12)
    n2 = 1.0 + taut * np.sqrt(u2x**2 + u2y**2 + 1e-12)
    p11, p12 = (p11 + taut * u1x) / n1, (p12 + taut * u1y) / n1
    p21, p22 = (p21 + taut * u2x) / n2, (p22 + taut * u2y) / n2
  flow = np.stack([u1, u2], axis=-1).reshape(n, t - 1, h, w, 2)
  return np.concatenate([flow, flow[:, -1:]], axis=1)


def _clip(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def test_matches_numpy_tvl1_in_float64():
  clip = _clip((2, 3, 6, 5, 3))
  layer = representation_flow.RepresentationFlow(dtype="float64")
  np.testing.assert_allclose(layer(clip).numpy(), _numpy_tvl1(clip), rtol=1e-7, atol=1e-8)


def test_matches_numpy_tvl1_in_float32():
  clip = _clip((1, 3, 8, 7, 3), seed=1)
  out = representation_flow.RepresentationFlow()(clip).numpy()
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, _numpy_tvl1(clip), atol=2e-3)


def test_custom_hyperparameters_match_numpy():
  clip = _clip((1, 2, 5, 6, 3), seed=2)
  layer = representation_flow.RepresentationFlow(
      num_iterations=7, theta=0.5, tv_lambda=0.3, tau=0.1, dtype="float64")
  np.testing.assert_allclose(
      layer(clip).numpy(), _numpy_tvl1(clip, 7, 0.5, 0.3, 0.1), rtol=1e-7, atol=1e-8)


def test_shifted_square_flows_along_the_shift():
  # A bright square moving one pixel right: u_x is positive where the square is.
  frames = np.zeros((1, 2, 12, 12, 3), np.float32)
  frames[0, 0, 4:8, 3:7] = 1.0
  frames[0, 1, 4:8, 4:8] = 1.0
  flow = representation_flow.RepresentationFlow()(frames).numpy()
  assert flow[0, 0, 4:8, 4:8, 0].mean() > 0.2
  assert abs(flow[0, 0, 4:8, 4:8, 1].mean()) < 0.5 * flow[0, 0, 4:8, 4:8, 0].mean()


def test_last_frame_repeats_and_constant_clip_has_no_flow():
  flow = representation_flow.RepresentationFlow(num_iterations=3)(_clip((1, 4, 5, 5, 3)))
  np.testing.assert_array_equal(flow[:, -1], flow[:, -2])
  still = representation_flow.RepresentationFlow()(np.full((1, 3, 4, 4, 3), 0.2, np.float32))
  # Only the authors' 1e-12 regularisers move it.
  np.testing.assert_allclose(still.numpy(), np.zeros((1, 3, 4, 4, 2)), atol=1e-9)


def test_vectorised_over_clips_but_normalised_over_the_batch():
  # Each clip's flow equals its own flow computed alone when both share min/max.
  a, b = _clip((1, 3, 5, 5, 3), 3), _clip((1, 3, 5, 5, 3), 4)
  a[0, 0, 0, 0], b[0, 0, 0, 0] = -1.0, -1.0
  a[0, 0, 0, 1], b[0, 0, 0, 1] = 1.0, 1.0
  layer = representation_flow.RepresentationFlow(dtype="float64")
  both = layer(np.concatenate([a, b])).numpy()
  np.testing.assert_allclose(both[1:], layer(b).numpy(), atol=1e-10)


def test_no_weights_and_serialization():
  layer = representation_flow.RepresentationFlow(num_iterations=5, theta=0.2, name="rep_flow")
  clip = _clip((1, 2, 4, 4, 3))
  expected = layer(clip).numpy()
  assert not layer.weights
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert clone.get_config() == layer.get_config()
  np.testing.assert_array_equal(clone(clip).numpy(), expected)


def test_inside_xla():
  clip = _clip((1, 3, 6, 6, 3))
  layer = representation_flow.RepresentationFlow(num_iterations=10)
  compiled = tf.function(layer, jit_compile=True)
  np.testing.assert_allclose(compiled(clip).numpy(), layer(clip).numpy(), atol=1e-4)


def test_compiled_iterations_equal_op_by_op_iterations():
  clip = _clip((2, 4, 12, 10, 3), seed=3)
  compiled = representation_flow.RepresentationFlow(num_iterations=20)
  op_by_op = representation_flow.RepresentationFlow(num_iterations=20, jit_compile=False)
  assert compiled.jit_compile and compiled.get_config()["jit_compile"]
  np.testing.assert_allclose(compiled(clip).numpy(), op_by_op(clip).numpy(),
                             rtol=1e-4, atol=1e-4)


def test_needs_two_frames():
  with pytest.raises(ValueError, match="at least 2 frames"):
    representation_flow.RepresentationFlow()(np.zeros((1, 1, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match="num_iterations"):
    representation_flow.RepresentationFlow(num_iterations=0)


def test_output_keeps_static_shapes_after_a_more_general_trace():
  # The compiled TV-L1 is one tf.function for the process: once a graph with an unknown
  # batch has traced it, later graphs reuse that trace (its signature is a supertype), and
  # its outputs carried the unknown batch into every layer after the flow (FLOP counting of
  # `official.tools.model_info` failed after the demo had run in the same process).
  layer = representation_flow.RepresentationFlow(num_iterations=2)
  tf.function(layer).get_concrete_function(tf.TensorSpec([None, 3, 8, 8, 3]))
  graph = tf.function(layer).get_concrete_function(tf.TensorSpec([2, 3, 8, 8, 3])).graph
  assert graph.outputs[0].shape.as_list() == [2, 3, 8, 8, 2]
