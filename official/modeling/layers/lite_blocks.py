"""AssembleNet++lite building blocks: 3D inverted-bottleneck blocks, stems and head convs.

AssembleNet++lite (the authors' `assemblenet/assemblenet_plus_lite.py` in
google-research/google-research, described in the supplementary material of AssembleNet++,
ECCV 2020) replaces the (2+1)D ResNet bottlenecks with MobileNetV2/X3D-style inverted
bottlenecks of ordinary 3D convolutions, to fit one 16 GB GPU. Its convolutions work on clips
`[N, T, H, W, C]`; time is never downsampled. Like the rest of the package, the node-level
layers (`LiteStem`, `InvertedBottleneckGroup`, `LiteObjectStem`) exchange per-frame tensors
`[N*T, H, W, C]`, so the fusion, attention and head layers are shared with AssembleNet++.

Convolutions follow the authors' `conv3d_same_padding`: no bias, TF 'SAME' padding (also
when strided: for an even size the extra row goes after), the stride on H and W only, the
temporal dilation on T only, and VarianceScaling(1, fan_in, truncated normal) kernels.
Batch norm: momentum 0.99, epsilon 1e-5.
"""

import keras
import tensorflow as tf

from official.modeling.layers import conv_2plus1d
from official.modeling.layers import stems

# The authors' lite conv1d_bn builds a dilated temporal kernel by hand, drawn from
# tf.random.truncated_normal(stddev=sqrt(2 / fan_in)) (not corrected for the truncation);
# VarianceScaling divides its stddev by 0.87962566..., so this scale gives the same draw law.
_HAND_DILATED_SCALE = 2.0 * 0.87962566103423978**2
# Width of the stems (the authors' `stem_filters = 24`) and of the head's two convs.
STEM_FILTERS = 24
HEAD_FILTERS = (432, 2048)


def conv3d(filters, kernel_size, name, spatial_strides=1, temporal_dilation=1,
           scale=1.0, dtype=None):
  """Conv3D without bias, 'SAME' padding, stride on H/W and dilation on T (authors' form)."""
  return keras.layers.Conv3D(
      filters,
      kernel_size,
      strides=(1, spatial_strides, spatial_strides),
      padding="same",
      dilation_rate=(temporal_dilation, 1, 1),
      use_bias=False,
      kernel_initializer=keras.initializers.VarianceScaling(
          scale=scale, mode="fan_in", distribution="truncated_normal"),
      name=name,
      dtype=dtype)


def temporal_conv3d(filters, temporal_dilation, name, dtype=None):
  """The authors' `conv1d_bn` convolution: a (3, 1, 1) kernel, dilated in time.

  A dilated kernel is initialised as the authors' hand-built one (He-normal, see
  `_HAND_DILATED_SCALE`); an undilated one as every other conv.
  """
  scale = _HAND_DILATED_SCALE if temporal_dilation > 1 else 1.0
  return conv3d(filters, (3, 1, 1), name, temporal_dilation=temporal_dilation, scale=scale,
                dtype=dtype)


def _check_positive_int(value, name):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"`{name}` must be a positive int. Received: {value!r}")


def _check_filters(filters):
  if (not isinstance(filters, (list, tuple)) or len(filters) != 3 or
      any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters)):
    raise ValueError(
        f"`filters` must be three positive ints (expand, middle, out). Received: {filters!r}")
  return tuple(filters)


