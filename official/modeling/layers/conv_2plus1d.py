"""(2+1)D building pieces in the (N*T)HWC layout.

The backbone keeps video tensors as `[N*T, H, W, C]` so that every spatial layer is a plain
Conv2D over a large batch of frames. Only the temporal convolution needs the frames of a
clip next to each other: it views the tensor as `[N, T, H*W, C]` and convolves with a
`(k, 1)` kernel, which is exactly a `(k, 1, 1)` Conv3D over `[N, T, H, W, C]` (AssembleNet,
ICLR 2020, Sec. 3 and Appendix A).
"""

import keras
import tensorflow as tf

from official import runtime
from official.modeling.layers import batch_norm as batch_norm_lib

# Authors' choices for every conv and batch norm of the backbone.
BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-5


def conv_initializer():
  """He-style fan-in initialiser the authors use for every convolution."""
  return keras.initializers.VarianceScaling(
      scale=1.0, mode="fan_in", distribution="truncated_normal")


def batch_norm(name, zero_init=False, dtype=None):
  """Batch norm with the authors' momentum/epsilon; `zero_init` zeroes gamma.

  A `FusedBatchNorm`: Keras' `BatchNormalization` that trains with TF's fused kernel and
  updates the moving variance with the unbiased batch variance, as the authors' TF1 code.
  """
  return batch_norm_lib.FusedBatchNorm(
      momentum=BATCH_NORM_MOMENTUM,
      epsilon=BATCH_NORM_EPSILON,
      gamma_initializer="zeros" if zero_init else "ones",
      name=name,
      dtype=dtype)


def _rotated(kernel):
  """`[kh, kw, C, F]` -> `[kh, kw, F, C]` with both spatial axes reversed.

  For a stride-1 'SAME' convolution with an odd kernel, the gradient with respect to its
  input is the 'SAME' convolution of the upstream gradient with this kernel (the
  transposed convolution of a stride-1 conv is a conv with the kernel turned by 180
  degrees and its channel axes swapped).
  """
  return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


def _eigen_kernels():
  """Whether convolutions here run on TF's Eigen CPU kernels: oneDNN's off and no GPU.

  TensorFlow picks its CPU kernel library per process: oneDNN's unless
  `TF_ENABLE_ONEDNN_OPTS=0` (or, by default, on CPUs without AVX512_VNNI, AVX512_BF16 or
  AMX), Eigen's then. Some backward forms below win only with Eigen's kernels and lose
  with oneDNN's (or on a GPU), so they are chosen only when this holds. TF's query is not
  public; if it is missing (`runtime.onednn_kernels()` is None) the answer is False, which
  keeps TF's own gradient ops.
  """
  return runtime.onednn_kernels() is False and not tf.config.list_logical_devices("GPU")


