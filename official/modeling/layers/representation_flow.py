"""TV-L1 optical flow computed inside the network ("representation flow").

AssembleNet's flow stems do not read precomputed optical flow: the network runs a fixed
number of TV-L1 iterations on its own RGB input (Piergiovanni & Ryoo, "Representation Flow
for Action Recognition", CVPR 2019; used by AssembleNet, ICLR 2020, Sec. 3).
"""

import keras
import tensorflow as tf


def _pad_width(x, before, after):
  return tf.pad(x, [[0, 0], [0, 0], [before, after]])


def _pad_height(x, before, after):
  return tf.pad(x, [[0, 0], [before, after], [0, 0]])


def _image_gradient(image):
  """Central differences `0.5 * (I[x+1] - I[x-1])` with zeros outside the image."""
  padded_x = _pad_width(image, 1, 1)
  padded_y = _pad_height(image, 1, 1)
  grad_x = 0.5 * (padded_x[:, :, 2:] - padded_x[:, :, :-2])
  grad_y = 0.5 * (padded_y[:, 2:, :] - padded_y[:, :-2, :])
  return grad_x, grad_y


def _forward_gradient(u):
  """Forward differences `u[x+1] - u[x]`, with `u` taken as zero past the last column."""
  padded_x = _pad_width(u, 0, 1)
  padded_y = _pad_height(u, 0, 1)
  return padded_x[:, :, 1:] - padded_x[:, :, :-1], padded_y[:, 1:, :] - padded_y[:, :-1, :]


def _divergence(p_x, p_y):
  """Backward-difference divergence, the adjoint used by TV-L1's dual update.

  Along x: `p[0]` at the first column, `p[x] - p[x-1]` inside, `-p[W-2]` at the last one
  (the last column of `p` is dropped), and the same along y.
  """
  inner_x = p_x[:, :, :-1]
  inner_y = p_y[:, :-1, :]
  div_x = _pad_width(inner_x, 0, 1) - _pad_width(inner_x, 1, 0)
  div_y = _pad_height(inner_y, 0, 1) - _pad_height(inner_y, 1, 0)
  return div_x + div_y


def _tvl1(image1, image2, num_iterations, theta, tv_lambda, tau):
  """`num_iterations` TV-L1 steps from u = 0 for image pairs `[B, H, W]`; returns (u_x, u_y).

  The loop body is some sixty element-wise ops on `[B, H, W]`; run op by op they are bound
  by memory traffic and per-op overhead, compiled (`_tvl1_xla`) they fuse into a few loops
  (about 3x faster on a 2-core CPU for an 8 x 224 x 224 clip).
  """
  dtype = image1.dtype
  theta = abs(theta) + 1e-12
  lambda_theta = tv_lambda * theta
  tau_theta = tau / theta
  grad_x, grad_y = _image_gradient(image2)
  grad_sq = grad_x**2 + grad_y**2 + 1e-12
  rho_c = image2 - image1  # u starts at 0, so the `- grad . u` terms vanish.
  # Per-pixel constants of the thresholding step, hoisted out of the loop.
  threshold = lambda_theta * grad_sq
  inverse_grad_sq = tf.where(grad_sq > 1e-12, 1.0 / grad_sq, tf.zeros_like(grad_sq))
  lambda_theta = tf.constant(lambda_theta, dtype)

  def iteration(_, u_x, u_y, p_xx, p_xy, p_yx, p_yy):
    rho = rho_c + grad_x * u_x + grad_y * u_y + 1e-12
    # Thresholding step: v = u + c * grad, with c = lt, -lt or -rho/|grad|^2 depending on
    # where rho lies relative to +-lt*|grad|^2 (0 where the image has no gradient).
    c = tf.where(rho < -threshold, lambda_theta,
                 tf.where(rho > threshold, -lambda_theta, -rho * inverse_grad_sq))
    v_x = u_x + c * grad_x
    v_y = u_y + c * grad_y
    u_x = v_x + theta * _divergence(p_xx, p_xy)
    u_y = v_y + theta * _divergence(p_yx, p_yy)
    ux_x, ux_y = _forward_gradient(u_x)
    uy_x, uy_y = _forward_gradient(u_y)
    norm_x = 1.0 + tau_theta * tf.sqrt(ux_x**2 + ux_y**2 + 1e-12)
    norm_y = 1.0 + tau_theta * tf.sqrt(uy_x**2 + uy_y**2 + 1e-12)
    return (_ + 1, u_x, u_y, (p_xx + tau_theta * ux_x) / norm_x,
            (p_xy + tau_theta * ux_y) / norm_x, (p_yx + tau_theta * uy_x) / norm_y,
            (p_yy + tau_theta * uy_y) / norm_y)

  zeros = tf.zeros_like(image1)
  # A while loop (not Python unrolling) keeps the graph small and XLA's fusion sane.
  _, u_x, u_y, *_ = tf.while_loop(
      lambda i, *_: i < num_iterations,
      iteration, (tf.constant(0), zeros, zeros, zeros, zeros, zeros, zeros),
      maximum_iterations=num_iterations)
  return u_x, u_y


