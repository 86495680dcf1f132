"""The gin boundary for models: `build_model(...)` and the structure constants.

Gin files pick a network with `build_model.*` bindings; structures are Python objects
exposed as gin constants (`%structures.ASN50`, `%structures.ASN101`,
`%structures.FULL_ASNP50`, `%structures.DEMO_ASNP`) or named by string ('asn50', ...).
"""

import gin
import keras

from official.modeling import assemblenet
from official.modeling import assemblenet_plus
from official.modeling import assemblenet_plus_lite
from official.modeling import structures

MODEL_TYPES = ("assemblenet", "assemblenet_plus", "assemblenet_plus_lite")

gin.constant("structures.ASN50", structures.ASN50)
gin.constant("structures.ASN101", structures.ASN101)
gin.constant("structures.FULL_ASNP50", structures.FULL_ASNP50)
gin.constant("structures.DEMO_ASNP", structures.DEMO_ASNP)
gin.constant("structures.ASNP_LITE", structures.ASNP_LITE)
gin.constant("structures.ASNP_LITE_OBJECTS", structures.ASNP_LITE_OBJECTS)


@gin.configurable
def build_model(structure="asn50",
                edge_weights="searched",
                model_type="assemblenet",
                depth=None,
                num_frames=32,
                image_size=224,
                num_classes=157,
                attention_mode=None,
                num_object_classes=151,
                max_pool_predictions=False,
                dropout_rate=0.0,
                variant=None,
                name=None,
                authors_fusion_width=True):
  """Builds an AssembleNet or AssembleNet++ classifier.

  Args:
    structure: 'asn50', 'asn101', 'full_asnp50', a `structures.Structure` or the authors'
      nested-list form. A structure with an object stem makes a model with an 'objects'
      input.
    edge_weights: 'searched' (fixed to the structure's searched values), `None` (learned:
      the one-shot connectivity search) or a node-aligned list of post-sigmoid values
      (fixed).
    model_type: 'assemblenet' (v1, ICLR 2020: no attention, no object stem),
      'assemblenet_plus' (ECCV 2020) — both build `assemblenet.AssembleNet`, the type only
      checks the arguments against the paper's model — or 'assemblenet_plus_lite' (the
      authors' lite network, `assemblenet_plus_lite.py`: structures 'asnp_lite' /
      'asnp_lite_objects', no `depth`).
    depth: 26, 38, 50, 68, 77 or 101; `None` takes the structure's published depth
      (101 for 'asn101', else 50).
    num_frames: frames per clip.
    image_size: input height and width.
    num_classes: number of logits.
    attention_mode: 'peer', 'self' or `None`; only for 'assemblenet_plus'.
    num_object_classes: K, object classes of the object maps (151 for ADE-20K maps).
    max_pool_predictions: soft temporal max-pooling of per-frame logits in the head.
    dropout_rate: dropout before the classifier (0 = none, as the authors).
    variant: alias of `model_type`.
    name: Keras model name (default: the class's).
    authors_fusion_width: only for 'assemblenet_plus_lite': reproduce the authors' fused
      widths read from the spatial width axis (True) or use channel counts (False); see
      `assemblenet_plus_lite`.

  Returns:
    An `assemblenet.AssembleNet` taking {'rgb': float32 `[B, T, H, W, 3]`, and for object
    structures 'objects': uint8 class ids `[B, T, H, W]`} and returning float32 logits
    `[B, num_classes]`.
  """
  if variant is not None:
    if model_type not in (variant, "assemblenet"):
      raise ValueError(
          "`variant` is an alias of `model_type`; they disagree. Received: "
          f"model_type={model_type!r}, variant={variant!r}")
    model_type = variant
  if model_type not in MODEL_TYPES:
    raise ValueError(f"`model_type` must be one of {MODEL_TYPES}. Received: {model_type!r}")
  kwargs = dict(structure=structure, edge_weights=edge_weights, num_frames=num_frames,
                image_size=image_size, num_classes=num_classes,
                attention_mode=attention_mode, num_object_classes=num_object_classes,
                max_pool_predictions=max_pool_predictions, dropout_rate=dropout_rate)
  if name is not None:
    kwargs["name"] = name
  if model_type == "assemblenet_plus_lite":
    if depth is not None:
      raise ValueError(
          "AssembleNet++lite has fixed blocks per level "
          f"{structures.LITE_BLOCKS_PER_LEVEL}, no depth. Received: depth={depth!r}")
    return assemblenet_plus_lite.AssembleNetPlusLite(
        authors_fusion_width=authors_fusion_width, **kwargs)
  if authors_fusion_width is not True:
    raise ValueError(
        "`authors_fusion_width` applies to model_type='assemblenet_plus_lite' only. "
        f"Received: model_type={model_type!r}, authors_fusion_width={authors_fusion_width!r}")
  model_class = assemblenet_plus.AssembleNetPlus
  if model_type == "assemblenet":
    if attention_mode is not None:
      raise ValueError(
          "AssembleNet (v1) has no attention; use model_type='assemblenet_plus'. "
          f"Received: attention_mode={attention_mode!r}")
    spec = structures.get_structure(structure)
    if spec.has_stem(structures.OBJECT):
      raise ValueError(
          f"AssembleNet (v1) has no object input, but structure {spec.name!r} has an "
          "object stem; use model_type='assemblenet_plus'. Received stems: "
          f"{[n.to_list() for _, n in spec.stems]}")
    model_class = assemblenet.AssembleNet
  return model_class(depth=depth, **kwargs)


def model_inputs_spec(model: keras.Model):
  """`{input name: (shape without batch, dtype)}` of a built model."""
  return {
      key: (tuple(tensor.shape[1:]), tensor.dtype) for key, tensor in model.input.items()
  }