def _kernel_gradient_as_conv(inputs, upstream, kernel_shape, strides):
  """Kernel gradient of a 'VALID' Conv2D as one forward Conv2D with batch and channels swapped.

  `dW[a, b, c, f] = sum over n, i, j of X[n, s*i + a, s*j + b, c] * dY[n, i, j, f]` is a
  'VALID' convolution of X viewed as `[C, H, W, N]` (channels as the batch) by dY viewed as
  `[Ho, Wo, N, F]` (a kernel of the output's size, dilated by the stride s): its
  `[C, kh, kw, F]` output, transposed, is the gradient. A stride s > 1 goes through
  space-to-batch (`tf.nn.with_space_to_batch`: s*s phases of X, one undilated conv) rather
  than a dilated conv, whose own gradient TF's CPU kernels cannot compute (second-order
  gradients); it was also 5-11% faster. An empty batch (N = 0, e.g. a replica's share of
  a short last batch) gives zeros: a conv cannot take a kernel of 0 input channels.

  With TF's Eigen kernels (`_eigen_kernels`) this ran faster than `Conv2DBackpropFilter`
  (one thread, full_asnp50 at 8 x 224 x 224: 10.8 -> 8.4 ms at `[8, 56, 56, 32]` -> 64
  channels, 3x3; 13.2 -> 10.1 ms at `[8, 14, 14, 256]` -> 256; the 7x7/2 RGB stem 35.7 ->
  13.8 ms) but slower for strided 3x3 convs of many channels (16.0 -> 22.7 ms at
  `[8, 58, 58, 128]`), and with oneDNN's kernels 1.5-2.2x slower everywhere
  (docs/performance.md, issue 18).

  Args:
    inputs: the conv's input `[N, H, W, C]`, already padded ('VALID').
    upstream: the gradient of its output, `[N, Ho, Wo, F]`, Ho and Wo known.
    kernel_shape: `(kh, kw, C, F)`.
    strides: the stride s of both spatial axes.

  Returns:
    `[kh, kw, C, F]`.
  """
  taps_h, taps_w = kernel_shape[:2]
  batch, rows, cols, _ = upstream.shape

  def product():
    # Only the input rows and columns that some tap reads: [C, (Ho-1)*s + kh, ..., N]
    positions = tf.transpose(
        inputs[:, :(rows - 1) * strides + taps_h, :(cols - 1) * strides + taps_w],
        [3, 1, 2, 0])
    weights = tf.transpose(upstream, [1, 2, 0, 3])  # [Ho, Wo, N, F]
    conv = lambda x, num_spatial_dims, padding: tf.nn.conv2d(x, weights, 1, padding)
    if strides == 1:
      correlation = conv(positions, 2, "VALID")
    else:
      correlation = tf.nn.with_space_to_batch(positions, [strides, strides], "VALID", conv)
    return tf.transpose(correlation, [1, 2, 0, 3])  # [C, kh, kw, F] -> [kh, kw, C, F]

  zeros = lambda: tf.zeros(kernel_shape, upstream.dtype)
  if batch is None:
    return tf.cond(tf.shape(upstream)[0] > 0, product, zeros)
  return product() if batch else zeros()


def _channel_product(positions, upstream):
  """`positions^T upstream`: `[M, C]`, `[M, F]` -> `[C, F]`, summed over the M positions.

  The kernel gradient of a 1x1 conv (and of each tap of a temporal conv) is this one
  long-contraction matmul. When C > F and M >= C it is computed as `[F, M] x [M, C]`
  followed by a transpose of the small `[F, C]` product, otherwise as `[C, M] x [M, F]`:
  with C > F, TF's CPU matmul ran the former up to 2.5x faster on one thread (Eigen 4.1
  against 1.6 ms and oneDNN 1.45 against 1.25 ms at M = 8*56*56, 128 -> 32 channels;
  Eigen 8.0 against 4.5 ms at a temporal conv's M = 1568, 1024 -> 256), but not on the
  short contractions at 7 x 7 frames (M = 392, 2048 -> 512: Eigen 5.6 against 6.8 ms),
  and with C < F it lost (docs/performance.md, issue 18). Equal up to float rounding.
  An unknown M (traced without a batch size) counts as long.
  """
  length, channels = positions.shape
  filters = upstream.shape[-1]
  if channels > filters and (length is None or length >= channels):
    # [F, M] x [M, C] -> [F, C] -> [C, F]
    return tf.transpose(tf.matmul(upstream, positions, transpose_a=True))
  # [C, M] x [M, F] -> [C, F]
  return tf.matmul(positions, upstream, transpose_a=True)


def _pointwise_kernel_gradient(inputs, upstream):
  """Kernel gradient of a stride-1 1x1 conv: `[N, H, W, C]`, `[N, H, W, F]` ->
  `[1, 1, C, F]`, one `_channel_product` over the N*H*W positions."""
  channels, filters = inputs.shape[-1], upstream.shape[-1]
  product = _channel_product(tf.reshape(inputs, [-1, channels]),
                             tf.reshape(upstream, [-1, filters]))
  return tf.reshape(product, [1, 1, channels, filters])


