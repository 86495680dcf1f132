"""Interleaved (2+1)D residual bottleneck blocks: one `BlockGroup` per AssembleNet node."""

import keras
import tensorflow as tf

from official.modeling.layers import conv_2plus1d

# Width of the middle (3x3) conv of a bottleneck, by block level (AssembleNet, Appendix A).
INTER_FILTERS_BY_LEVEL = (64, 128, 256, 512)


@keras.saving.register_keras_serializable(package="assemblenet")
class BottleneckBlock(keras.layers.Layer):
  """One residual bottleneck block of an AssembleNet node.

  Layer 1 is either a temporal conv (kernel 3, the node's dilation) or a 1x1 conv to
  `filters`; layer 2 a 3x3 conv to `inter_filters` carrying the spatial stride; layer 3 a
  1x1 conv to `4 * filters` whose batch-norm gamma starts at zero, so the block starts as
  its shortcut. Output `relu(layers(x) + shortcut(x))`. Every conv is followed by BN
  (momentum 0.99, epsilon 1e-5).

  Args:
    filters: bottleneck width; the block outputs `4 * filters` channels.
    inter_filters: width of the 3x3 conv.
    num_frames: frames per clip (for the temporal conv).
    spatial_strides: stride of the 3x3 conv and of the projection shortcut.
    temporal_dilation: dilation of the temporal conv.
    use_projection: 1x1 conv + BN shortcut (first block of a node) instead of identity.
    temporal_first: layer 1 is the temporal conv (odd block indices) instead of a 1x1 conv.

  Shapes: `[N*T, H, W, C]` -> `[N*T, ceil(H/s), ceil(W/s), 4*filters]`.
  """

  def __init__(self,
               filters,
               inter_filters,
               num_frames,
               spatial_strides=1,
               temporal_dilation=1,
               use_projection=False,
               temporal_first=False,
               **kwargs):
    super().__init__(**kwargs)
    if spatial_strides < 1:
      raise ValueError(f"`spatial_strides` must be >= 1. Received: {spatial_strides}")
    self.filters = filters
    self.inter_filters = inter_filters
    self.num_frames = num_frames
    self.spatial_strides = spatial_strides
    self.temporal_dilation = temporal_dilation
    self.use_projection = use_projection
    self.temporal_first = temporal_first

    dtype = self.dtype_policy
    if use_projection:
      self.conv_shortcut = conv_2plus1d.spatial_conv(
          4 * filters, 1, spatial_strides, name="conv_shortcut", dtype=dtype)
      self.bn_shortcut = conv_2plus1d.batch_norm("bn_shortcut", dtype=dtype)
    if temporal_first:
      self.conv_reduce = conv_2plus1d.TemporalConv(
          filters, 3, num_frames, temporal_dilation, name="conv_temporal", dtype=dtype)
      self.bn_reduce = conv_2plus1d.batch_norm("bn_temporal", dtype=dtype)
    else:
      self.conv_reduce = conv_2plus1d.spatial_conv(
          filters, 1, 1, name="conv_pointwise", dtype=dtype)
      self.bn_reduce = conv_2plus1d.batch_norm("bn_pointwise", dtype=dtype)
    self.conv_spatial = conv_2plus1d.spatial_conv(
        inter_filters, 3, spatial_strides, name="conv_spatial", dtype=dtype)
    self.bn_spatial = conv_2plus1d.batch_norm("bn_spatial", dtype=dtype)
    self.conv_expand = conv_2plus1d.spatial_conv(
        4 * filters, 1, 1, name="conv_expand", dtype=dtype)
    self.bn_expand = conv_2plus1d.batch_norm("bn_expand", zero_init=True, dtype=dtype)

  def build(self, input_shape):
    if not self.use_projection and input_shape[-1] != 4 * self.filters:
      raise ValueError(
          f"An identity shortcut needs {4 * self.filters} input channels. "
          f"Received: input shape {input_shape}")
    # Build eagerly so that weights exist (and load) before the first call.
    if self.use_projection:
      self.conv_shortcut.build(input_shape)
      shortcut_shape = self.conv_shortcut.compute_output_shape(input_shape)
      self.bn_shortcut.build(shortcut_shape)
    self.conv_reduce.build(input_shape)
    shape = tuple(input_shape[:-1]) + (self.filters,)
    self.bn_reduce.build(shape)
    if self.spatial_strides > 1:
      shape = self._padded_shape(shape, 3)
    self.conv_spatial.build(shape)
    shape = self.conv_spatial.compute_output_shape(shape)
    self.bn_spatial.build(shape)
    self.conv_expand.build(shape)
    self.bn_expand.build(tuple(shape[:-1]) + (4 * self.filters,))

  def _padded_shape(self, shape, kernel_size):
    pad = kernel_size - 1
    grow = lambda size: None if size is None else size + pad
    return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

  def call(self, inputs, training=None):
    conv_bn = conv_2plus1d.conv_batch_norm  # BN folded into the conv in inference
    shortcut = inputs
    if self.use_projection:
      shortcut = conv_bn(self.conv_shortcut, self.bn_shortcut, inputs, training)
    x = tf.nn.relu(conv_bn(self.conv_reduce, self.bn_reduce, inputs, training))
    x = conv_2plus1d.fixed_padding(x, 3, self.spatial_strides)
    x = tf.nn.relu(conv_bn(self.conv_spatial, self.bn_spatial, x, training))
    x = conv_bn(self.conv_expand, self.bn_expand, x, training)
    return tf.nn.relu(x + shortcut)

  def compute_output_shape(self, input_shape):
    s = self.spatial_strides
    down = lambda size: None if size is None else -(-size // s)
    return (input_shape[0], down(input_shape[1]), down(input_shape[2]), 4 * self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "inter_filters": self.inter_filters,
        "num_frames": self.num_frames,
        "spatial_strides": self.spatial_strides,
        "temporal_dilation": self.temporal_dilation,
        "use_projection": self.use_projection,
        "temporal_first": self.temporal_first,
    })
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class BlockGroup(keras.layers.Layer):
  """The stack of bottleneck blocks that makes one AssembleNet node (a "block group").

  Block 0 has the projection shortcut and the spatial stride; blocks alternate between a
  1x1 first layer (even index) and a temporal first layer (odd index), so a node mixes 2D
  and (2+1)D residual modules (AssembleNet, Appendix A).

  Args:
    filters: bottleneck width; the node outputs `4 * filters` channels.
    inter_filters: width of the 3x3 convs (`INTER_FILTERS_BY_LEVEL[level]`).
    num_blocks: number of bottleneck blocks (set by the network depth and node level).
    num_frames: frames per clip.
    spatial_strides: spatial stride of the first block.
    temporal_dilation: dilation of the temporal convs.

  Shapes: `[N*T, H, W, C]` -> `[N*T, ceil(H/s), ceil(W/s), 4*filters]`.
  """

  def __init__(self,
               filters,
               inter_filters,
               num_blocks,
               num_frames,
               spatial_strides=1,
               temporal_dilation=1,
               **kwargs):
    super().__init__(**kwargs)
    if num_blocks < 1:
      raise ValueError(f"`num_blocks` must be >= 1. Received: {num_blocks}")
    self.filters = filters
    self.inter_filters = inter_filters
    self.num_blocks = num_blocks
    self.num_frames = num_frames
    self.spatial_strides = spatial_strides
    self.temporal_dilation = temporal_dilation
    self.blocks = [
        BottleneckBlock(
            filters,
            inter_filters,
            num_frames,
            spatial_strides=spatial_strides if index == 0 else 1,
            temporal_dilation=temporal_dilation,
            use_projection=index == 0,
            temporal_first=index % 2 == 1,
            name=f"block_{index}",
            dtype=self.dtype_policy) for index in range(num_blocks)
    ]

  def build(self, input_shape):
    shape = input_shape
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, inputs, training=None):
    x = inputs
    for block in self.blocks:
      x = block(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    return self.blocks[0].compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "inter_filters": self.inter_filters,
        "num_blocks": self.num_blocks,
        "num_frames": self.num_frames,
        "spatial_strides": self.spatial_strides,
        "temporal_dilation": self.temporal_dilation,
    })
    return config
