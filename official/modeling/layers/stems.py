"""Input stems: RGB, optical flow and object segmentation (AssembleNet++, Sec. 3).

Each stem takes a clip `[N, T, H, W, C]` and returns frames `[N*T, H/4, W/4, C']`, the
layout every later node works in.
"""

import keras
import tensorflow as tf

from official.modeling.layers import conv_2plus1d


def _check_frames(layer, inputs):
  if inputs.shape.rank != 5:
    raise ValueError(
        f"{layer.name} expects a clip [N, T, H, W, C]. Received: shape {inputs.shape}")
  frames = inputs.shape[1]
  if frames is not None and frames != layer.num_frames:
    raise ValueError(
        f"{layer.name} was built for num_frames={layer.num_frames}, but the clip has "
        f"{frames} frames. Received: shape {inputs.shape}")


def _clip_to_frames(inputs):
  _, _, height, width, channels = inputs.shape
  # [N, T, H, W, C] -> [N*T, H, W, C]
  return tf.reshape(inputs, [-1, height, width, channels])


def _build_spatial_conv(conv, bn, input_shape):
  """Builds a stem's 7x7/2 conv for the `fixed_padding`-padded frames of clips of
  `input_shape`, and the batch norm after it; returns the conv's output shape."""
  _, _, height, width, channels = input_shape
  padded = (None, None if height is None else height + 6,
            None if width is None else width + 6, channels)
  conv.build(padded)
  shape = conv.compute_output_shape(padded)
  bn.build(shape)
  return shape