@tf.custom_gradient
def _same_conv(inputs, kernel):
  """Stride-1 'SAME' Conv2D with an odd kernel, and a backward pass of cheap ops.

  Forward: `tf.nn.conv2d`. Input gradient: a forward conv of the upstream gradient with
  `_rotated(kernel)` instead of `Conv2DBackpropInput`. Kernel gradient: for a 1x1 kernel
  one matmul over the M = N*H*W positions (`_pointwise_kernel_gradient`); otherwise, with
  TF's Eigen kernels, `_kernel_gradient_as_conv`, and with oneDNN's `Conv2DBackpropFilter`
  as TF's own gradient. Equal to TF's gradient up to float
  rounding (conv_2plus1d_test). Why: over the 113 stride-1 spatial convs of full_asnp50
  (8 x 224 x 224, `benchmarks/conv_backward.py`, one shape at a time), with TF's default
  Eigen kernels (oneDNN's graph rewrites off, TF's default on AVX2-only CPUs) the input
  gradients took 544 ms as `Conv2DBackpropInput` and 251 ms in this form (their forward
  convs 225 ms), and the 80 1x1 kernel gradients 212 ms against 182 ms as matmuls; with
  oneDNN, 222 against 235 ms and 174 against 132 ms (docs/performance.md, issue 18).

  Args:
    inputs: `[N, H, W, C]`.
    kernel: `[kh, kw, C, F]`, kh and kw odd.

  Returns:
    `[N, H, W, F]`.
  """
  outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")

  def gradient(upstream):
    height, width = kernel.shape[:2]
    grad_inputs = tf.nn.conv2d(upstream, _rotated(kernel), strides=1, padding="SAME")
    if height == width == 1:
      grad_kernel = _pointwise_kernel_gradient(inputs, upstream)
    elif _eigen_kernels() and None not in upstream.shape[1:3]:
      padded = tf.pad(inputs, [[0, 0], [(height - 1) // 2] * 2, [(width - 1) // 2] * 2,
                               [0, 0]])
      grad_kernel = _kernel_gradient_as_conv(padded, upstream, kernel.shape, 1)
    else:
      grad_kernel = tf.raw_ops.Conv2DBackpropFilter(
          input=inputs, filter_sizes=tf.shape(kernel), out_backprop=upstream,
          strides=[1, 1, 1, 1], padding="SAME")
    return grad_inputs, grad_kernel

  return outputs, gradient


def _strided_pointwise_conv(inputs, kernel, strides, padding):
  """1x1 Conv2D with stride s > 1 (a projection shortcut), with a matmul input gradient.

  Forward: `tf.nn.conv2d`; output pixel (i, j) is input pixel (s*i, s*j) times the kernel,
  for 'SAME' and 'VALID' alike (a 1x1 kernel never pads). Input gradient: the upstream
  gradient times the kernel's transpose, one `[N*Ho*Wo, F] x [F, C]` matmul, spread onto
  the stride grid (zeros between) by a pad and a reshape, instead of TF's
  `Conv2DBackpropInput`. With TF's Eigen kernels (oneDNN's graph rewrites off, TF's
  default on AVX2-only CPUs) that op took 4.5x the CPU time at `[8, 14, 14, 1024]` -> 2048
  channels (one thread: 67 against 15 ms) and 1.8x at `[8, 28, 28, 512]` -> 1024 (17
  against 9.5 ms); with oneDNN's 12.7 against 8.5 and 9.5 against 8.5 ms
  (docs/performance.md, issue 18). The kernel gradient is TF's `Conv2DBackpropFilter`.

  Args:
    inputs: `[N, H, W, C]` with H and W known.
    kernel: `[1, 1, C, F]`.
    strides: the stride s of both spatial axes, a Python int > 1.
    padding: 'SAME' or 'VALID'.

  Returns:
    `[N, ceil(H / s), ceil(W / s), F]`.
  """

  @tf.custom_gradient
  def conv(inputs, kernel):
    outputs = tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding)

    def gradient(upstream):
      _, height, width, channels = inputs.shape
      _, rows, cols, filters = upstream.shape
      # [N*Ho*Wo, F] x [F, C] -> [N, Ho, 1, Wo, 1, C]
      grad_inputs = tf.matmul(tf.reshape(upstream, [-1, filters]),
                              tf.reshape(kernel, [channels, filters]), transpose_b=True)
      grad_inputs = tf.reshape(grad_inputs, [-1, rows, 1, cols, 1, channels])
      # Zeros after each pixel along both strides: [N, Ho, s, Wo, s, C] ->
      # [N, s*Ho, s*Wo, C], cut to [N, H, W, C] when s does not divide H or W.
      grad_inputs = tf.pad(grad_inputs, [[0, 0], [0, 0], [0, strides - 1], [0, 0],
                                         [0, strides - 1], [0, 0]])
      grad_inputs = tf.reshape(grad_inputs, [-1, rows * strides, cols * strides, channels])
      if rows * strides != height or cols * strides != width:
        grad_inputs = grad_inputs[:, :height, :width]
      grad_kernel = tf.raw_ops.Conv2DBackpropFilter(
          input=inputs, filter_sizes=tf.shape(kernel), out_backprop=upstream,
          strides=[1, strides, strides, 1], padding=padding)
      return grad_inputs, grad_kernel

    return outputs, gradient

  return conv(inputs, kernel)