# XLA-compiled TV-L1; also used inside non-XLA graphs (a compiled cluster of its own).
_tvl1_xla = tf.function(_tvl1, jit_compile=True)


@keras.saving.register_keras_serializable(package="assemblenet")
class RepresentationFlow(keras.layers.Layer):
  """TV-L1 flow between consecutive frames, as a layer without trainable weights.

  The clip is turned to grey (channel mean) and the whole batch is rescaled to [0, 255] by
  its global min and max, as in the authors' code (so a clip's flow depends on the other
  clips of its batch only through that min/max). Flow is computed for the T-1 pairs
  (t, t+1) at once, all pairs and clips batched together; the last pair's flow is repeated
  so T is kept.

  Args:
    num_iterations: TV-L1 iterations (40 in AssembleNet).
    theta: TV-L1 theta (tightness of the u/v coupling).
    tv_lambda: TV-L1 lambda (weight of the data term).
    tau: time step of the dual update.
    jit_compile: run the iterations as one XLA-compiled function (same values up to float
      rounding; `False` runs them op by op).

  Shapes: `[N, T, H, W, C]` -> `[N, T, H, W, 2]` with channels (u_x, u_y).
  """

  def __init__(self,
               num_iterations=40,
               theta=0.3,
               tv_lambda=0.15,
               tau=0.25,
               jit_compile=True,
               **kwargs):
    super().__init__(**kwargs)
    if num_iterations < 1:
      raise ValueError(f"`num_iterations` must be >= 1. Received: {num_iterations}")
    self.num_iterations = num_iterations
    self.theta = theta
    self.tv_lambda = tv_lambda
    self.tau = tau
    self.jit_compile = jit_compile

  def call(self, inputs):
    if inputs.shape.rank != 5:
      raise ValueError(
          f"RepresentationFlow expects a clip [N, T, H, W, C]. Received: {inputs.shape}")
    num_frames, height, width = inputs.shape[1:4]
    if num_frames is not None and num_frames < 2:
      raise ValueError(
          f"RepresentationFlow needs at least 2 frames. Received: shape {inputs.shape}")
    dtype = self.compute_dtype
    # [N, T, H, W, C] -> [N, T, H, W]
    gray = tf.reduce_mean(tf.cast(inputs, dtype), axis=-1)
    low, high = tf.reduce_min(gray), tf.reduce_max(gray)
    # A constant batch has no motion; leave it as it is instead of dividing by zero.
    gray = tf.where(high > low, 255.0 * (gray - low) / tf.maximum(high - low, 1e-12), gray)
    # [N, T, H, W] -> [N*(T-1), H, W] for each frame of the pairs (t, t+1).
    image1 = tf.reshape(gray[:, :-1], [-1, height, width])
    image2 = tf.reshape(gray[:, 1:], [-1, height, width])

    tvl1 = _tvl1_xla if self.jit_compile else _tvl1
    u_x, u_y = tvl1(image1, image2, self.num_iterations, self.theta, self.tv_lambda,
                    self.tau)
    # `_tvl1_xla` is one tf.function for the process: a graph may reuse a trace made for a
    # more general shape (an unknown batch), whose outputs do not know the batch.
    u_x.set_shape(image1.shape)
    u_y.set_shape(image1.shape)

    # [N*(T-1), H, W] x 2 -> [N, T-1, H, W, 2]
    flow = tf.reshape(tf.stack([u_x, u_y], axis=-1),
                      [-1, num_frames - 1, height, width, 2])
    # Repeat the last pair's flow so every frame has one: [N, T, H, W, 2].
    return tf.concat([flow, flow[:, -1:]], axis=1)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (2,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_iterations": self.num_iterations,
        "theta": self.theta,
        "tv_lambda": self.tv_lambda,
        "tau": self.tau,
        "jit_compile": self.jit_compile,
    })
    return config
