"""Tests for AssembleNet (v1): parameter counts, edge weights, saving, XLA, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import assemblenet
from official.modeling import assemblenet_plus
from official.modeling import structures

# RGB + flow stems, a 3-input fusion with two widths, a single-input node, pooling.
TINY = [[-1, 1], [-2, 2], [0, [0, 1], 4, 1, 1, 0], [0, [0], 2, 2, 1, 0],
        [1, [0, 1, 2, 3], 4, 2, 2, 0], [3, [2, 4], 4, 1, 2, 0]]
TINY_WEIGHTS = [[], [], [[0.3, 0.6]], [], [[0.1, 0.4, 0.7, 0.9]], [[0.2, 0.8]]]


def _trainable_count(model):
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _clip(batch=2, frames=3, size=16, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, frames, size, size, 3)).astype(
      np.float32)


def _tiny(**kwargs):
  args = dict(structure=TINY, edge_weights=TINY_WEIGHTS, depth=26, num_frames=3,
              image_size=16, num_classes=5)
  args.update(kwargs)
  return assemblenet.AssembleNet(**args)


def _wake_residual_branches(model):
  # bn_expand starts at gamma = 0 (blocks start as identity); give the branches a value
  # so every weight is on the gradient path and outputs depend on every layer.
  for weight in model.weights:
    if "bn_expand/gamma" in weight.path:
      weight.assign(np.full(weight.shape, 0.5, np.float32))


@pytest.fixture(scope="module")
def asn50():
  # Parameter counts do not depend on the clip shape: build it small.
  return assemblenet.AssembleNet("asn50", num_frames=2, image_size=32, num_classes=157)


@pytest.mark.slow
def test_assemblenet50_parameter_count(asn50):
  assert _trainable_count(asn50) == 36_900_957


@pytest.mark.slow
def test_assemblenet101_parameter_count():
  model = assemblenet.AssembleNet("asn101", num_frames=2, image_size=32, num_classes=157)
  assert model.depth == 101
  assert _trainable_count(model) == 53_122_909


def test_parameter_count_does_not_depend_on_clip_shape():
  small = _tiny(num_frames=2, image_size=16)
  large = _tiny(num_frames=5, image_size=40)
  assert _trainable_count(small) == _trainable_count(large)
  assert small.count_params() == large.count_params()


@pytest.mark.slow
def test_searched_edge_weights_are_used_and_fixed(asn50):
  for index, node in asn50.structure.blocks:
    if len(node.inputs) == 1:
      assert not any(l.name == f"node_{index}_fusion" for l in asn50.layers)
      continue
    layer = asn50.get_layer(f"node_{index}_fusion")
    np.testing.assert_allclose(layer.edge_weight_values().numpy(),
                               structures.ASN50.node_edge_weights(index), rtol=1e-6)
    assert not layer.edge_logits.trainable
  edge_logits = [w for w in asn50.weights if "edge_logits" in w.path]
  assert sum(w.shape[0] for w in edge_logits) == 28
  assert not any(w.trainable for w in edge_logits)


def test_learned_edge_weights_are_trainable():
  model = _tiny(edge_weights=None)
  logits = [w for w in model.trainable_weights if "edge_logits" in w.path]
  assert [w.path for w in logits] == [
      "node_2_fusion/edge_logits", "node_4_fusion/edge_logits", "node_5_fusion/edge_logits"]


def test_explicit_edge_weights():
  weights = [[], [], [[0.5, 0.5]], [], [[0.25, 0.25, 0.25, 0.25]], [[0.9, 0.1]]]
  model = _tiny(edge_weights=weights)
  np.testing.assert_allclose(
      model.get_layer("node_5_fusion").edge_weight_values().numpy(), [0.9, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="needs 2 edge weights"):
    _tiny(edge_weights=[[], [], [[0.5]], [], [[0.25] * 4], [[0.9, 0.1]]])


def test_layer_names_are_stable():
  names = [layer.name for layer in _tiny().layers]
  assert names[:4] == ["rgb", "rep_flow", "node_0_rgb_stem", "node_1_flow_stem"]
  assert "node_2_fusion" in names and "node_2_blocks" in names
  assert "node_3_fusion" not in names  # single input, no attention: nothing to fuse
  assert names[-2:] == ["final_features", "head"]


def test_every_fused_input_and_weight_gets_a_gradient():
  model = _tiny(edge_weights=None)
  _wake_residual_branches(model)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model({"rgb": _clip()}, training=True) ** 2)
  grads = tape.gradient(loss, model.trainable_weights)
  for weight, grad in zip(model.trainable_weights, grads):
    assert grad is not None, weight.path
    assert np.any(grad.numpy() != 0), weight.path
    if "edge_logits" in weight.path:
      assert np.all(grad.numpy() != 0), weight.path  # each fused input


def test_v1_equals_plus_without_attention():
  v1 = _tiny()
  plus = assemblenet_plus.AssembleNetPlus(
      TINY, TINY_WEIGHTS, depth=26, num_frames=3, image_size=16, num_classes=5,
      attention_mode=None)
  assert isinstance(plus, assemblenet.AssembleNet)
  assert [w.path for w in plus.weights] == [w.path for w in v1.weights]
  _wake_residual_branches(v1)
  plus.set_weights(v1.get_weights())
  clip = {"rgb": _clip()}
  np.testing.assert_array_equal(v1(clip).numpy(), plus(clip).numpy())


def test_save_and_load_round_trip(tmp_path):
  model = _tiny(edge_weights=None, max_pool_predictions=True, dropout_rate=0.1)
  _wake_residual_branches(model)
  clip = {"rgb": _clip()}
  expected = model(clip).numpy()
  path = str(tmp_path / "asn.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, assemblenet.AssembleNet)
  assert loaded.get_config() == model.get_config()
  np.testing.assert_array_equal(loaded(clip).numpy(), expected)
  assert [w.trainable for w in loaded.weights] == [w.trainable for w in model.weights]


@pytest.mark.slow
def test_tf_function_and_xla_match_eager():
  model = _tiny()
  _wake_residual_branches(model)
  clip = {"rgb": _clip()}
  expected = model(clip, training=False).numpy()
  graph = tf.function(lambda x: model(x, training=False))
  xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
  np.testing.assert_allclose(graph(clip).numpy(), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(xla(clip).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gives_float32_logits(policy):
  reference = _tiny()
  _wake_residual_branches(reference)
  clip = {"rgb": _clip()}
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = _tiny()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  model.set_weights(reference.get_weights())
  assert model.get_layer("node_2_blocks").compute_dtype == policy.split("_")[1]
  assert model.get_layer("rep_flow").compute_dtype == "float32"
  logits = model(clip, training=False)
  assert logits.dtype == tf.float32
  tolerance = 2e-2 if policy == "mixed_float16" else 1e-1
  np.testing.assert_allclose(logits.numpy(), reference(clip, training=False).numpy(),
                             atol=tolerance)


@pytest.mark.slow
def test_inside_a_distribution_strategy():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  with strategy.scope():
    model = _tiny(edge_weights=None)
    optimizer = keras.optimizers.SGD(0.1)
  clip = _clip()

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(model({"rgb": x}, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  before = model.get_layer("node_2_fusion").edge_logits.numpy()
  loss = strategy.run(step, args=(clip,))
  assert np.isfinite(strategy.reduce("SUM", loss, axis=None).numpy())
  assert np.any(model.get_layer("node_2_fusion").edge_logits.numpy() != before)


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_classes"):
    _tiny(num_classes=0)
  with pytest.raises(ValueError, match="Unknown attention_mode"):
    _tiny(attention_mode="cross")
  with pytest.raises(ValueError, match="at least 2 for a structure with a flow stem"):
    _tiny(num_frames=1)
  with pytest.raises(ValueError, match="depth"):
    _tiny(depth=51)
  with pytest.raises(ValueError, match="no searched edge weights"):
    _tiny(edge_weights="searched")
  with pytest.raises(ValueError, match="edge_weights"):
    _tiny(edge_weights="learned")


def test_clip_with_the_wrong_frame_count_is_rejected():
  model = _tiny()
  with pytest.raises(ValueError, match=r"expected shape=\(None, 3, 16, 16, 3\)"):
    model({"rgb": _clip(frames=4)})


def _backbone(**kwargs):
  args = dict(structure=TINY, edge_weights=TINY_WEIGHTS, depth=26, num_frames=3,
              image_size=16)
  args.update(kwargs)
  return assemblenet.AssembleNetBackbone(**args)


def test_backbone_variables_have_the_classifier_paths_without_the_head():
  classifier = _tiny(edge_weights=None)
  backbone = _backbone(edge_weights=None)
  head_paths = [w.path for w in classifier.weights if w.path.startswith("head/")]
  assert head_paths == ["head/classifier/kernel", "head/classifier/bias"]
  assert [w.path for w in backbone.weights] == [
      w.path for w in classifier.weights if not w.path.startswith("head/")]
  assert [w.path for w in classifier.backbone.weights] == [w.path for w in backbone.weights]


def test_backbone_features_are_what_the_head_classifies():
  classifier = _tiny()
  _wake_residual_branches(classifier)
  backbone = _backbone()
  by_path = {w.path: w for w in classifier.weights}
  for weight in backbone.weights:
    weight.assign(by_path[weight.path])
  clip = {"rgb": _clip()}
  features = backbone(clip, training=False).numpy()
  assert features.shape == (2, 3, 4 * 4) and features.dtype == np.float32
  # The sub-model view shares the classifier's weights: same features.
  np.testing.assert_array_equal(classifier.backbone(clip, training=False).numpy(), features)
  kernel, bias = classifier.get_layer("head").classifier.get_weights()
  np.testing.assert_allclose(classifier(clip, training=False).numpy(),
                             features.mean(axis=1) @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_backbone_returns_every_node_on_request():
  backbone = _backbone(return_nodes=True)
  _wake_residual_branches(backbone)
  clip = {"rgb": _clip()}
  outputs = backbone(clip, training=False)
  assert sorted(outputs) == ["features"] + [f"node_{k}" for k in range(6)]
  # 16x16 clips: stems at 4x4, level-0 nodes stride 1, level 1 and 3 stride 2.
  assert outputs["node_0"].shape == (2, 3, 4, 4, 64)  # 128 // 2 stems
  assert outputs["node_4"].shape == (2, 3, 2, 2, 16)
  assert outputs["node_5"].shape == (2, 3, 1, 1, 16)
  # The features are the final node's (node 5) per-frame spatial mean.
  np.testing.assert_allclose(outputs["features"].numpy(),
                             outputs["node_5"].numpy().mean(axis=(2, 3)), rtol=1e-5,
                             atol=1e-6)
  plain = _backbone()
  plain.set_weights(backbone.get_weights())
  np.testing.assert_array_equal(plain(clip, training=False).numpy(),
                                outputs["features"].numpy())


def test_backbone_save_and_load_round_trip(tmp_path):
  backbone = _backbone(edge_weights=None)
  _wake_residual_branches(backbone)
  clip = {"rgb": _clip()}
  expected = backbone(clip, training=False).numpy()
  path = str(tmp_path / "backbone.keras")
  backbone.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, assemblenet.AssembleNetBackbone)
  assert loaded.get_config() == backbone.get_config()
  np.testing.assert_array_equal(loaded(clip, training=False).numpy(), expected)