def _downsample(size, strides):
  return None if size is None else -(-size // strides)


def _frames_to_clips(inputs, num_frames):
  _, height, width, channels = inputs.shape
  # [N*T, H, W, C] -> [N, T, H, W, C]
  return tf.reshape(inputs, [-1, num_frames, height, width, channels])


def _clips_to_frames(inputs):
  _, _, height, width, channels = inputs.shape
  # [N, T, H, W, C] -> [N*T, H, W, C]
  return tf.reshape(inputs, [-1, height, width, channels])


@keras.saving.register_keras_serializable(package="assemblenet")
class InvertedBottleneckBlock(keras.layers.Layer):
  """One inverted-bottleneck 3D residual block of AssembleNet++lite (5-D in and out).

  1x1x1 conv to `expand` channels, BN, ReLU; the middle conv to `middle` channels: with a
  spatial stride, a 1x3x3 strided conv, BN, ReLU, then a temporal 3x1x1 conv (dilated),
  BN, ReLU ((2+1)D); without, one 3x3x3 conv dilated in time, BN, ReLU; then a 1x1x1 conv
  to `out` channels whose BN gamma starts at zero. Output `relu(x + shortcut)`, the
  shortcut a strided 1x1x1 conv + BN (`use_projection`) or the identity. Authors'
  `inverted_bottleneck_3dblock` (assemblenet_plus_lite.py).

  Args:
    filters: (expand, middle, out) channel counts.
    spatial_strides: stride of the middle conv and of the projection shortcut on H and W.
    temporal_dilation: dilation in time of the middle conv's temporal taps.
    use_projection: projection shortcut (the first block of a node) instead of identity.

  Shapes: `[N, T, H, W, C]` -> `[N, T, ceil(H/s), ceil(W/s), out]`.
  """

  def __init__(self,
               filters,
               spatial_strides=1,
               temporal_dilation=1,
               use_projection=False,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = _check_filters(filters)
    _check_positive_int(spatial_strides, "spatial_strides")
    _check_positive_int(temporal_dilation, "temporal_dilation")
    if spatial_strides > 1 and not use_projection:
      raise ValueError(
          "A strided block needs the projection shortcut. Received: "
          f"spatial_strides={spatial_strides}, use_projection={use_projection}")
    self.spatial_strides = spatial_strides
    self.temporal_dilation = temporal_dilation
    self.use_projection = use_projection
    expand, middle, out = self.filters
    dtype = self.dtype_policy
    if use_projection:
      self.conv_shortcut = conv3d(out, 1, "conv_shortcut", spatial_strides, dtype=dtype)
      self.bn_shortcut = conv_2plus1d.batch_norm("bn_shortcut", dtype=dtype)
    self.conv_expand = conv3d(expand, 1, "conv_expand", dtype=dtype)
    self.bn_expand = conv_2plus1d.batch_norm("bn_expand", dtype=dtype)
    if spatial_strides > 1:
      self.conv_spatial = conv3d(middle, (1, 3, 3), "conv_spatial", spatial_strides,
                                 dtype=dtype)
      self.bn_spatial = conv_2plus1d.batch_norm("bn_spatial", dtype=dtype)
      self.conv_temporal = temporal_conv3d(middle, temporal_dilation, "conv_temporal",
                                           dtype=dtype)
      self.bn_temporal = conv_2plus1d.batch_norm("bn_temporal", dtype=dtype)
    else:
      self.conv_3d = conv3d(middle, 3, "conv_3d", temporal_dilation=temporal_dilation,
                            dtype=dtype)
      self.bn_3d = conv_2plus1d.batch_norm("bn_3d", dtype=dtype)
    self.conv_project = conv3d(out, 1, "conv_project", dtype=dtype)
    self.bn_project = conv_2plus1d.batch_norm("bn_project", zero_init=True, dtype=dtype)

  def _middle(self):
    if self.spatial_strides > 1:
      return [(self.conv_spatial, self.bn_spatial), (self.conv_temporal, self.bn_temporal)]
    return [(self.conv_3d, self.bn_3d)]

  def build(self, input_shape):
    if len(input_shape) != 5:
      raise ValueError(
          f"{self.name} expects clips [N, T, H, W, C]. Received: shape {input_shape}")
    if not self.use_projection and input_shape[-1] != self.filters[-1]:
      raise ValueError(
          f"An identity shortcut needs {self.filters[-1]} input channels. "
          f"Received: input shape {input_shape}")
    if self.use_projection:
      self.conv_shortcut.build(input_shape)
      self.bn_shortcut.build(self.conv_shortcut.compute_output_shape(input_shape))
    shape = input_shape
    for conv, bn in [(self.conv_expand, self.bn_expand)] + self._middle() + [
        (self.conv_project, self.bn_project)]:
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
      bn.build(shape)

  def call(self, inputs, training=None):
    shortcut = inputs
    if self.use_projection:
      shortcut = self.bn_shortcut(self.conv_shortcut(inputs), training=training)
    x = tf.nn.relu(self.bn_expand(self.conv_expand(inputs), training=training))
    for conv, bn in self._middle():
      x = tf.nn.relu(bn(conv(x), training=training))
    x = self.bn_project(self.conv_project(x), training=training)
    return tf.nn.relu(x + shortcut)

  def compute_output_shape(self, input_shape):
    n, t, height, width, _ = input_shape
    s = self.spatial_strides
    return (n, t, _downsample(height, s), _downsample(width, s), self.filters[-1])

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": list(self.filters),
        "spatial_strides": self.spatial_strides,
        "temporal_dilation": self.temporal_dilation,
        "use_projection": self.use_projection,
    })
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class InvertedBottleneckGroup(keras.layers.Layer):
  """The inverted-bottleneck blocks of one AssembleNet++lite node (authors' `block_group`).

  Block 0 has the projection shortcut and the spatial stride, the others identity
  shortcuts; all share `filters` and the temporal dilation.

  Args:
    filters: (expand, middle, out) of every block; the node outputs `out` channels.
    num_blocks: number of blocks (`structures.LITE_BLOCKS_PER_LEVEL[level]`).
    num_frames: frames per clip T.
    spatial_strides: spatial stride of the first block.
    temporal_dilation: temporal dilation of the middle convs.

  Shapes: `[N*T, H, W, C]` -> `[N*T, ceil(H/s), ceil(W/s), out]` (5-D clips inside).
  """

  def __init__(self,
               filters,
               num_blocks,
               num_frames,
               spatial_strides=1,
               temporal_dilation=1,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = _check_filters(filters)
    _check_positive_int(num_blocks, "num_blocks")
    _check_positive_int(num_frames, "num_frames")
    self.num_blocks = num_blocks
    self.num_frames = num_frames
    self.spatial_strides = spatial_strides
    self.temporal_dilation = temporal_dilation
    self.blocks = [
        InvertedBottleneckBlock(
            self.filters,
            spatial_strides=spatial_strides if index == 0 else 1,
            temporal_dilation=temporal_dilation,
            use_projection=index == 0,
            name=f"block_{index}",
            dtype=self.dtype_policy) for index in range(num_blocks)
    ]

  def build(self, input_shape):
    shape = (None, self.num_frames) + tuple(input_shape[1:])
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, inputs, training=None):
    x = _frames_to_clips(inputs, self.num_frames)
    for block in self.blocks:
      x = block(x, training=training)
    return _clips_to_frames(x)

  def compute_output_shape(self, input_shape):
    s = self.spatial_strides
    return (input_shape[0], _downsample(input_shape[1], s), _downsample(input_shape[2], s),
            self.filters[-1])

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": list(self.filters),
        "num_blocks": self.num_blocks,
        "num_frames": self.num_frames,
        "spatial_strides": self.spatial_strides,
        "temporal_dilation": self.temporal_dilation,
    })
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class LiteStem(keras.layers.Layer):
  """RGB or flow stem of AssembleNet++lite (authors' `lite_conv_stem`).

  1x3x3 stride-2 conv, BN, ReLU, then a 3x1x1 temporal conv (the stem's dilation), BN,
  ReLU. No max-pool: the lite stems end at half resolution (224 -> 112), where the full
  network's stems end at a quarter.

  Args:
    filters: output channels (24 in the authors' network, for every stem).
    num_frames: frames per clip T.
    temporal_dilation: dilation of the temporal conv (the stem node's second entry).

  Shapes: `[N, T, H, W, C]` -> `[N*T, ceil(H/2), ceil(W/2), filters]`.
  """

  def __init__(self, filters, num_frames, temporal_dilation=1, **kwargs):
    super().__init__(**kwargs)
    _check_positive_int(filters, "filters")
    _check_positive_int(num_frames, "num_frames")
    _check_positive_int(temporal_dilation, "temporal_dilation")
    self.filters = filters
    self.num_frames = num_frames
    self.temporal_dilation = temporal_dilation
    dtype = self.dtype_policy
    self.conv_spatial = conv3d(filters, (1, 3, 3), "conv_spatial", 2, dtype=dtype)
    self.bn_spatial = conv_2plus1d.batch_norm("bn_spatial", dtype=dtype)
    self.conv_temporal = temporal_conv3d(filters, temporal_dilation, "conv_temporal",
                                         dtype=dtype)
    self.bn_temporal = conv_2plus1d.batch_norm("bn_temporal", dtype=dtype)

  def build(self, input_shape):
    if len(input_shape) != 5:
      raise ValueError(
          f"{self.name} expects a clip [N, T, H, W, C]. Received: shape {input_shape}")
    self.conv_spatial.build(input_shape)
    shape = self.conv_spatial.compute_output_shape(input_shape)
    self.bn_spatial.build(shape)
    self.conv_temporal.build(shape)
    self.bn_temporal.build(shape)

  def call(self, inputs, training=None):
    if inputs.shape[1] is not None and inputs.shape[1] != self.num_frames:
      raise ValueError(
          f"{self.name} was built for num_frames={self.num_frames}, but the clip has "
          f"{inputs.shape[1]} frames. Received: shape {inputs.shape}")
    x = tf.nn.relu(self.bn_spatial(self.conv_spatial(inputs), training=training))
    x = tf.nn.relu(self.bn_temporal(self.conv_temporal(x), training=training))
    return _clips_to_frames(x)

  def compute_output_shape(self, input_shape):
    _, _, height, width, _ = input_shape
    return (None, _downsample(height, 2), _downsample(width, 2), self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "num_frames": self.num_frames,
        "temporal_dilation": self.temporal_dilation,
    })
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class LiteObjectStem(keras.layers.Layer):
  """Object stem at the lite stems' resolution: the 2x2/2 max-pool of one-hot class maps.

  The authors' lite file has no working object stem (its stem type -3 branch feeds `None`
  to an RGB-style conv stem and never adds the result to the graph). This one does what
  the full AssembleNet++ object stem does, at the lite resolution: no learned weights, the
  per-frame one-hot object map max-pooled to the size of the RGB and flow stems' output
  (H/2 instead of H/4). It runs `stems.ObjectStem` (ids in, 4x4/4 pooled one-hot out, no
  full-size one-hot materialised) on the ids repeated 2x along H and W, which for even H
  and W is exactly the 2x2/2 max-pool of the one-hot map.

  Args:
    num_frames: frames per clip T.
    num_classes: K, the number of object classes (ids outside [0, K) count as no class).

  Shapes: uint8/int ids `[N, T, H, W]` -> `[N*T, ceil(H/2), ceil(W/2), K]` (0/1 values).
  """

  def __init__(self, num_frames, num_classes, **kwargs):
    super().__init__(**kwargs)
    _check_positive_int(num_frames, "num_frames")
    _check_positive_int(num_classes, "num_classes")
    self.num_frames = num_frames
    self.num_classes = num_classes
    self.object_stem = stems.ObjectStem(num_frames, num_classes=num_classes,
                                        name="object_stem", dtype=self.dtype_policy)

  def call(self, inputs):
    if inputs.shape.rank != 4:
      raise ValueError(
          f"{self.name} expects class ids [N, T, H, W]. Received: shape {inputs.shape}")
    # [N, T, H, W] -> [N, T, 2H, 2W]: each id covers a 2x2 patch.
    doubled = tf.repeat(tf.repeat(inputs, 2, axis=2), 2, axis=3)
    return self.object_stem(doubled)

  def compute_output_shape(self, input_shape):
    _, _, height, width = input_shape
    return (None, _downsample(height, 2), _downsample(width, 2), self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({"num_frames": self.num_frames, "num_classes": self.num_classes})
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class LiteHeadConvs(keras.layers.Layer):
  """The lite head's two pointwise convs before pooling (authors' `lite_one_stream_head`).

  1x1x1 conv to 432 channels, BN, ReLU, 1x1x1 conv to 2048, BN, ReLU. A 1x1x1 Conv3D is a
  1x1 conv of every frame, so this runs as Conv2D on frames (same weights count; the BN
  folds into the conv in inference).

  Args:
    filters: the two convs' widths, (432, 2048) in the authors' network.

  Shapes: `[N*T, H, W, C]` -> `[N*T, H, W, filters[1]]`.
  """

  def __init__(self, filters=HEAD_FILTERS, **kwargs):
    super().__init__(**kwargs)
    if (not isinstance(filters, (list, tuple)) or len(filters) != 2 or
        any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters)):
      raise ValueError(f"`filters` must be two positive ints. Received: {filters!r}")
    self.filters = tuple(filters)
    dtype = self.dtype_policy
    self.convs = [
        conv_2plus1d.spatial_conv(width, 1, 1, name=f"conv_{i}", dtype=dtype)
        for i, width in enumerate(self.filters)
    ]
    self.bns = [conv_2plus1d.batch_norm(f"bn_{i}", dtype=dtype) for i in range(2)]

  def build(self, input_shape):
    shape = input_shape
    for conv, bn in zip(self.convs, self.bns):
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
      bn.build(shape)

  def call(self, inputs, training=None):
    x = inputs
    for conv, bn in zip(self.convs, self.bns):
      x = tf.nn.relu(conv_2plus1d.conv_batch_norm(conv, bn, x, training))
    return x

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters[-1],)

  def get_config(self):
    config = super().get_config()
    config.update({"filters": list(self.filters)})
    return config
