"""Channel attention on a connection: peer-attention and self-attention (AssembleNet++).

Attention is computed per frame: a `[N*T, C]` vector gates the channels of the
`[N*T, H, W, C]` connection it belongs to (AssembleNet++, ECCV 2020, Sec. 3.2).
"""

import keras
import tensorflow as tf


def _dense(units, name, dtype):
  return keras.layers.Dense(
      units,
      kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
      name=name,
      dtype=dtype)


@keras.saving.register_keras_serializable(package="assemblenet")
class PeerAttention(keras.layers.Layer):
  """Peer-attention on one connection, with a learned soft choice of the peer.

  The candidate peers are the (already projected) pooled features of every lower-level
  node. A trainable vector `peer_logits` (one entry per candidate, TruncatedNormal(0, 0.01)
  init) is softmax-ed to mix them, which is the one-shot differentiable search of
  attention connectivity (AssembleNet++, Fig. 2); `attention_dense` then maps the mixture
  to one sigmoid gate per channel of the connection.

  Call arguments:
    inputs: the connection `[N*T, H, W, C]`.
    peers: candidate peer vectors `[N*T, num_peers, P]`.

  Shapes: returns `[N*T, H, W, C]`.
  """

  def build(self, inputs_shape, peers_shape):
    self.num_peers = peers_shape[1]
    self.peer_logits = self.add_weight(
        name="peer_logits",
        shape=(self.num_peers,),
        initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        dtype="float32",
        autocast=False)  # The softmax stays in float32 under mixed precision.
    self.attention_dense = _dense(inputs_shape[-1], "attention_dense", self.dtype_policy)
    self.attention_dense.build((None, peers_shape[-1]))

  def peer_weights(self):
    """The softmax mixing weights of the candidate peers, `[num_peers]`."""
    return tf.nn.softmax(self.peer_logits)

  def gates(self, peers):
    """The channel gates `[N*T, C]` for candidate peers `[N*T, num_peers, P]`."""
    weights = tf.cast(self.peer_weights(), self.compute_dtype)
    # [N*T, K, P] x [K] -> [N*T, P]
    mixed = tf.einsum("nkp,k->np", peers, weights)
    return tf.sigmoid(self.attention_dense(mixed))

  def call(self, inputs, peers):
    # [N*T, C] -> [N*T, 1, 1, C]
    return inputs * self.gates(peers)[:, None, None, :]

  def compute_output_shape(self, inputs_shape, peers_shape):
    return inputs_shape


@keras.saving.register_keras_serializable(package="assemblenet")
class SelfAttention(keras.layers.Layer):
  """Self-attention on one connection: channel gates from its own spatial mean.

  `x * sigmoid(Dense(C)(GAP(x)))` per frame, a squeeze-and-excitation gate without the
  bottleneck (the AssembleNet++ paper's "self-attention" baseline).

  Shapes: `[N*T, H, W, C]` -> `[N*T, H, W, C]`.
  """

  def build(self, input_shape):
    self.attention_dense = _dense(input_shape[-1], "attention_dense", self.dtype_policy)
    self.attention_dense.build((None, input_shape[-1]))

  def gates(self, pooled):
    """The channel gates `[N*T, C]` from the connection's spatial mean `[N*T, C]`."""
    return tf.sigmoid(self.attention_dense(pooled))

  def call(self, inputs):
    # [N*T, C] -> [N*T, 1, 1, C]
    return inputs * self.gates(tf.reduce_mean(inputs, axis=[1, 2]))[:, None, None, :]

  def compute_output_shape(self, input_shape):
    return input_shape
