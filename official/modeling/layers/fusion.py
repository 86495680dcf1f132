"""Weighted multi-stream connections (AssembleNet, ICLR 2020, Sec. 3.1 and 3.3)."""

import math

import keras
import tensorflow as tf

from official.modeling.layers import attention
from official.modeling.layers import conv_2plus1d

ATTENTION_MODES = ("peer", "self", None)


def _as_edge_weight_list(edge_weights):
  if edge_weights is None:
    return None
  values = [float(w) for w in edge_weights]
  for w in values:
    if not 0.0 < w < 1.0:
      raise ValueError(
          "Edge weights are post-sigmoid values strictly between 0 and 1. "
          f"Received: {list(edge_weights)}")
  return values


@keras.saving.register_keras_serializable(package="assemblenet")
class WeightedFusion(keras.layers.Layer):
  """Fuses the incoming connections of a node into one tensor.

  1. Each connection j gets an edge weight `sigmoid(w_j)`. Given `edge_weights`
     (post-sigmoid values, e.g. the searched ones) fix `w = logit(value)`, not trainable;
     without them `w ~ TruncatedNormal(0, 0.01)` is trainable, which is the one-shot
     connectivity search of the paper (Sec. 3.3).
  2. Connections larger than the smallest one are max-pooled down to it
     (window = stride = `(H + 1) // H_min`).
  3. With `attention_mode`, each weighted connection is gated per channel by
     `PeerAttention` or `SelfAttention` (AssembleNet++, Sec. 3.2). For 'peer', this layer
     also owns one `Dense(P)` per candidate peer (`peer_dense_k`, P the widest candidate);
     they project the candidates' spatially pooled features.
  4. Connections of equal width are summed (all of them); each group whose width differs
     from `output_channels` is projected with a 1x1 conv (no BN, no bias); groups are
     summed.

  A single connection is returned as it is (only the attention gate applies to it).

  Args:
    num_inputs: number of incoming connections.
    edge_weights: `None` (learned) or `num_inputs` post-sigmoid values in (0, 1) (fixed).
      Must be `None` or empty for a single connection.
    output_channels: output width (the widest non-object input, chosen by the builder);
      `None` means the widest input.
    attention_mode: 'peer', 'self' or `None`.

  Call arguments:
    inputs: list of `num_inputs` tensors `[N*T, H_j, W_j, C_j]`.
    peers: for 'peer' attention, list of candidate vectors `[N*T, C_k]` (spatial means of
      every lower-level node); otherwise `None`.

  Shapes: returns `[N*T, H_min, W_min, output_channels]`.
  """

  def __init__(self,
               num_inputs,
               edge_weights=None,
               output_channels=None,
               attention_mode=None,
               **kwargs):
    super().__init__(**kwargs)
    if not isinstance(num_inputs, int) or num_inputs < 1:
      raise ValueError(f"`num_inputs` must be a positive int. Received: {num_inputs}")
    if attention_mode not in ATTENTION_MODES:
      raise ValueError(
          f"`attention_mode` must be one of {ATTENTION_MODES}. Received: {attention_mode!r}")
    edge_weights = _as_edge_weight_list(edge_weights)
    if num_inputs == 1 and edge_weights:
      raise ValueError(
          f"A single connection has no edge weight. Received: edge_weights={edge_weights}")
    if num_inputs > 1 and edge_weights is not None and len(edge_weights) != num_inputs:
      raise ValueError(
          f"Expected {num_inputs} edge weights, one per connection. "
          f"Received: {len(edge_weights)} ({edge_weights})")
    self.num_inputs = num_inputs
    self.edge_weights = edge_weights if num_inputs > 1 else None
    self.output_channels = output_channels
    self.attention_mode = attention_mode

  def build(self, inputs_shape, peers_shape=None):
    if len(inputs_shape) != self.num_inputs:
      raise ValueError(
          f"{self.name} expects {self.num_inputs} connections. "
          f"Received: {len(inputs_shape)} inputs")
    if self.attention_mode == "peer" and not peers_shape:
      raise ValueError(f"{self.name}: peer-attention needs `peers`. Received: {peers_shape}")
    widths = [shape[-1] for shape in inputs_shape]
    self._width = self.output_channels or max(widths)
    if self.num_inputs == 1:
      self._width = widths[0]

    if self.num_inputs > 1:
      if self.edge_weights is None:
        initializer = keras.initializers.TruncatedNormal(stddev=0.01)
      else:
        logits = [math.log(w / (1.0 - w)) for w in self.edge_weights]
        initializer = keras.initializers.Constant(logits)
      self.edge_logits = self.add_weight(
          name="edge_logits",
          shape=(self.num_inputs,),
          initializer=initializer,
          trainable=self.edge_weights is None,
          dtype="float32",
          autocast=False)

    if self.attention_mode == "peer":
      peer_units = max(shape[-1] for shape in peers_shape)
      self.peer_denses = []
      for k, shape in enumerate(peers_shape):
        dense = keras.layers.Dense(
            peer_units,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name=f"peer_dense_{k}",
            dtype=self.dtype_policy)
        dense.build(shape)
        self.peer_denses.append(dense)
      stacked_peers = (None, len(peers_shape), peer_units)
    self.attentions = []
    for j, shape in enumerate(inputs_shape):
      if self.attention_mode == "peer":
        layer = attention.PeerAttention(name=f"peer_attention_{j}", dtype=self.dtype_policy)
        layer.build(shape, stacked_peers)
      elif self.attention_mode == "self":
        layer = attention.SelfAttention(name=f"self_attention_{j}", dtype=self.dtype_policy)
        layer.build(shape)
      else:
        break
      self.attentions.append(layer)

    # Same-width connections are summed first, so one projection serves the whole group.
    # Groups are kept as a tuple of (width, member indices, projection index or None):
    # immutable, so neither Keras nor tf.train tracking wraps it (a tracked dict with int
    # keys cannot be written to a SavedModel).
    members_of_width = {}
    for j, width in enumerate(widths):
      members_of_width.setdefault(width, []).append(j)
    self.projections = []
    groups = []
    for width, members in members_of_width.items():
      projection = None
      if self.num_inputs > 1 and width != self._width:
        conv = conv_2plus1d.spatial_conv(
            self._width, 1, 1, name=f"project_{width}", dtype=self.dtype_policy)
        conv.build((None, None, None, width))
        projection = len(self.projections)
        self.projections.append(conv)
      groups.append((width, tuple(members), projection))
    self._groups = tuple(groups)

  def edge_weight_values(self):
    """The post-sigmoid edge weights, `[num_inputs]` (empty for a single connection)."""
    if self.num_inputs == 1:
      return tf.zeros([0])
    return tf.sigmoid(self.edge_logits)

  def call(self, inputs, peers=None):
    if self.attention_mode == "peer":
      # num_peers x [N*T, C_k] -> [N*T, num_peers, P]
      peer_vectors = tf.stack(
          [dense(peer) for dense, peer in zip(self.peer_denses, peers)], axis=1)

    def gate(j, x):
      if self.attention_mode == "peer":
        return self.attentions[j](x, peer_vectors)
      if self.attention_mode == "self":
        return self.attentions[j](x)
      return x

    if self.num_inputs == 1:
      return gate(0, inputs[0])

    min_height = min(x.shape[1] for x in inputs)
    min_width = min(x.shape[2] for x in inputs)
    weights = tf.cast(self.edge_weight_values(), self.compute_dtype)
    gated = []
    for j, x in enumerate(inputs):
      if x.shape[1] != min_height or x.shape[2] != min_width:
        # Pooling before weighting is the same (the weight is positive) and cheaper.
        ratio = (x.shape[1] + 1) // min_height
        x = tf.nn.max_pool2d(x, ratio, ratio, padding="SAME")
      # gate(w * x) = x * (w * gates): the edge weight scales the [N*T, C] gate vector,
      # so each connection is multiplied once at full size instead of twice.
      if self.attention_mode == "peer":
        scale = weights[j] * self.attentions[j].gates(peer_vectors)
      elif self.attention_mode == "self":
        scale = weights[j] * self.attentions[j].gates(
            weights[j] * tf.reduce_mean(x, axis=[1, 2]))
      else:
        gated.append(weights[j] * x)
        continue
      # [N*T, C] -> [N*T, 1, 1, C]
      gated.append(x * scale[:, None, None, :])

    outputs = []
    for _, members, projection in self._groups:
      group = tf.add_n([gated[j] for j in members])
      if projection is not None:
        group = self.projections[projection](group)
      outputs.append(group)
    return tf.add_n(outputs)

  def compute_output_shape(self, inputs_shape, peers_shape=None):
    if self.num_inputs == 1:
      return inputs_shape[0]
    height = min(shape[1] for shape in inputs_shape)
    width = min(shape[2] for shape in inputs_shape)
    out = self.output_channels or max(shape[-1] for shape in inputs_shape)
    return (inputs_shape[0][0], height, width, out)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_inputs": self.num_inputs,
        "edge_weights": self.edge_weights,
        "output_channels": self.output_channels,
        "attention_mode": self.attention_mode,
    })
    return config
