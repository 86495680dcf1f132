"""Tests for the weighted connections (fusion) of a node."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling.layers import fusion


def _x(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _max_pool(x, ratio):
  n, h, w, c = x.shape
  return x.reshape(n, h // ratio, ratio, w // ratio, ratio, c).max(axis=(2, 4))


def test_given_edge_weights_are_fixed_and_exact():
  layer = fusion.WeightedFusion(3, edge_weights=[0.2, 0.5, 0.9], name="weighted_fusion")
  layer([_x((2, 2, 2, 4), i) for i in range(3)])
  np.testing.assert_allclose(layer.edge_weight_values().numpy(), [0.2, 0.5, 0.9], rtol=1e-6)
  # Regression: the TF2 port ignored given weights (always trainable, random).
  assert not layer.trainable_weights
  assert [w.path for w in layer.non_trainable_weights] == ["weighted_fusion/edge_logits"]


def test_learned_edge_weights_are_trainable_and_start_near_half():
  layer = fusion.WeightedFusion(3, name="weighted_fusion")
  layer([_x((2, 2, 2, 4), i) for i in range(3)])
  assert [w.path for w in layer.trainable_weights] == ["weighted_fusion/edge_logits"]
  np.testing.assert_allclose(layer.edge_weight_values().numpy(), 0.5, atol=0.01)


def test_same_width_inputs_are_all_summed():
  # Regression: the TF2 port reduced a group of same-width inputs to its first member.
  inputs = [_x((2, 3, 3, 4), i) for i in range(3)]
  layer = fusion.WeightedFusion(3, edge_weights=[0.2, 0.5, 0.9])
  expected = 0.2 * inputs[0] + 0.5 * inputs[1] + 0.9 * inputs[2]
  np.testing.assert_allclose(layer(inputs).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_larger_inputs_are_max_pooled_to_the_smallest():
  big, small = _x((2, 4, 4, 3), 0), _x((2, 2, 2, 3), 1)
  layer = fusion.WeightedFusion(2, edge_weights=[0.3, 0.6])
  expected = 0.3 * _max_pool(big, 2) + 0.6 * small
  np.testing.assert_allclose(layer([big, small]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_odd_sizes_pool_with_the_authors_ratio():
  # 7 -> 4 uses ratio (7 + 1) // 4 = 2 with SAME padding.
  layer = fusion.WeightedFusion(2, edge_weights=[0.5, 0.5])
  out = layer([_x((1, 7, 7, 2), 0), _x((1, 4, 4, 2), 1)])
  assert out.shape == (1, 4, 4, 2)


def test_narrow_groups_are_projected_to_output_width():
  wide_a, wide_b, narrow = _x((2, 2, 2, 6), 0), _x((2, 2, 2, 6), 1), _x((2, 2, 2, 3), 2)
  layer = fusion.WeightedFusion(3, edge_weights=[0.2, 0.4, 0.8])
  out = layer([wide_a, narrow, wide_b]).numpy()
  assert [p.name for p in layer.projections] == ["project_3"]
  kernel = layer.projections[0].kernel.numpy()[0, 0]
  assert kernel.shape == (3, 6) and layer.projections[0].bias is None
  expected = 0.2 * wide_a + 0.8 * wide_b + (0.4 * narrow) @ kernel
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_object_width_is_projected_down_not_up():
  # Regression: the widest *non-object* input sets the width (151-channel objects are
  # projected down to it; the other streams are never projected up to 151).
  objects, features = np.abs(_x((1, 4, 4, 151), 0)), _x((1, 2, 2, 8), 1)
  layer = fusion.WeightedFusion(2, edge_weights=[0.5, 0.5], output_channels=8)
  out = layer([objects, features])
  assert out.shape == (1, 2, 2, 8)
  assert [p.name for p in layer.projections] == ["project_151"]
  assert layer.projections[0].kernel.shape == (1, 1, 151, 8)


def test_every_input_and_edge_weight_gets_a_gradient():
  inputs = [tf.Variable(_x(shape, i)) for i, shape in
            enumerate([(2, 4, 4, 3), (2, 2, 2, 3), (2, 2, 2, 5), (2, 4, 4, 5)])]
  layer = fusion.WeightedFusion(4)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(inputs) ** 2)
  grads = tape.gradient(loss, inputs + layer.trainable_weights)
  for grad in grads:
    assert grad is not None and np.any(grad.numpy() != 0)
  assert np.all(grads[-2].numpy() != 0)  # each edge logit


def test_single_input_without_attention_is_untouched():
  # Regression: the TF2 port applied attention to single inputs with attention off.
  x = _x((2, 2, 2, 4), 0)
  layer = fusion.WeightedFusion(1)
  np.testing.assert_array_equal(layer([x]).numpy(), x)
  assert not layer.weights


@pytest.mark.parametrize("mode", ["peer", "self"])
def test_attention_gates_each_connection(mode):
  inputs = [tf.Variable(_x((2, 4, 4, 3), 0)), tf.Variable(_x((2, 2, 2, 6), 1))]
  peers = [tf.Variable(_x((2, 5), 2)), tf.Variable(_x((2, 7), 3)), tf.Variable(_x((2, 3), 4))]
  layer = fusion.WeightedFusion(2, attention_mode=mode, name="weighted_fusion")
  with tf.GradientTape() as tape:
    out = layer(inputs, peers if mode == "peer" else None)
    loss = tf.reduce_sum(out ** 2)
  names = sorted(w.path for w in layer.trainable_weights)
  if mode == "peer":
    # One Dense per candidate peer (to the widest candidate, 7), one softmax and one gate
    # Dense per connection.
    assert [d.units for d in layer.peer_denses] == [7, 7, 7]
    assert "weighted_fusion/peer_attention_1/peer_logits" in names
    assert layer.attentions[0].peer_logits.shape == (3,)
    watched = inputs + peers
  else:
    assert "weighted_fusion/self_attention_0/attention_dense/kernel" in names
    watched = inputs
  grads = tape.gradient(loss, watched + layer.trainable_weights)
  for grad in grads:
    assert grad is not None and np.any(grad.numpy() != 0)
  # The gate sits between the edge weight and the projection: check connection 1.
  weights = layer.edge_weight_values().numpy()
  gated = [layer.attentions[j](
      weights[j] * (_max_pool(inputs[j].numpy(), 2) if j == 0 else inputs[j].numpy()),
      *([tf.stack([d(p) for d, p in zip(layer.peer_denses, peers)], 1)]
        if mode == "peer" else [])).numpy() for j in range(2)]
  expected = gated[1] + gated[0] @ layer.projections[0].kernel.numpy()[0, 0]
  np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_single_input_with_peer_attention_is_gated():
  x = _x((2, 2, 2, 4), 0)
  layer = fusion.WeightedFusion(1, attention_mode="peer")
  out = layer([x], [_x((2, 3), 1)]).numpy()
  assert not np.allclose(out, x)
  assert not any("edge_logits" in w.path for w in layer.weights)


def test_serialization_round_trip():
  inputs = [_x((2, 4, 4, 3), 0), _x((2, 2, 2, 6), 1)]
  peers = [_x((2, 5), 2), _x((2, 6), 3)]
  layer = fusion.WeightedFusion(2, edge_weights=[0.3, 0.7], output_channels=6,
                                attention_mode="peer", name="node_9_fusion")
  expected = layer(inputs, peers).numpy()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  if not clone.built:
    clone.build([x.shape for x in inputs], [p.shape for p in peers])
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == layer.get_config()
  np.testing.assert_array_equal(clone(inputs, peers).numpy(), expected)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_inputs": 2, "edge_weights": [0.5]}, "Expected 2 edge weights"),
    ({"num_inputs": 2, "edge_weights": [0.5, 1.0]}, "strictly between 0 and 1"),
    ({"num_inputs": 1, "edge_weights": [0.5]}, "single connection has no edge weight"),
    ({"num_inputs": 2, "attention_mode": "None"}, "attention_mode"),
    ({"num_inputs": 0}, "num_inputs"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    fusion.WeightedFusion(**kwargs)


def test_peer_attention_without_peers_is_rejected():
  with pytest.raises(ValueError, match="peer-attention needs `peers`"):
    fusion.WeightedFusion(2, attention_mode="peer")([_x((1, 2, 2, 3), 0)] * 2)
