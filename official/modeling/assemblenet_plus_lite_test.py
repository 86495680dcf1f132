"""Tests for AssembleNet++lite: the authors' parameter count, the width fault option, the
object stream, serialisation, XLA and mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import assemblenet
from official.modeling import assemblenet_plus_lite
from official.modeling import builders
from official.modeling import structures

# Trainable parameters of the authors' TF1 graph (google-research assemblenet/
# assemblenet_plus_lite.py and the files it imports, at commit 0c1bbe5f, unmodified code)
# with `asnp_lite` and its searched weights, num_layers [3, 5, 11, 7], 157 classes, batch 2,
# is_training=True, built in graph mode under TF 2.15.1 (tensorflow-cpu==2.15.1, numpy<2,
# tf.compat.v1.disable_v2_behavior) and summed over tf.trainable_variables(); the driver
# script and command are in docs/assemblenet_plus_lite.md. "fixed" is the same graph with
# the one-line channel fix `lg_channel = inp.shape[-1]` in fusion_with_peer_attention.
# 'self' attention is not listed: the authors' self mode also builds unused peer Dense
# layers (50,101,197 at 224).
AUTHORS_TRAINABLE = {
    # (image_size, attention_mode, authors_fusion_width): count
    (224, "peer", True): 50_108_773,
    (256, "peer", True): 50_127_733,  # as written, the count depends on the image size
    (224, None, True): 50_033_333,
    (224, "peer", False): 50_042_581,  # fixed: the same at 256
    (224, None, False): 49_967_141,
}

# RGB, flow and object stems (24, 24 and 16 channels); a level-3 node with stride 1 (3x3x3
# middle convs in its first block) and a single-input level-2 node.
TINY = [[-1, 1], [-2, 1], [-3, 1],
        [0, [0, 1, 2], [6, 6, 4], 1, 2, 0],
        [1, [0, 2, 3], [8, 8, 6], 2, 2, 0],
        [2, [4], [8, 8, 6], 1, 2, 0],
        [3, [3, 4, 5], [10, 10, 8], 2, 1, 0]]
NUM_OBJECTS = 16


def _count(model):
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _inputs(batch=2, frames=3, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "rgb": rng.uniform(-1, 1, (batch, frames, size, size, 3)).astype(np.float32),
      "objects": rng.integers(0, NUM_OBJECTS, (batch, frames, size, size)).astype(np.uint8),
  }


def _tiny(**kwargs):
  args = dict(structure=TINY, edge_weights=None, num_frames=3, image_size=16, num_classes=5,
              attention_mode="peer", num_object_classes=NUM_OBJECTS,
              blocks_per_level=(1, 2, 1, 2))
  args.update(kwargs)
  return assemblenet_plus_lite.AssembleNetPlusLite(**args)


def _wake_residual_branches(model):
  for weight in model.weights:
    if "bn_project/gamma" in weight.path:
      weight.assign(np.full(weight.shape, 0.5, np.float32))


@pytest.mark.parametrize("key", [
    (224, "peer", True),
    pytest.param((256, "peer", True), marks=pytest.mark.slow),
    pytest.param((224, None, True), marks=pytest.mark.slow),
    pytest.param((224, "peer", False), marks=pytest.mark.slow),
    pytest.param((224, None, False), marks=pytest.mark.slow),
])
def test_trainable_parameters_equal_the_authors_graph(key):
  image_size, attention_mode, authors_width = key
  model = assemblenet_plus_lite.AssembleNetPlusLite(
      num_frames=4, image_size=image_size, num_classes=157, attention_mode=attention_mode,
      authors_fusion_width=authors_width)
  assert _count(model) == AUTHORS_TRAINABLE[key]


def test_authors_fusion_width_reads_the_spatial_width():
  # asnp_lite at 224: stems 112 x 112 x 24, level-0 nodes 56 x 56 x 12, level 1 28 x 28 x 24,
  # level 2 14 x 14 x 68.
  stem, level0, level1, level2 = ((None, 112, 112, 24), (None, 56, 56, 12),
                                  (None, 28, 28, 24), (None, 14, 14, 68))
  width = assemblenet_plus_lite.authors_fusion_width
  assert width([stem, stem], 151) == 112
  assert width([stem, stem, level0, level0], 151) == 112
  # Level 3: 12 > 0 takes node 2's width 56; 68 > 56 takes node 8's width 14; 68 > 14 keeps 14.
  assert width([level0, level0] + [level1] * 4 + [level2] * 2, 151) == 14
  # Object maps (151 channels) never set it.
  assert width([(None, 112, 112, 151), stem], 151) == 112


@pytest.mark.parametrize("authors_width,expected", [
    (True, {2: 112, 3: 112, 4: 112, 8: 112, 10: 14}),
    (False, {2: 24, 3: 24, 4: 24, 8: 24, 10: 68}),
])
def test_fused_widths_of_asnp_lite(authors_width, expected):
  model = assemblenet_plus_lite.AssembleNetPlusLite(
      num_frames=2, image_size=224, authors_fusion_width=authors_width,
      blocks_per_level=(1, 1, 1, 1))
  for index, channels in expected.items():
    assert model.get_layer(f"node_{index}_fusion").output_channels == channels
  assert model.get_layer("rep_flow").num_iterations == 20
  assert model.get_layer("node_0_rgb_stem").filters == 24
  # Searched edge weights are fixed (not trainable), node 10's as the authors list them.
  fusion = model.get_layer("node_10_fusion")
  assert not fusion.edge_logits.trainable
  np.testing.assert_allclose(fusion.edge_weight_values().numpy(),
                             structures.ASNP_LITE.node_edge_weights(10), rtol=1e-6)


def test_object_stream_is_wired_and_learns():
  model = _tiny()
  _wake_residual_branches(model)
  assert model.input["objects"].dtype == "uint8"
  assert model.input["objects"].shape == (None, 3, 16, 16)
  assert assemblenet.uses_objects(model) and model.input["objects"].dtype == "uint8"
  inputs = _inputs()
  # The objects change the output.
  other = dict(inputs, objects=(inputs["objects"] + 1) % NUM_OBJECTS)
  assert not np.allclose(model(inputs, training=False), model(other, training=False))
  # The object stem (16 channels at 8 x 8, as the 24-channel RGB and flow stems) is
  # projected in node 3's fusion; its edge weight and the projections get gradients.
  fusion = model.get_layer("node_3_fusion")
  assert fusion.output_channels == 8  # authors' width: W of the first non-object input
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(inputs, training=True) ** 2)
  weights = [fusion.edge_logits] + [p.kernel for p in fusion.projections]
  grads = tape.gradient(loss, weights)
  assert all(g is not None and np.any(g.numpy()) for g in grads)
  # The object stem is a peer candidate of every block node.
  assert len(model.get_layer("node_3_fusion").peer_denses) == 3
  assert len(model.get_layer("node_6_fusion").peer_denses) == 6


def test_asnp_lite_is_the_authors_structure_with_its_searched_weights():
  nodes = structures.ASNP_LITE.to_list()
  assert nodes[:2] == [[-1, 1], [-2, 1]]
  assert nodes[2] == [0, [0, 1], [27, 27, 12], 1, 2, 0]
  assert nodes[10] == [3, [2, 3, 4, 5, 6, 7, 8, 9], [432, 432, 192], 2, 2, 0]
  assert [n[0] for n in nodes[2:]] == [0, 0, 1, 1, 1, 1, 2, 2, 3]
  assert {n[4] for n in nodes[2:]} == {2}
  weights = structures.ASNP_LITE.edge_weights_list()
  assert weights[:2] == [[], []]
  assert weights[10] == [[0.6180334091186523, 0.11882413923740387, 0.06102970987558365,
                          0.04484326392412186, 0.05602221190929413, 0.052324872463941574,
                          0.9969874024391174, 0.9987731575965881]]
  assert structures.ASNP_LITE.blocks[-1][1].output_channels == 192
  assert structures.get_lite_structure(nodes).nodes == structures.ASNP_LITE.nodes
  # Not a structure the (2+1)D networks can build.
  assert "asnp_lite" not in structures.NAMED_STRUCTURES


@pytest.mark.parametrize("node,message", [
    ([0, [0], 32, 1, 1, 0], "three ints"),
    ([0, [0], [8, 8], 1, 1, 0], "three ints"),
    ([0, [0], [8, 0, 8], 1, 1, 0], "positive int"),
    ([0, [0], [8, 8, 8], 1], "must be"),
])
def test_lite_block_nodes_are_validated(node, message):
  with pytest.raises(ValueError, match=message):
    structures.lite_structure_from_list([[-1, 1], node, [3, [1], [8, 8, 8], 1, 2, 0]])


def test_asnp_lite_objects_feeds_the_object_stem_below_level_3():
  spec = structures.ASNP_LITE_OBJECTS
  assert spec.nodes[2] == structures.StemSpec(structures.OBJECT, 1)
  for index, node in spec.blocks:
    assert (2 in node.inputs) == (node.level < 3), index
  # Without the object stem the graph is asnp_lite's.
  renumber = lambda i: i if i < 2 else i - 1
  lite = [[n.level, [renumber(i) for i in n.inputs if i != 2], list(n.filters),
           n.temporal_dilation, n.spatial_stride, 0] for _, n in spec.blocks]
  assert lite == structures.ASNP_LITE.to_list()[2:]
  assert spec.edge_weights is None


@pytest.mark.slow
def test_keras_file_round_trip(tmp_path):
  model = _tiny(max_pool_predictions=True, authors_fusion_width=False, dropout_rate=0.2)
  _wake_residual_branches(model)
  inputs = _inputs()
  expected = model(inputs, training=False).numpy()
  path = str(tmp_path / "lite.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, assemblenet_plus_lite.AssembleNetPlusLite)
  assert loaded.get_config() == model.get_config()
  assert loaded.structure.to_list() == TINY
  np.testing.assert_array_equal(loaded(inputs, training=False).numpy(), expected)


@pytest.mark.slow
def test_xla_equals_eager():
  model = _tiny()
  _wake_residual_branches(model)
  inputs = _inputs()
  expected = model(inputs, training=False).numpy()
  xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
  np.testing.assert_allclose(xla(inputs).numpy(), expected, rtol=1e-4, atol=1e-5)
  # A training step compiles too (dilated Conv3D gradients included).
  train = tf.function(lambda x: tf.gradients(tf.reduce_sum(model(x, training=True)),
                                             model.trainable_weights), jit_compile=True)
  grads = train(inputs)
  assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("policy,atol", [("mixed_float16", 2e-2), ("mixed_bfloat16", 5e-2)])
def test_mixed_precision_runs_with_float32_logits(policy, atol):
  keras.utils.set_random_seed(3)
  model = _tiny()
  _wake_residual_branches(model)
  inputs = _inputs(seed=6)
  expected = model(inputs, training=False).numpy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    half = _tiny()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  half.set_weights(model.get_weights())
  assert half.get_layer("node_4_blocks").compute_dtype == policy.split("_")[1]
  logits = half(inputs, training=False)
  assert logits.dtype == tf.float32
  np.testing.assert_allclose(logits.numpy(), expected, atol=atol)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(half(inputs, training=True))
  grads = tape.gradient(loss, half.trainable_weights)
  assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


def test_builder_entry():
  model = builders.build_model(model_type="assemblenet_plus_lite", structure=TINY,
                               edge_weights=None, num_frames=3, image_size=16,
                               num_classes=5, attention_mode=None,
                               num_object_classes=NUM_OBJECTS,
                               authors_fusion_width=False)
  assert isinstance(model, assemblenet_plus_lite.AssembleNetPlusLite)
  assert model.blocks_per_level == structures.LITE_BLOCKS_PER_LEVEL
  assert not model.authors_fusion_width and model.attention_mode is None
  assert assemblenet.uses_objects(model) and model.input["objects"].dtype == "uint8"
  assert model(_inputs(), training=False).shape == (2, 5)


@pytest.mark.parametrize("kwargs,message", [
    ({"depth": 50}, "no depth"),
])
def test_builder_rejects_settings_lite_cannot_honour(kwargs, message):
  with pytest.raises(ValueError, match=message):
    builders.build_model(model_type="assemblenet_plus_lite", structure=TINY, **kwargs)


def test_builder_rejects_authors_fusion_width_for_other_models():
  with pytest.raises(ValueError, match="lite' only"):
    builders.build_model(model_type="assemblenet", authors_fusion_width=False)


@pytest.mark.parametrize("kwargs,message", [
    ({"attention_mode": "None"}, "Unknown attention_mode"),
    ({"structure": "asn50"}, "Unknown lite structure"),
    ({"structure": structures.ASN50}, "filters triples"),
    ({"structure": "asnp_lite_objects", "edge_weights": "searched"}, "no searched edge"),
    ({"structure": TINY[:-1] + [[3, [4], [8, 8, 8], 1, 1, 0], [3, [5], [8, 8, 8], 1, 1, 0]]},
     "one level-3 node"),
    ({"num_frames": 1}, "at least 2"),
    ({"num_object_classes": 0}, "num_object_classes"),
    ({"authors_fusion_width": "yes"}, "authors_fusion_width"),
    ({"blocks_per_level": (1, 2, 3)}, "blocks_per_level"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _tiny(**kwargs)


# The authors' whole lite network on a small structure, run in their TF1 code (graph mode,
# TF 2.15.1, peer-attention, num_layers [1, 2, 1, 1], 5 classes, inference) with every
# variable drawn by `_draw` from one numpy generator in the order the authors create them
# (docs/assemblenet_plus_lite.md has the script). These are its logits.
_AUTHORS_NET = [[-1, 1], [-2, 1], [0, [0, 1], [6, 6, 4], 1, 2, 0],
                [0, [0, 1], [6, 6, 4], 2, 2, 0], [1, [0, 1, 2, 3], [8, 8, 6], 2, 2, 0],
                [2, [0, 2, 4], [8, 8, 6], 1, 2, 0], [3, [2, 3, 4, 5], [10, 10, 8], 2, 2, 0]]
_AUTHORS_NET_WEIGHTS = [[], [], [[0.3, 0.8]], [[0.6, 0.45]], [[0.9, 0.2, 0.7, 0.35]],
                        [[0.55, 0.25, 0.85]], [[0.4, 0.75, 0.15, 0.65]]]
_AUTHORS_NET_LOGITS = [
    [-3.992591381072998, -6.017601490020752, 5.24847412109375, 4.052000999450684,
     -0.8890596628189087],
    [-4.033231735229492, -6.249433994293213, 5.5423197746276855, 3.982351779937744,
     -0.9035145044326782]]


def _draw(rng, kind, shape):
  if kind in ("gamma", "moving_variance"):
    return rng.uniform(0.5, 1.5, shape)
  if kind in ("beta", "moving_mean"):
    return rng.uniform(-0.2, 0.2, shape)
  if kind == "peer_logits":
    return rng.normal(0.0, 1.0, shape)
  if kind == "bias":
    return rng.normal(0.0, 0.5, shape)
  if kind == "dense":
    return rng.normal(0.0, 0.3, shape)
  return rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)  # conv kernels


def _load_in_authors_order(model, rng):
  """Assigns `_draw` values to `model`'s weights in the authors' creation order: per node,
  the peer Dense layers (candidates listed by level, then index), then per connection (by
  width group, then input order) the peer softmax logits and the attention Dense, then the
  fusion's 1x1 projections, then each block's convs, each followed by its batch norm; the
  head last. Conv kernels are drawn in the authors' 5-D shapes."""
  spec = model.structure

  def put(variable, kind, shape=None):
    variable.assign(_draw(rng, kind, shape or tuple(variable.shape)).reshape(variable.shape))

  def conv_bn(conv, bn):
    shape = tuple(conv.kernel.shape)
    put(conv.kernel, "conv", (1,) * (5 - len(shape)) + shape)
    for kind in ("gamma", "beta", "moving_mean", "moving_variance"):
      put(getattr(bn, kind), kind)

  for index, node in enumerate(spec.nodes):
    if isinstance(node, structures.StemSpec):
      stem = model.get_layer(f"node_{index}_{'rgb' if node.stem_type == -1 else 'flow'}_stem")
      conv_bn(stem.conv_spatial, stem.bn_spatial)
      conv_bn(stem.conv_temporal, stem.bn_temporal)
      continue
    fusion = model.get_layer(f"node_{index}_fusion")
    ours = [k for k in range(index) if spec.level(k) < node.level]
    theirs = sorted(ours, key=lambda k: (spec.level(k), k))
    for k in theirs:
      put(fusion.peer_denses[ours.index(k)].kernel, "dense")
      put(fusion.peer_denses[ours.index(k)].bias, "bias")
    widths = [spec.nodes[j].output_channels if isinstance(spec.nodes[j], structures.BlockSpec)
              else 24 for j in node.inputs]
    for width in dict.fromkeys(widths):
      for j in [j for j, w in enumerate(widths) if w == width]:
        attention = fusion.attentions[j]
        logits = _draw(rng, "peer_logits", (len(theirs),))
        attention.peer_logits.assign([logits[theirs.index(k)] for k in ours])
        put(attention.attention_dense.kernel, "dense")
        put(attention.attention_dense.bias, "bias")
    for conv in fusion.projections:
      put(conv.kernel, "conv", (1,) + tuple(conv.kernel.shape))
    for block in model.get_layer(f"node_{index}_blocks").blocks:
      if block.use_projection:
        conv_bn(block.conv_shortcut, block.bn_shortcut)
      conv_bn(block.conv_expand, block.bn_expand)
      for conv, bn in block._middle():  # pylint: disable=protected-access
        conv_bn(conv, bn)
      conv_bn(block.conv_project, block.bn_project)
  head_convs = model.get_layer("head_convs")
  for conv, bn in zip(head_convs.convs, head_convs.bns):
    conv_bn(conv, bn)
  put(model.get_layer("head").classifier.kernel, "dense")
  put(model.get_layer("head").classifier.bias, "bias")


