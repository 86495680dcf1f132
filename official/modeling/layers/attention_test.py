"""Tests for peer-attention and self-attention on a connection."""

import keras
import numpy as np
import tensorflow as tf

from official.modeling.layers import attention


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(4, 3, 3, 5)).astype(np.float32)
  peers = rng.normal(size=(4, 2, 6)).astype(np.float32)
  return x, peers


def test_peer_attention_exact_value():
  x, peers = _data()
  layer = attention.PeerAttention()
  layer.build(x.shape, peers.shape)
  layer.peer_logits.assign([0.0, np.log(3.0)])  # softmax -> [0.25, 0.75]
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(6, 5)).astype(np.float32)
  bias = rng.normal(size=(5,)).astype(np.float32)
  layer.attention_dense.set_weights([kernel, bias])
  mixed = 0.25 * peers[:, 0] + 0.75 * peers[:, 1]
  expected = x * _sigmoid(mixed @ kernel + bias)[:, None, None, :]
  np.testing.assert_allclose(layer(x, peers).numpy(), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(layer.peer_weights().numpy(), [0.25, 0.75], rtol=1e-6)


def test_peer_softmax_logits_are_a_trainable_variable_with_gradient():
  # Regression: the TF2 port built the peer softmax weights as a constant.
  x, peers = _data(2)
  layer = attention.PeerAttention(name="peer_attention")
  layer.build(x.shape, peers.shape)
  assert [w.path for w in layer.trainable_weights] == [
      "peer_attention/peer_logits", "peer_attention/attention_dense/kernel",
      "peer_attention/attention_dense/bias"]
  assert np.all(np.abs(layer.peer_logits.numpy()) <= 0.02)  # TruncatedNormal(0, 0.01)
  peers_var = tf.Variable(peers)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(x, peers_var) ** 2)
  grad_logits, grad_kernel, grad_peers = tape.gradient(
      loss, [layer.peer_logits, layer.attention_dense.kernel, peers_var])
  assert np.all(grad_logits.numpy() != 0)
  assert np.all(grad_kernel.numpy() != 0)
  # Every candidate peer receives a gradient.
  assert np.all(np.abs(grad_peers.numpy()).sum(axis=(0, 2)) > 0)


def test_self_attention_exact_value():
  x, _ = _data(3)
  layer = attention.SelfAttention()
  layer.build(x.shape)
  rng = np.random.default_rng(4)
  kernel = rng.normal(size=(5, 5)).astype(np.float32)
  bias = rng.normal(size=(5,)).astype(np.float32)
  layer.attention_dense.set_weights([kernel, bias])
  gate = _sigmoid(x.mean(axis=(1, 2)) @ kernel + bias)
  np.testing.assert_allclose(layer(x).numpy(), x * gate[:, None, None, :], rtol=1e-5,
                             atol=1e-6)


def test_dense_initialisation():
  x, peers = _data()
  layer = attention.PeerAttention()
  layer.build(x.shape, peers.shape)
  kernel, bias = layer.attention_dense.get_weights()
  assert abs(kernel.std() - 0.01) < 0.005
  np.testing.assert_array_equal(bias, np.zeros(5))


def test_mixed_precision_keeps_peer_softmax_in_float32():
  x, peers = _data()
  layer = attention.PeerAttention(dtype="mixed_float16")
  out = layer(tf.cast(x, tf.float16), tf.cast(peers, tf.float16))
  assert out.dtype == tf.float16
  assert layer.peer_logits.dtype == "float32"
  assert layer.peer_weights().dtype == tf.float32


def test_serialization_round_trip():
  x, peers = _data(5)
  for layer, args in ((attention.PeerAttention(name="peer_attention_0"), (x, peers)),
                      (attention.SelfAttention(name="self_attention_0"), (x,))):
    expected = layer(*args).numpy()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    if not clone.built:
      clone.build(*[a.shape for a in args])
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(*args).numpy(), expected)
