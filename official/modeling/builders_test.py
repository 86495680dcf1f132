"""Tests for the gin boundary `build_model` and the structure constants."""

import gin
import pytest

from official.modeling import assemblenet
from official.modeling import assemblenet_plus
from official.modeling import builders
from official.modeling import structures

TINY = [[-1, 1], [-2, 1], [-3, 1], [0, [0, 1, 2], 2, 1, 1, 0], [3, [2, 3], 2, 1, 2, 0]]
SMALL = dict(depth=26, num_frames=2, image_size=16, num_classes=3)


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_structures_are_gin_constants():
  gin.parse_config("build_model.structure = %structures.ASN101")
  assert gin.query_parameter("build_model.structure").scoped_configurable_fn() is (
      structures.ASN101)


def test_gin_builds_an_object_model():
  # Regression: the TF2 port could not turn object input on through its config path.
  gin.parse_config(f"""
      build_model.structure = {TINY}
      build_model.edge_weights = None
      build_model.model_type = 'assemblenet_plus'
      build_model.attention_mode = 'peer'
      build_model.num_object_classes = 5
      build_model.depth = 26
      build_model.num_frames = 2
      build_model.image_size = 16
      build_model.num_classes = 3
      build_model.dropout_rate = 0.25
      build_model.max_pool_predictions = True
  """)
  model = builders.build_model()
  assert isinstance(model, assemblenet_plus.AssembleNetPlus)
  assert assemblenet.uses_objects(model) and model.uses_objects
  # The one object contract: uint8 class ids, as the prepared dataset stores them.
  assert builders.model_inputs_spec(model) == {
      "rgb": ((2, 16, 16, 3), "float32"), "objects": ((2, 16, 16), "uint8")}
  assert model.get_layer("node_2_object_stem").num_classes == 5
  head = model.get_layer("head")
  # Regression: the dropout setting reaches the head.
  assert head.dropout.rate == 0.25 and head.max_pool_predictions
  assert model.get_layer("node_3_fusion").attention_mode == "peer"


def test_plain_assemblenet_defaults():
  model = builders.build_model(
      [[-1, 1], [-2, 1], [3, [0, 1], 2, 1, 2, 0]], edge_weights=None, **SMALL)
  assert isinstance(model, assemblenet.AssembleNet)
  assert not assemblenet.uses_objects(model) and not model.uses_objects
  assert list(model.input) == ["rgb"]
  assert model.get_layer("head").dropout is None


def test_variant_is_an_alias_of_model_type():
  model = builders.build_model(TINY, edge_weights=None, variant="assemblenet_plus",
                               attention_mode="self", num_object_classes=5, **SMALL)
  assert isinstance(model, assemblenet_plus.AssembleNetPlus)
  with pytest.raises(ValueError, match="alias"):
    builders.build_model(TINY, model_type="assemblenet_plus", variant="assemblenet")


@pytest.mark.parametrize("kwargs,message", [
    ({"model_type": "assemblenet3"}, "model_type"),
    ({"attention_mode": "peer"}, "AssembleNet \\(v1\\) has no attention"),
    ({"structure": "full_asnp50"}, "AssembleNet \\(v1\\) has no object input"),
    ({"model_type": "assemblenet_plus", "attention_mode": "None"}, "attention_mode"),
    ({"model_type": "assemblenet_plus", "structure": "full_asnp50",
      "num_object_classes": 0}, "num_object_classes"),
    ({"num_frames": 1}, "num_frames"),
    ({"structure": "asn49"}, "Unknown structure name"),
])
def test_bad_arguments(kwargs, message):
  args = dict(structure="asn50", depth=26, num_frames=2, image_size=16, num_classes=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    builders.build_model(**args)
