"""Tests for AssembleNet++: attention, object input, and the TF2 port's defects."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import assemblenet_plus
from official.modeling import structures

# RGB, flow and object stems (42 = 128 // 3 channels each for RGB and flow, 64 object
# classes: wider than every other stream), 8-wide blocks, a single-input node, levels 0..3.
TINY = [[-1, 1], [-2, 1], [-3, 1], [0, [0, 1, 2], 2, 1, 1, 0], [0, [0], 2, 2, 1, 0],
        [1, [1, 2, 3, 4], 2, 2, 2, 0], [2, [2, 5], 2, 1, 2, 0], [3, [5, 6], 2, 1, 2, 0]]
NUM_OBJECTS = 64


def _inputs(batch=2, frames=3, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "rgb": rng.uniform(-1, 1, (batch, frames, size, size, 3)).astype(np.float32),
      "objects": rng.integers(0, NUM_OBJECTS, (batch, frames, size, size)).astype(np.uint8),
  }


def _tiny(**kwargs):
  args = dict(structure=TINY, edge_weights=None, depth=26, num_frames=3, image_size=16,
              num_classes=5, attention_mode="peer", num_object_classes=NUM_OBJECTS)
  args.update(kwargs)
  return assemblenet_plus.AssembleNetPlus(**args)


def _wake_residual_branches(model):
  for weight in model.weights:
    if "bn_expand/gamma" in weight.path:
      weight.assign(np.full(weight.shape, 0.5, np.float32))


def test_peer_candidates_are_all_lower_level_nodes():
  model = _tiny()
  # Level 0 nodes: the 3 stems; level 1: stems + 2 level-0 nodes; level 3: all 7 below.
  expected = {3: 3, 4: 3, 5: 5, 6: 6, 7: 7}
  for index, count in expected.items():
    fusion = model.get_layer(f"node_{index}_fusion")
    assert len(fusion.peer_denses) == count
    # Peer vectors have the width of the widest candidate, here the objects (64).
    assert {d.units for d in fusion.peer_denses} == {NUM_OBJECTS}
    for attention in fusion.attentions:
      assert attention.peer_logits.shape == (count,)
      assert attention.peer_logits.trainable


def test_object_stem_width_is_excluded_from_the_fused_width():
  # Regression: object channels must not set lg_channel. Node 3 fuses rgb (42), flow (42)
  # and objects (64): its width is 42 and only the objects are projected (down).
  model = _tiny()
  fusion = model.get_layer("node_3_fusion")
  assert fusion.output_channels == 42
  assert [p.name for p in fusion.projections] == ["project_64"]
  assert [p.kernel.shape for p in fusion.projections] == [(1, 1, 64, 42)]
  node6 = model.get_layer("node_6_fusion")  # objects (64) + node 5 (8)
  assert node6.output_channels == 8
  assert [p.kernel.shape for p in node6.projections] == [(1, 1, 64, 8)]


def test_every_fused_input_and_candidate_peer_gets_a_gradient():
  model = _tiny()
  _wake_residual_branches(model)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(_inputs(), training=True) ** 2)
  grads = tape.gradient(loss, model.trainable_weights)
  kinds = set()
  for weight, grad in zip(model.trainable_weights, grads):
    assert grad is not None, weight.path
    assert np.any(grad.numpy() != 0), weight.path
    if "edge_logits" in weight.path or "peer_logits" in weight.path:
      assert np.all(grad.numpy() != 0), weight.path  # each input / each candidate peer
      kinds.add(weight.path.rsplit("/", 1)[-1])
  assert kinds == {"edge_logits", "peer_logits"}
  paths = {w.path for w in model.trainable_weights}
  assert "node_7_fusion/peer_dense_6/kernel" in paths
  assert "node_4_fusion/peer_attention_0/attention_dense/kernel" in paths


def test_single_input_nodes_get_attention_only_when_enabled():
  with_attention = _tiny()
  assert [a.name for a in with_attention.get_layer("node_4_fusion").attentions] == [
      "peer_attention_0"]
  # Regression: attention off means no attention anywhere, single inputs included.
  without = _tiny(attention_mode=None)
  names = [layer.name for layer in without.layers]
  assert "node_4_fusion" not in names
  assert not [w for w in without.weights if "attention" in w.path or "peer" in w.path]


def test_self_attention():
  model = _tiny(attention_mode="self")
  fusion = model.get_layer("node_5_fusion")
  assert [a.name for a in fusion.attentions] == [f"self_attention_{j}" for j in range(4)]
  assert not hasattr(fusion, "peer_denses")
  assert model(_inputs()).shape == (2, 5)


@pytest.mark.slow
def test_full_asnp50_builds_with_searched_weights():
  model = assemblenet_plus.AssembleNetPlus(num_frames=2, image_size=32)
  assert model.structure is structures.FULL_ASNP50
  assert sorted(model.input) == ["objects", "rgb"]
  assert model.input["objects"].shape == (None, 2, 32, 32)
  assert model.input["objects"].dtype == "uint8"
  assert model.get_layer("node_4_object_stem").num_classes == 151
  node13 = model.get_layer("node_13_fusion")
  np.testing.assert_allclose(node13.edge_weight_values().numpy(),
                             structures.FULL_ASNP50.node_edge_weights(13), rtol=1e-6)
  assert not node13.edge_logits.trainable
  # Node 12 fuses the object stem (151) with node 11 (4 * 128): width 512.
  node12 = model.get_layer("node_12_fusion")
  assert node12.output_channels == 512
  assert [p.name for p in node12.projections] == ["project_151"]
  assert len(node12.peer_denses) == 12
  assert node12.peer_denses[0].units == 512


@pytest.mark.slow
def test_save_and_load_round_trip(tmp_path):
  model = _tiny(max_pool_predictions=True)
  _wake_residual_branches(model)
  inputs = _inputs()
  expected = model(inputs).numpy()
  path = str(tmp_path / "asnp.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, assemblenet_plus.AssembleNetPlus)
  assert loaded.get_config() == model.get_config()
  np.testing.assert_array_equal(loaded(inputs).numpy(), expected)


@pytest.mark.slow
def test_tf_saved_model_round_trip(tmp_path):
  # Regression: WeightedFusion kept a dict with int keys (width -> members), which
  # tf.train tracking wraps and tf.saved_model.save refuses to write.
  model = _tiny()
  _wake_residual_branches(model)
  inputs = _inputs()
  expected = model(inputs, training=False).numpy()
  tf.saved_model.save(model, str(tmp_path / "bare"))
  serve = tf.function(
      lambda rgb, objects: {"logits": model({"rgb": rgb, "objects": objects})},
      input_signature=[tf.TensorSpec([None, 3, 16, 16, 3], tf.float32),
                       tf.TensorSpec([None, 3, 16, 16], tf.uint8)])
  tf.saved_model.save(model, str(tmp_path / "served"), signatures={"serving_default": serve})
  loaded = tf.saved_model.load(str(tmp_path / "served"))
  logits = loaded.signatures["serving_default"](
      rgb=tf.constant(inputs["rgb"]), objects=tf.constant(inputs["objects"]))["logits"]
  # A traced graph may order float reductions differently from eager: rounding only.
  np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_xla_and_mixed_precision():
  model = _tiny()
  _wake_residual_branches(model)
  inputs = _inputs()
  expected = model(inputs, training=False).numpy()
  xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
  np.testing.assert_allclose(xla(inputs).numpy(), expected, rtol=1e-4, atol=1e-5)
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    half = _tiny()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  half.set_weights(model.get_weights())
  logits = half(inputs, training=False)
  assert logits.dtype == tf.float32
  np.testing.assert_allclose(logits.numpy(), expected, atol=2e-2)


@pytest.mark.slow
def test_bfloat16_probabilities_within_0_02_of_float32():
  # Seeded: the spread asserted below depends on the initial weights, which otherwise come
  # from whatever global seed an earlier test in the same worker left behind.
  keras.utils.set_random_seed(3)
  model = _tiny()
  _wake_residual_branches(model)
  # A large classifier, so probabilities spread over (0, 1) instead of all being ~0.5;
  # zero-mean columns, so the features' common offset does not saturate every logit.
  classifier = model.get_layer("head").classifier
  kernel = np.random.default_rng(7).normal(0.0, 30.0, classifier.kernel.shape)
  classifier.kernel.assign((kernel - kernel.mean(axis=0)).astype(np.float32))
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    half = _tiny()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  half.set_weights(model.get_weights())
  inputs = _inputs(seed=6)
  expected = tf.sigmoid(model(inputs, training=False)).numpy()
  assert expected.max() - expected.min() > 0.3, expected
  probabilities = tf.sigmoid(half(inputs, training=False))
  assert probabilities.dtype == tf.float32
  assert half.get_layer("node_5_blocks").compute_dtype == "bfloat16"
  np.testing.assert_allclose(probabilities.numpy(), expected, atol=0.02)


@pytest.mark.parametrize("kwargs,message", [
    ({"attention_mode": "None"}, "Unknown attention_mode"),
    ({"attention_mode": "cross"}, "Unknown attention_mode"),
    ({"num_frames": 1}, "at least 2"),
    ({"num_frames": 0}, "num_frames"),
    ({"num_object_classes": 0}, "num_object_classes"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _tiny(**kwargs)


def test_clip_with_the_wrong_frame_count_is_rejected():
  with pytest.raises(ValueError, match="expected shape"):
    _tiny()(_inputs(frames=4))
