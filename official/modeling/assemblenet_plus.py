"""AssembleNet++ (Ryoo et al., ECCV 2020): AssembleNet with attention and object input.

Every connection is gated per channel by peer-attention (conditioned on a learned softmax
mix of all lower-level nodes) or self-attention, and an object-segmentation stem can feed
per-frame object-class maps into the graph (`full_asnp50`, node 4).
"""

import keras

from official.modeling import assemblenet
from official.modeling import structures
from official.modeling.layers import fusion
from official.modeling.layers import stems


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNetPlus(keras.Model):
  """AssembleNet++: weighted connections with peer- or self-attention, optional objects.

  Args:
    structure: 'full_asnp50' (needs object input), 'asn50', 'asn101', a
      `structures.Structure` or the authors' nested-list form.
    edge_weights: 'searched', `None` (learned) or a node-aligned list (fixed).
    depth: 26, 38, 50, 68, 77 or 101; `None` takes the structure's published depth
      (101 for 'asn101', else 50).
    num_frames: frames per clip T.
    image_size: input height and width (of both RGB and object maps).
    num_classes: number of logits.
    attention_mode: 'peer' (the paper's model), 'self' or `None` (no attention anywhere).
    use_object_input: the model takes an 'objects' input; requires an object stem in the
      structure, and a structure with an object stem requires it.
    num_object_classes: channels of the object map (ADE-20K 150 classes + 1).
    object_input: 'one_hot' (float maps `[N, T, H, W, num_object_classes]`, one-hot or
      scores) or 'ids' (uint8 class-id maps `[N, T, H, W]`, as the input pipeline's
      `objects_format='ids'`; the stem pools their one-hot without materialising it, which
      gives the same network output as feeding the one-hot maps).
    max_pool_predictions: soft temporal max-pooling of per-frame logits.
    dropout_rate: dropout before the classifier (0 in the paper).

  Inputs: {'rgb': float32 `[N, T, H, W, 3]` in [-1, 1], 'objects' (object models only):
  float32 `[N, T, H, W, num_object_classes]` one-hot or scores, or with
  object_input='ids' uint8 `[N, T, H, W]`}. Output: float32 logits
  `[N, num_classes]`.
  """

  def __init__(self,
               structure="full_asnp50",
               edge_weights="searched",
               depth=None,
               num_frames=32,
               image_size=224,
               num_classes=157,
               attention_mode="peer",
               use_object_input=True,
               num_object_classes=151,
               max_pool_predictions=False,
               dropout_rate=0.0,
               object_input="one_hot",
               **kwargs):
    spec = structures.get_structure(structure)
    if attention_mode not in fusion.ATTENTION_MODES:
      raise ValueError(
          f"Unknown attention_mode; expected one of {fusion.ATTENTION_MODES}. "
          f"Received: {attention_mode!r}")
    has_object_stem = spec.has_stem(structures.OBJECT)
    if use_object_input and not has_object_stem:
      raise ValueError(
          f"use_object_input=True but structure {spec.name!r} has no object stem "
          f"(stem type {structures.OBJECT}). Received stems: "
          f"{[n.to_list() for _, n in spec.stems]}")
    if has_object_stem and not use_object_input:
      raise ValueError(
          f"Structure {spec.name!r} has an object stem, so it needs use_object_input=True "
          "(for peer-attention without objects the authors use 'asn50'). Received: "
          "use_object_input=False")
    if use_object_input and (isinstance(num_object_classes, bool) or
                             not isinstance(num_object_classes, int) or
                             num_object_classes < 1):
      raise ValueError(
          f"`num_object_classes` must be a positive int. Received: {num_object_classes!r}")
    depth = (spec.depth or 50) if depth is None else depth
    assemblenet.check_common_arguments(spec, depth, num_frames, image_size, num_classes)
    resolved = assemblenet.resolve_edge_weights(spec, edge_weights)
    inputs = {assemblenet.RGB_KEY: assemblenet.rgb_input(num_frames, image_size)}
    if object_input not in stems.OBJECT_INPUTS:
      raise ValueError(
          f"`object_input` must be one of {stems.OBJECT_INPUTS}. Received: {object_input!r}")
    if use_object_input and object_input == "ids":
      inputs[assemblenet.OBJECTS_KEY] = keras.Input(
          (num_frames, image_size, image_size), dtype="uint8", name=assemblenet.OBJECTS_KEY)
    elif use_object_input:
      inputs[assemblenet.OBJECTS_KEY] = keras.Input(
          (num_frames, image_size, image_size, num_object_classes),
          name=assemblenet.OBJECTS_KEY)
    logits = assemblenet.assemble_network(
        inputs, spec, depth, num_frames, num_classes,
        edge_weights=resolved,
        attention_mode=attention_mode,
        num_object_classes=num_object_classes,
        max_pool_predictions=max_pool_predictions,
        dropout_rate=dropout_rate,
        object_input=object_input)
    kwargs.setdefault("name", "assemblenet_plus")  # not Keras' auto-numbered name
    super().__init__(inputs=inputs, outputs=logits, **kwargs)
    self.structure = spec
    self.edge_weights = resolved
    self.depth = depth
    self.num_frames = num_frames
    self.image_size = image_size
    self.num_classes = num_classes
    self.attention_mode = attention_mode
    self.use_object_input = use_object_input
    self.num_object_classes = num_object_classes
    self.max_pool_predictions = max_pool_predictions
    self.dropout_rate = dropout_rate
    self.object_input = object_input

  def get_config(self):
    config = assemblenet.shared_config(self)
    config.update({
        "attention_mode": self.attention_mode,
        "use_object_input": self.use_object_input,
        "num_object_classes": self.num_object_classes,
        "object_input": self.object_input,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["structure"] = assemblenet.structure_from_config(config)
    return cls(**config)
