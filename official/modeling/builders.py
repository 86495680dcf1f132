"""The gin boundary for models: `build_model(...)` and the structure constants.

Gin files pick a network with `build_model.*` bindings; structures are Python objects
exposed as gin constants (`%structures.ASN50`, `%structures.ASN101`,
`%structures.FULL_ASNP50`, `%structures.DEMO_ASNP`) or named by string ('asn50', ...).
"""

import gin
import keras
import tensorflow as tf

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
                use_object_input=False,
                num_object_classes=151,
                max_pool_predictions=False,
                dropout_rate=0.0,
                variant=None,
                name=None,
                object_input="one_hot",
                authors_fusion_width=True):
  """Builds an AssembleNet or AssembleNet++ classifier.

  Args:
    structure: 'asn50', 'asn101', 'full_asnp50', a `structures.Structure` or the authors'
      nested-list form.
    edge_weights: 'searched' (fixed to the structure's searched values), `None` (learned:
      the one-shot connectivity search) or a node-aligned list of post-sigmoid values
      (fixed).
    model_type: 'assemblenet' (v1, ICLR 2020), 'assemblenet_plus' (ECCV 2020) or
      'assemblenet_plus_lite' (the authors' lite network, `assemblenet_plus_lite.py`:
      structures 'asnp_lite' / 'asnp_lite_objects', no `depth`, object ids only).
    depth: 26, 38, 50, 68, 77 or 101; `None` takes the structure's published depth
      (101 for 'asn101', else 50).
    num_frames: frames per clip.
    image_size: input height and width.
    num_classes: number of logits.
    attention_mode: 'peer', 'self' or `None`; only for 'assemblenet_plus'.
    use_object_input: the model takes an 'objects' input (needs an object stem and
      'assemblenet_plus').
    num_object_classes: channels of the object map.
    max_pool_predictions: soft temporal max-pooling of per-frame logits in the head.
    dropout_rate: dropout before the classifier (0 = none, as the authors).
    variant: alias of `model_type`.
    name: Keras model name (default: the class's).
    object_input: 'one_hot' (float32 maps) or 'ids' (uint8 class ids `[B, T, H, W]`, as
      the input pipeline's `objects_format='ids'` yields: same outputs, no 151-channel
      float input); only for object models. 'assemblenet_plus_lite' takes ids only.
    authors_fusion_width: only for 'assemblenet_plus_lite': reproduce the authors' fused
      widths read from the spatial width axis (True) or use channel counts (False); see
      `assemblenet_plus_lite`.

  Returns:
    A `keras.Model` taking {'rgb': float32 `[B, T, H, W, 3]`, 'objects' (object models
    only): float32 `[B, T, H, W, num_object_classes]`, or uint8 `[B, T, H, W]` with
    object_input='ids'} and returning float32 logits `[B, num_classes]`.
  """
  if variant is not None:
    if model_type not in (variant, "assemblenet"):
      raise ValueError(
          "`variant` is an alias of `model_type`; they disagree. Received: "
          f"model_type={model_type!r}, variant={variant!r}")
    model_type = variant
  if model_type not in MODEL_TYPES:
    raise ValueError(f"`model_type` must be one of {MODEL_TYPES}. Received: {model_type!r}")
  kwargs = {} if name is None else {"name": name}
  if model_type == "assemblenet_plus_lite":
    if depth is not None:
      raise ValueError(
          "AssembleNet++lite has fixed blocks per level "
          f"{structures.LITE_BLOCKS_PER_LEVEL}, no depth. Received: depth={depth!r}")
    if use_object_input and object_input != "ids":
      raise ValueError(
          "AssembleNet++lite takes object class ids; set object_input='ids'. "
          f"Received: object_input={object_input!r}")
    return assemblenet_plus_lite.AssembleNetPlusLite(
        structure=structure,
        edge_weights=edge_weights,
        num_frames=num_frames,
        image_size=image_size,
        num_classes=num_classes,
        attention_mode=attention_mode,
        use_object_input=use_object_input,
        num_object_classes=num_object_classes,
        max_pool_predictions=max_pool_predictions,
        dropout_rate=dropout_rate,
        authors_fusion_width=authors_fusion_width,
        **kwargs)
  if authors_fusion_width is not True:
    raise ValueError(
        "`authors_fusion_width` applies to model_type='assemblenet_plus_lite' only. "
        f"Received: model_type={model_type!r}, authors_fusion_width={authors_fusion_width!r}")
  if model_type == "assemblenet":
    if attention_mode is not None:
      raise ValueError(
          "AssembleNet (v1) has no attention; use model_type='assemblenet_plus'. "
          f"Received: attention_mode={attention_mode!r}")
    if use_object_input or object_input != "one_hot":
      raise ValueError(
          "AssembleNet (v1) has no object input; use model_type='assemblenet_plus'. "
          f"Received: use_object_input={use_object_input}, object_input={object_input!r}")
    return assemblenet.AssembleNet(
        structure=structure,
        edge_weights=edge_weights,
        depth=depth,
        num_frames=num_frames,
        image_size=image_size,
        num_classes=num_classes,
        max_pool_predictions=max_pool_predictions,
        dropout_rate=dropout_rate,
        **kwargs)
  return assemblenet_plus.AssembleNetPlus(
      structure=structure,
      edge_weights=edge_weights,
      depth=depth,
      num_frames=num_frames,
      image_size=image_size,
      num_classes=num_classes,
      attention_mode=attention_mode,
      use_object_input=use_object_input,
      num_object_classes=num_object_classes,
      max_pool_predictions=max_pool_predictions,
      dropout_rate=dropout_rate,
      object_input=object_input,
      **kwargs)


def uses_object_input(model: keras.Model) -> bool:
  """Whether `model` takes an 'objects' input (works on reloaded models too)."""
  inputs = model.input
  return isinstance(inputs, dict) and assemblenet.OBJECTS_KEY in inputs


def takes_object_ids(model: keras.Model) -> bool:
  """Whether `model`'s 'objects' input is uint8 class ids (`object_input='ids'`) rather than
  the 151-channel one-hot."""
  return uses_object_input(model) and tf.as_dtype(
      model.input[assemblenet.OBJECTS_KEY].dtype).is_integer


def model_inputs_spec(model: keras.Model):
  """`{input name: (shape without batch, dtype)}` of a built model."""
  return {
      key: (tuple(tensor.shape[1:]), tensor.dtype) for key, tensor in model.input.items()
  }