def _few_channel_strided_conv(inputs, kernel, strides):
  """'VALID' strided Conv2D of few input channels (the RGB and flow stems' 7x7/2), with
  the kernel gradient of `_kernel_gradient_as_conv` (with TF's Eigen kernels
  `Conv2DBackpropFilter` took 2.6-3.2x its CPU time there); the input gradient is TF's.

  Args:
    inputs: `[N, H, W, C]`, already padded, H and W known.
    kernel: `[kh, kw, C, F]`.
    strides: the stride s > 1 of both spatial axes.

  Returns:
    `[N, (H - kh) // s + 1, (W - kw) // s + 1, F]`.
  """

  @tf.custom_gradient
  def conv(inputs, kernel):
    outputs = tf.nn.conv2d(inputs, kernel, strides=strides, padding="VALID")

    def gradient(upstream):
      grad_inputs = tf.raw_ops.Conv2DBackpropInput(
          input_sizes=tf.shape(inputs), filter=kernel, out_backprop=upstream,
          strides=[1, strides, strides, 1], padding="VALID")
      return grad_inputs, _kernel_gradient_as_conv(inputs, upstream, kernel.shape, strides)

    return outputs, gradient

  return conv(inputs, kernel)


# Strided convs of at most this many input channels take `_few_channel_strided_conv`.
_FEW_CHANNELS = 4


def conv2d(inputs, kernel, strides, padding):
  """`tf.nn.conv2d` of `[N, H, W, C]` by `[kh, kw, C, F]` ('SAME' or 'VALID'; `strides` as
  `tf.nn.conv2d` takes them). Square strides s: stride-1 'SAME' convs with odd kernels take
  `_same_conv`'s cheaper backward, strided 1x1 convs (with H and W known)
  `_strided_pointwise_conv`'s, and with TF's Eigen kernels strided 'VALID' convs of at
  most 4 input channels `_few_channel_strided_conv`'s; others TF's own."""
  if not isinstance(strides, int):
    # [s], [s, s] or [1, s, s, 1] -> s; anything else takes TF's own gradient.
    listed = [int(stride) for stride in strides]
    spatial = listed[1:3] if len(listed) == 4 and listed[0] == listed[3] == 1 else listed
    if len(spatial) not in (1, 2) or len(set(spatial)) != 1:
      return tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding)
    strides = spatial[0]
  kernel_height, kernel_width, channels = kernel.shape[:3]
  if strides == 1 and padding == "SAME" and kernel_height % 2 == 1 and kernel_width % 2 == 1:
    return _same_conv(inputs, kernel)
  if strides > 1 and None not in inputs.shape[1:3]:
    if kernel_height == kernel_width == 1:
      return _strided_pointwise_conv(inputs, kernel, strides, padding)
    if padding == "VALID" and channels <= _FEW_CHANNELS and _eigen_kernels():
      return _few_channel_strided_conv(inputs, kernel, strides)
  return tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding)