def _quarter(size, first_stride, second_stride):
  """Output size after two SAME-style downsamplings (ceil division each time)."""
  if size is None:
    return None
  size = -(-size // first_stride)
  return -(-size // second_stride)


@keras.saving.register_keras_serializable(package="assemblenet")
class RGBStem(keras.layers.Layer):
  """RGB stem: 7x7/2 conv, BN, ReLU, temporal conv (k=5), BN, ReLU, 3x3/2 max-pool.

  Args:
    filters: output channels (`128 // number_of_stems` in the paper's networks).
    num_frames: frames per clip T.
    temporal_dilation: dilation of the temporal conv (the stem node's second entry).

  Shapes: `[N, T, H, W, 3]` -> `[N*T, H/4, W/4, filters]` (224 -> 56).
  """

  def __init__(self, filters, num_frames, temporal_dilation=1, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.num_frames = num_frames
    self.temporal_dilation = temporal_dilation
    dtype = self.dtype_policy
    self.conv_spatial = conv_2plus1d.spatial_conv(
        filters, 7, 2, name="conv_spatial", dtype=dtype)
    self.bn_spatial = conv_2plus1d.batch_norm("bn_spatial", dtype=dtype)
    self.conv_temporal = conv_2plus1d.TemporalConv(
        filters, 5, num_frames, temporal_dilation, name="conv_temporal", dtype=dtype)
    self.bn_temporal = conv_2plus1d.batch_norm("bn_temporal", dtype=dtype)
    self.max_pool = keras.layers.MaxPooling2D(
        3, 2, padding="same", name="max_pool", dtype=dtype)

  def build(self, input_shape):
    shape = _build_spatial_conv(self.conv_spatial, self.bn_spatial, input_shape)
    self.conv_temporal.build(shape)
    self.bn_temporal.build(shape)

  def call(self, inputs, training=None):
    _check_frames(self, inputs)
    x = conv_2plus1d.fixed_padding(_clip_to_frames(inputs), 7, 2)
    conv_bn = conv_2plus1d.conv_batch_norm  # BN folded into the conv in inference
    x = tf.nn.relu(conv_bn(self.conv_spatial, self.bn_spatial, x, training))
    x = tf.nn.relu(conv_bn(self.conv_temporal, self.bn_temporal, x, training))
    return self.max_pool(x)

  def compute_output_shape(self, input_shape):
    _, _, height, width, _ = input_shape
    return (None, _quarter(height, 2, 2), _quarter(width, 2, 2), self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "num_frames": self.num_frames,
        "temporal_dilation": self.temporal_dilation,
    })
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class FlowStem(keras.layers.Layer):
  """Optical-flow stem: 7x7/2 conv, BN, ReLU, 2x2/2 max-pool (no temporal conv).

  The authors' flow stem ignores its node's temporal dilation; so does this layer.

  Args:
    filters: output channels.
    num_frames: frames per clip T.

  Shapes: flow `[N, T, H, W, 2]` -> `[N*T, H/4, W/4, filters]`.
  """

  def __init__(self, filters, num_frames, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.num_frames = num_frames
    dtype = self.dtype_policy
    self.conv_spatial = conv_2plus1d.spatial_conv(
        filters, 7, 2, name="conv_spatial", dtype=dtype)
    self.bn_spatial = conv_2plus1d.batch_norm("bn_spatial", dtype=dtype)
    self.max_pool = keras.layers.MaxPooling2D(
        2, 2, padding="same", name="max_pool", dtype=dtype)

  def build(self, input_shape):
    _build_spatial_conv(self.conv_spatial, self.bn_spatial, input_shape)

  def call(self, inputs, training=None):
    _check_frames(self, inputs)
    x = conv_2plus1d.fixed_padding(_clip_to_frames(inputs), 7, 2)
    x = tf.nn.relu(
        conv_2plus1d.conv_batch_norm(self.conv_spatial, self.bn_spatial, x, training))
    return self.max_pool(x)

  def compute_output_shape(self, input_shape):
    _, _, height, width, _ = input_shape
    return (None, _quarter(height, 2, 2), _quarter(width, 2, 2), self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({"filters": self.filters, "num_frames": self.num_frames})
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class ObjectStem(keras.layers.Layer):
  """Object stem: a 4x4/4 max-pool of per-frame one-hot object-class maps; no weights.

  AssembleNet++ (Sec. 3.1) feeds per-frame ADE-20K segmentation maps (150 classes +
  "other" = 151 channels) to the network; its object stem is a 4x4 stride-4 SAME max-pool
  of the one-hot map (authors' `assemblenet_plus.py`). The stem takes the class-id maps
  as TFDS stores them and computes the pooled one-hot directly at the output size:
  channel k of a 4x4 window is 1 when any of its 16 pixels has id k. That equals the
  max-pool of the one-hot map exactly, without the full-size float one-hot (8 x 224 x
  224 x 151 floats are 242 MB per clip).

  Args:
    num_frames: frames per clip T.
    num_classes: K, the number of object classes (channels of the output). Ids outside
      [0, K) count as no class (all-zero channels), as padding does.

  Shapes: integer ids `[N, T, H, W]` -> `[N*T, ceil(H/4), ceil(W/4), K]` in the layer's
  compute dtype.
  """

  def __init__(self, num_frames, num_classes=151, **kwargs):
    super().__init__(**kwargs)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")
    self.num_frames = num_frames
    self.num_classes = num_classes

  def call(self, inputs):
    if inputs.shape.rank != 4 or not inputs.dtype.is_integer:
      raise ValueError(
          f"{self.name} expects integer class ids [N, T, H, W]. Received: shape "
          f"{inputs.shape}, dtype {inputs.dtype.name}")
    _check_frames(self, inputs[..., None])
    _, _, height, width = inputs.shape
    out_height, out_width = -(-height // 4), -(-width // 4)
    # Pad as the SAME max-pool does, with an id that one-hot encodes to no class.
    pad_h, pad_w = 4 * out_height - height, 4 * out_width - width
    ids = tf.cast(tf.reshape(inputs, [-1, height, width]), tf.int32)
    ids = tf.pad(ids, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                       [pad_w // 2, pad_w - pad_w // 2]], constant_values=self.num_classes)
    # Negative ids count as no class too (bincount ignores only ids >= K).
    ids = tf.where(ids < 0, self.num_classes, ids)
    # [N*T, 4h, 4w] -> [N*T, h, 4, w, 4] -> [N*T, h, w, 16]: the 16 ids of each window.
    ids = tf.reshape(ids, [-1, out_height, 4, out_width, 4])
    ids = tf.reshape(tf.transpose(ids, [0, 1, 3, 2, 4]), [-1, out_height, out_width, 16])
    # The max over the window's 16 one-hots, accumulated one position at a time: never more
    # than two [N*T, h, w, K] maps (1/16 of the full-size one-hot each), and only
    # elementwise ops, which XLA compiles well. (A per-window binary `tf.math.bincount` is
    # faster eagerly but about 100x slower under jit_compile=True: 10 s per demo step.)
    present = None
    for position in range(16):
      hot = tf.one_hot(ids[..., position], self.num_classes, dtype=self.compute_dtype)
      present = hot if present is None else tf.maximum(present, hot)
    return present

  def compute_output_shape(self, input_shape):
    _, _, height, width = input_shape
    return (None, _quarter(height, 4, 1), _quarter(width, 4, 1), self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_frames": self.num_frames,
        "num_classes": self.num_classes,
    })
    return config