def test_whole_network_equals_the_authors_graph():
  model = assemblenet_plus_lite.AssembleNetPlusLite(
      structure=_AUTHORS_NET, edge_weights=_AUTHORS_NET_WEIGHTS, num_frames=4, image_size=32,
      num_classes=5, attention_mode="peer", blocks_per_level=(1, 2, 1, 1))
  # As written at 32 x 32: the fusions take the stems' width 16, the level-3 one 8.
  assert [model.get_layer(f"node_{i}_fusion").output_channels for i in range(2, 7)] == [
      16, 16, 16, 16, 8]
  rng = np.random.default_rng(0)
  clip = rng.uniform(-1, 1, (2, 4, 32, 32, 3)).astype(np.float32)
  _load_in_authors_order(model, rng)
  logits = model({"rgb": clip}, training=False).numpy()
  np.testing.assert_allclose(logits, _AUTHORS_NET_LOGITS, rtol=1e-5, atol=2e-5)


def test_backbone_features_are_what_the_head_classifies():
  model = _tiny()
  _wake_residual_branches(model)
  inputs = _inputs()
  assert model.uses_objects
  features = model.backbone(inputs, training=False).numpy()
  assert features.shape == (2, 3, 2048) and features.dtype == np.float32
  kernel, bias = model.get_layer("head").classifier.get_weights()
  np.testing.assert_allclose(model(inputs, training=False).numpy(),
                             features.mean(axis=1) @ kernel + bias, rtol=1e-5, atol=1e-6)