@keras.saving.register_keras_serializable(package="assemblenet")
class Conv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D` (channels last, no dilation or groups) computed by `conv2d`.

  Same weights, names, config and output as Keras' Conv2D; only the backward pass of
  stride-1 'SAME' convs with odd kernels differs (`_same_conv`). The class is called
  Conv2D on purpose: a .keras file stores a layer held in a list (the fusion's
  projections, the lite blocks' 1x1 convs) under its class name, so any other name would
  make files written before this class existed, with Keras' Conv2D, unloadable, and files
  written now unloadable by older code (tests/test_keras_file_compat.py).
  """

  def convolution_op(self, inputs, kernel):
    if (self.data_format != "channels_last" or self.groups != 1 or
        tuple(self.dilation_rate) != (1, 1) or self.strides[0] != self.strides[1]):
      return super().convolution_op(inputs, kernel)
    return conv2d(inputs, tf.convert_to_tensor(kernel), self.strides[0],
                  self.padding.upper())


def spatial_conv(filters, kernel_size, strides, name, dtype=None):
  """`Conv2D` without bias; strided convs expect `fixed_padding` to be applied first."""
  return Conv2D(
      filters,
      kernel_size,
      strides=strides,
      padding="same" if strides == 1 else "valid",
      use_bias=False,
      kernel_initializer=conv_initializer(),
      name=name,
      dtype=dtype)


def _fold_anchor(inputs):
  """What the inference fold waits for: `inputs`, or the tensor that a `Pad` op padded.

  Never the `Pad` itself: with oneDNN (on by default in TF on recent x86 CPUs, e.g. one
  with AVX512_BF16), the MklLayoutRewritePass graph pass merges a `Pad` into the conv or
  fused conv it feeds and moves the Pad's outgoing control edges onto the merged node.
  That node takes the folded kernel, so a fold waiting for the `Pad` would wait for its
  own conv: "N nodes in a cycle" for every strided conv after `fixed_padding`.
  Returns the list for `tf.control_dependencies` (empty when executing eagerly).
  """
  if tf.executing_eagerly():
    return []  # Ops run in program order: nothing to schedule.
  anchor = tf.convert_to_tensor(inputs)
  while anchor.op.type == "Pad":
    anchor = anchor.op.inputs[0]
  return [anchor]


def conv_batch_norm(conv, bn, inputs, training=None):
  """`bn(conv(inputs))`; in inference the batch norm is folded into the convolution.

  With `training` true this is exactly the two Keras layers. Otherwise BN is an affine map
  per output channel, `y * s + b` with `s = gamma / sqrt(moving_variance + epsilon)` and
  `b = beta - moving_mean * s`, so it is applied as the convolution with kernel `k * s`
  plus the bias `b`: one pass over the output instead of three, and TF's remapper fuses
  the conv with the bias add (and a following ReLU) into one kernel. Equal to the
  unfolded layers up to float rounding (`conv_2plus1d_test` checks both).

  Args:
    conv: a built `spatial_conv` (Conv2D without bias) or `TemporalConv`.
    bn: the built `BatchNormalization` that follows it.
    inputs: the conv's input `[N*T, H, W, C]`.
    training: the Keras training flag.
  """
  if training:
    return bn(conv(inputs), training=training)
  # Folded in float32 (a variable read may be autocast to a 16-bit compute dtype here).
  # The fold waits for the conv's input: otherwise a graph runs every layer's fold at the
  # start, and all folded kernels (a second copy of the weights) are alive at once.
  with tf.control_dependencies(_fold_anchor(inputs)):
    f32 = lambda variable: tf.cast(tf.identity(variable), tf.float32)
    scale = f32(bn.gamma) * tf.math.rsqrt(f32(bn.moving_variance) + bn.epsilon)
    bias = f32(bn.beta) - f32(bn.moving_mean) * scale
    # The kernel's last axis is the output channel for Conv2D and TemporalConv alike.
    kernel = tf.cast(f32(conv.kernel) * scale, conv.compute_dtype)
  if isinstance(conv, TemporalConv):
    outputs = conv.convolve(inputs, kernel)
  else:
    outputs = tf.nn.conv2d(inputs, kernel, strides=conv.strides,
                           padding=conv.padding.upper())
  return tf.nn.bias_add(outputs, tf.cast(bias, outputs.dtype))


def fixed_padding(inputs, kernel_size, strides):
  """Pads H and W by `(k-1)//2` before and the rest after when `strides > 1`.

  A strided conv then runs VALID, so the sampling grid does not depend on whether the input
  size is even or odd (TF's SAME would pad only after for even sizes).
  """
  if strides == 1 or kernel_size == 1:
    return inputs
  pad_total = kernel_size - 1
  pad_before = pad_total // 2
  pad_after = pad_total - pad_before
  return tf.pad(inputs, [[0, 0], [pad_before, pad_after], [pad_before, pad_after], [0, 0]])


@tf.custom_gradient
def _rows_conv(clips, kernel):
  """`(k, 1)` 'SAME' Conv2D of `[N, R, P, C]` by `[k, 1, C, F]`, with a matmul filter gradient.

  'SAME' in rows is the clip's zero padding: a TemporalConv's live taps run from -m to m
  (or m + 1 for an even kernel) rows around the centre, as TF's 'SAME' pads. (An explicit
  padding list would make TF fall back from oneDNN's backward kernels to Eigen's, 2-3x
  slower, on CPU.) The forward pass and the input gradient are convolutions. The
  kernel gradient is not: oneDNN's weight gradient of a `(k, 1)` kernel over a few rows
  (e.g. `[1, 4, 98, 2048]` at level 3) ran at a fifth of its forward's speed; as one
  matmul over the N*R*P positions per tap (`_channel_product`), the whole conv's forward
  + backward took half the time (e.g. 76 -> 40 ms at level 3, 148 -> 38 ms for a level-2
  dilation 4; docs/performance.md). The input gradient of an odd kernel is a forward conv with the
  kernel turned (`_rotated`), as for `_same_conv`: with Eigen's kernels these convs'
  `Conv2DBackpropInput`s were the slowest single ops of a training step (up to 61 ms each
  in the profile of docs/performance.md).
  """
  outputs = tf.nn.conv2d(clips, kernel, strides=1, padding="SAME")

  def gradient(upstream):
    taps, _, channels, filters = kernel.shape
    _, rows, positions, _ = clips.shape
    if taps % 2:
      # A forward conv with the kernel turned, as `_same_conv`.
      grad_clips = tf.nn.conv2d(upstream, _rotated(kernel), strides=1, padding="SAME")
    else:
      # An even kernel's 'SAME' padding is asymmetric, so the turned kernel would need the
      # padding mirrored: keep TF's op.
      grad_clips = tf.raw_ops.Conv2DBackpropInput(
          input_sizes=tf.shape(clips), filter=kernel, out_backprop=upstream,
          strides=[1, 1, 1, 1], padding="SAME")
    # Tap j of output row r reads input row r + j - c (c = (k - 1) // 2), so its kernel
    # gradient is sum_s X[s]^T dY[s - j + c]: the whole input against rows of the
    # upstream gradient shifted by j - c, zero outside the clip. With dY padded by
    # k - 1 - c rows before and c after, those rows are one contiguous range per clip.
    # (Shifting dY rather than X copies F channels per tap instead of C, e.g. 4x less
    # for a bottleneck's first conv.)
    center = (taps - 1) // 2
    padded = tf.pad(upstream, [[0, 0], [taps - 1 - center, center], [0, 0], [0, 0]])
    # [N, R + k - 1, P, F] -> [N, (R + k - 1) * P, F]
    padded = tf.reshape(padded, [-1, (rows + taps - 1) * positions, filters])
    # [N, R, P, C] -> [N*R*P, C]
    flat_clips = tf.reshape(clips, [-1, channels])
    grad_kernel = []
    for j in range(taps):
      start = (taps - 1 - j) * positions
      # [N, R*P, F] -> [N*R*P, F]
      shifted = tf.reshape(padded[:, start:start + rows * positions], [-1, filters])
      grad_kernel.append(_channel_product(flat_clips, shifted))
    # k x [C, F] -> [k, 1, C, F]
    return grad_clips, tf.stack(grad_kernel)[:, None]

  return outputs, gradient


@keras.saving.register_keras_serializable(package="assemblenet")
class TemporalConv(keras.layers.Layer):
  """1-D temporal convolution (the "+1" of (2+1)D) on `[N*T, H, W, C]` frames.

  Equal to a `(k, 1)` Conv2D over the `[N, T, H*W, C]` view (a `(k, 1, 1)` Conv3D), zero
  padded in time so T is kept ('SAME'), with an optional temporal dilation d.

  The dilation is folded into the layout instead of the kernel: frame `t = q*d + r` of a
  clip padded to `T' = d * ceil(T/d)` frames sits at row q, column `r*H*W + p` of the
  free reshape `[N, T'/d, d*H*W, C]`, and a dilated tap `t + j*d` is row `q + j` of the
  same column. So one undilated `(k, 1)` Conv2D over that view is the dilated conv (the
  padding frames are the conv's zeros), and its forward and backward are plain oneDNN
  convolutions on CPU (TF's CPU conv kernels cannot back-propagate through a dilation;
  the former matmul + shifted-sums form spent 16% of a training step in strided-slice
  gradients). Taps that fall outside the clip for every output frame
  (`|offset| >= num_frames`, e.g. dilation 8 on 8 frames) only ever see padding; they are
  skipped, which changes nothing numerically.

  Args:
    filters: output channels.
    kernel_size: temporal kernel length k (odd when dilated; ValueError otherwise).
    num_frames: frames per clip T (the layer regroups the N*T batch into clips).
    temporal_dilation: spacing between taps, in frames.

  Shapes: `[N*T, H, W, C]` -> `[N*T, H, W, filters]`. The kernel has shape
  `[k, 1, C, filters]`, i.e. the weights of a `(k, 1, 1)` Conv3D without the middle axis.
  """

  def __init__(self, filters, kernel_size, num_frames, temporal_dilation=1, **kwargs):
    super().__init__(**kwargs)
    for arg_name, value in (("filters", filters), ("kernel_size", kernel_size),
                            ("num_frames", num_frames),
                            ("temporal_dilation", temporal_dilation)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive int. Received: {value}")
    if kernel_size % 2 == 0 and temporal_dilation > 1:
      # 'SAME' for an even dilated kernel is ambiguous: a dilated Conv3D puts the taps half
      # a dilation earlier than this layer's row layout would.
      raise ValueError(
          "A dilated TemporalConv needs an odd `kernel_size` (the authors' are 3 and 5). "
          f"Received: kernel_size={kernel_size}, temporal_dilation={temporal_dilation}")
    self.filters = filters
    self.kernel_size = kernel_size
    self.num_frames = num_frames
    self.temporal_dilation = temporal_dilation
    center = (kernel_size - 1) // 2
    offsets = [(j - center) * temporal_dilation for j in range(kernel_size)]
    live = [j for j, offset in enumerate(offsets) if abs(offset) < num_frames]
    self._first_tap, self._last_tap = live[0], live[-1]
    # Rows of the folded view: ceil(T / d), or T when only the centre tap is live.
    self._fold = temporal_dilation if self._first_tap < self._last_tap else 1
    self._rows = -(-num_frames // self._fold)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel",
        shape=(self.kernel_size, 1, input_shape[-1], self.filters),
        initializer=conv_initializer())

  def call(self, inputs):
    return self.convolve(inputs, tf.cast(self.kernel, self.compute_dtype))

  def convolve(self, inputs, kernel):
    """The convolution with a given `[k, 1, C, filters]` kernel (e.g. a BN-folded one)."""
    if self._last_tap - self._first_tap + 1 < self.kernel_size:
      kernel = kernel[self._first_tap:self._last_tap + 1]  # live taps only
    _, height, width, channels = inputs.shape
    frames, fold, rows = self.num_frames, self._fold, self._rows
    # [N*T, H, W, C] -> [N, T, H*W, C]
    clips = tf.reshape(inputs, [-1, frames, height * width, channels])
    if rows * fold != frames:
      # [N, T, H*W, C] -> [N, T', H*W, C]: zero frames up to a multiple of d.
      clips = tf.pad(clips, [[0, 0], [0, rows * fold - frames], [0, 0], [0, 0]])
    # [N, T', H*W, C] -> [N, T'/d, d*H*W, C]
    clips = tf.reshape(clips, [-1, rows, fold * height * width, channels])
    outputs = _rows_conv(clips, kernel)
    if rows * fold != frames:
      # [N, T'/d, d*H*W, F] -> [N, T', H*W, F] -> [N, T, H*W, F]
      outputs = tf.reshape(outputs, [-1, rows * fold, height * width, self.filters])
      outputs = outputs[:, :frames]
    # -> [N*T, H, W, F]
    return tf.reshape(outputs, [-1, height, width, self.filters])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "kernel_size": self.kernel_size,
        "num_frames": self.num_frames,
        "temporal_dilation": self.temporal_dilation,
    })
    return config
