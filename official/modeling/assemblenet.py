"""AssembleNet (ICLR 2020) and AssembleNet++ (ECCV 2020): one multi-stream (2+1)D network.

The network is a Keras functional model over a dict of inputs. Stems turn the clip into
per-frame feature maps `[N*T, H, W, C]`; every block node fuses its inputs with learned or
searched edge weights (`WeightedFusion`), gated by peer- or self-attention in AssembleNet++,
and runs a group of (2+1)D bottleneck blocks. `AssembleNetBackbone` ends with the final
(level-3) nodes' per-frame features; `AssembleNet` adds the classification head.
AssembleNet (v1) is the same network with `attention_mode=None` and no object stem;
`assemblenet_plus.AssembleNetPlus` only changes the defaults to the ECCV paper's model.
"""

import keras

from official.modeling import structures
from official.modeling.layers import bottleneck
from official.modeling.layers import fusion
from official.modeling.layers import heads
from official.modeling.layers import representation_flow
from official.modeling.layers import stems

# Total stem width shared by all stems (AssembleNet: 128 // number of stems each).
STEM_TOTAL_FILTERS = 128
RGB_KEY = "rgb"
OBJECTS_KEY = "objects"
# The layer whose output is the backbone's features (`[N, T, C]`, the head's input).
FEATURES_LAYER = "final_features"
FEATURES_KEY = "features"
HEAD_LAYER = "head"


def resolve_edge_weights(structure, edge_weights):
  """Per-node edge weights (tuple of tuples) or `None` for learned weights.

  Args:
    structure: a `structures.Structure`.
    edge_weights: 'searched' (the structure's own searched weights), `None` (learn them:
      the one-shot connectivity search), or a node-aligned list in the authors' form.
  """
  if edge_weights is None:
    return None
  if isinstance(edge_weights, str):
    if edge_weights != "searched":
      raise ValueError(
          f"`edge_weights` must be 'searched', None or a list. Received: {edge_weights!r}")
    if structure.edge_weights is None:
      raise ValueError(
          f"Structure {structure.name!r} has no searched edge weights; pass them as a list "
          "or use edge_weights=None to learn them. Received: edge_weights='searched'")
    return structure.edge_weights
  return structures.Structure(structure.nodes, edge_weights, structure.name).edge_weights


def _node_channels(structure, index, stem_filters, num_object_classes):
  node = structure.nodes[index]
  if isinstance(node, structures.BlockSpec):
    return node.output_channels
  return num_object_classes if node.stem_type == structures.OBJECT else stem_filters


def model_inputs(structure, num_frames, image_size):
  """The `keras.Input`s of a network of `structure`: 'rgb' float32 `[N, T, S, S, 3]` and,
  with an object stem, 'objects' uint8 class ids `[N, T, S, S]` (as TFDS stores them)."""
  inputs = {RGB_KEY: keras.Input((num_frames, image_size, image_size, 3), name=RGB_KEY)}
  if structure.has_stem(structures.OBJECT):
    inputs[OBJECTS_KEY] = keras.Input((num_frames, image_size, image_size), dtype="uint8",
                                      name=OBJECTS_KEY)
  return inputs


def assemble_backbone(inputs,
                      structure,
                      depth,
                      num_frames,
                      edge_weights=None,
                      attention_mode=None,
                      num_object_classes=151):
  """Builds the network's graph on symbolic inputs, up to the final features.

  Args:
    inputs: `model_inputs(...)`.
    structure: a validated `structures.Structure`.
    depth: network depth, a key of `structures.BLOCKS_PER_LEVEL`.
    num_frames: frames per clip T.
    edge_weights: resolved per-node weights (`resolve_edge_weights`) or `None` (learned).
    attention_mode: 'peer', 'self' or `None`.
    num_object_classes: K, channels of the object stem's one-hot maps.

  Returns:
    `(features, streams)`: float32 `[N, T, C]` (`FinalFeatures` of the final nodes) and
    every node's output `[N*T, h, w, C_k]`, in node order.
  """
  blocks_per_level = structures.BLOCKS_PER_LEVEL[depth]
  stem_filters = STEM_TOTAL_FILTERS // len(structure.stems)
  rgb = inputs[RGB_KEY]
  flow = None
  if structure.has_stem(structures.FLOW):
    # TV-L1 stays in float32 under mixed precision: 40 iterations on values up to 255.
    flow = representation_flow.RepresentationFlow(name="rep_flow", dtype="float32")(rgb)

  streams = []
  pooled = {}

  def spatial_mean(index):
    # Each stream is pooled once, however many peers and heads read it.
    if index not in pooled:
      pooled[index] = keras.layers.GlobalAveragePooling2D(name=f"node_{index}_gap")(
          streams[index])
    return pooled[index]

  for index, node in enumerate(structure.nodes):
    prefix = f"node_{index}"
    if isinstance(node, structures.StemSpec):
      if node.stem_type == structures.RGB:
        stream = stems.RGBStem(stem_filters, num_frames, node.temporal_dilation,
                               name=f"{prefix}_rgb_stem")(rgb)
      elif node.stem_type == structures.FLOW:
        stream = stems.FlowStem(stem_filters, num_frames, name=f"{prefix}_flow_stem")(flow)
      else:
        stream = stems.ObjectStem(num_frames, num_object_classes,
                                  name=f"{prefix}_object_stem")(inputs[OBJECTS_KEY])
      streams.append(stream)
      continue

    connections = [streams[j] for j in node.inputs]
    if len(connections) > 1 or attention_mode is not None:
      # The fused width ignores the object stem: 151 object channels are projected down,
      # the other streams are never projected up to them (AssembleNet++ code).
      widths = [
          _node_channels(structure, j, stem_filters, num_object_classes)
          for j in node.inputs
          if structure.level(j) != structures.OBJECT
      ]
      peers = None
      if attention_mode == "peer":
        # Candidate peers: every node of a lower level, stems included, connected or not.
        peers = [
            spatial_mean(k)
            for k in range(index)
            if structure.level(k) < node.level
        ]
      fuse = fusion.WeightedFusion(
          len(connections),
          edge_weights=None if edge_weights is None else list(edge_weights[index]),
          output_channels=max(widths) if widths and len(connections) > 1 else None,
          attention_mode=attention_mode,
          name=f"{prefix}_fusion")
      merged = fuse(connections, peers) if peers is not None else fuse(connections)
    else:
      merged = connections[0]
    streams.append(
        bottleneck.BlockGroup(
            node.filters,
            bottleneck.INTER_FILTERS_BY_LEVEL[node.level],
            blocks_per_level[node.level],
            num_frames,
            spatial_strides=node.spatial_stride,
            temporal_dilation=node.temporal_dilation,
            name=f"{prefix}_blocks")(merged))

  final = [spatial_mean(k) for k in structure.final_nodes]
  # In float32, so features (and the head's logits) are float32 under any mixed policy.
  features = heads.FinalFeatures(num_frames, name=FEATURES_LAYER, dtype="float32")(final)
  return features, streams


def check_arguments(structure, depth, num_frames, image_size, attention_mode,
                     num_object_classes):
  """Raises `ValueError` for arguments the network rejects."""
  if depth not in structures.BLOCKS_PER_LEVEL:
    raise ValueError(
        f"`depth` must be one of {sorted(structures.BLOCKS_PER_LEVEL)}. Received: {depth!r}")
  if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
    raise ValueError(f"`num_frames` must be a positive int. Received: {num_frames!r}")
  if structure.has_stem(structures.FLOW) and num_frames < 2:
    raise ValueError(
        "`num_frames` must be at least 2 for a structure with a flow stem (flow needs "
        f"frame pairs). Received: num_frames={num_frames}")
  if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
    raise ValueError(f"`image_size` must be a positive int. Received: {image_size!r}")
  if attention_mode not in fusion.ATTENTION_MODES:
    raise ValueError(
        f"Unknown attention_mode; expected one of {fusion.ATTENTION_MODES}. "
        f"Received: {attention_mode!r}")
  if (isinstance(num_object_classes, bool) or not isinstance(num_object_classes, int) or
      num_object_classes < 1):
    raise ValueError(
        f"`num_object_classes` must be a positive int. Received: {num_object_classes!r}")


def _resolve(structure, depth, edge_weights, num_frames, image_size, attention_mode,
             num_object_classes):
  """(structure, depth, resolved edge weights) after checking the arguments."""
  spec = structures.get_structure(structure)
  depth = (spec.depth or 50) if depth is None else depth
  check_arguments(spec, depth, num_frames, image_size, attention_mode, num_object_classes)
  return spec, depth, resolve_edge_weights(spec, edge_weights)


_ARGS_DOC = """structure: 'asn50', 'asn101', 'full_asnp50' (object stem), a
      `structures.Structure` or the authors' nested-list form.
    edge_weights: 'searched' (fixed to the structure's searched weights), `None` (learned:
      the one-shot connectivity search) or a node-aligned list of post-sigmoid values
      (fixed).
    depth: 26, 38, 50, 68, 77 or 101; `None` takes the structure's published depth
      (101 for 'asn101', else 50).
    num_frames: frames per clip T (time is never downsampled).
    image_size: input height and width S (of RGB and object maps).
    attention_mode: 'peer' (AssembleNet++), 'self' or `None` (AssembleNet: no attention).
    num_object_classes: K, object classes of the object maps (ADE-20K's 150 + "other" =
      151); only read when the structure has an object stem."""

_INPUTS_DOC = """Inputs: {'rgb': float32 `[N, T, S, S, 3]` in [-1, 1], and for a structure with an
  object stem 'objects': uint8 object class ids `[N, T, S, S]` (as the prepared dataset
  stores them; ids >= K count as no class)}."""


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNetBackbone(keras.Model):
  """The AssembleNet / AssembleNet++ network without its classifier.

  Args:
    {args}
    return_nodes: also return every node's output.

  {inputs} Output: float32 per-frame features `[N, T, C]`
  (the mean of the final nodes' per-frame spatial means: what the classification head
  reads), or with `return_nodes` a dict {{'features': that, 'node_<k>': `[N, T, h, w,
  C_k]` for every node k}}.

  Variables have the same paths as in the `AssembleNet` classifier of the same arguments
  (`node_<k>_...`), so a classifier's checkpoint initialises a backbone and back.
  """

  def __init__(self,
               structure="asn50",
               edge_weights="searched",
               depth=None,
               num_frames=32,
               image_size=224,
               attention_mode=None,
               num_object_classes=151,
               return_nodes=False,
               **kwargs):
    spec, depth, resolved = _resolve(structure, depth, edge_weights, num_frames, image_size,
                                     attention_mode, num_object_classes)
    inputs = model_inputs(spec, num_frames, image_size)
    features, streams = assemble_backbone(
        inputs, spec, depth, num_frames, edge_weights=resolved,
        attention_mode=attention_mode, num_object_classes=num_object_classes)
    outputs = features
    if return_nodes:
      outputs = {FEATURES_KEY: features}
      for index, stream in enumerate(streams):
        # [N*T, h, w, C] -> [N, T, h, w, C]
        outputs[f"node_{index}"] = keras.ops.reshape(
            stream, (-1, num_frames) + tuple(stream.shape[1:]))
    kwargs.setdefault("name", "assemblenet_backbone")  # not Keras' auto-numbered name
    super().__init__(inputs=inputs, outputs=outputs, **kwargs)
    self.structure = spec
    self.edge_weights = resolved
    self.depth = depth
    self.num_frames = num_frames
    self.image_size = image_size
    self.attention_mode = attention_mode
    self.num_object_classes = num_object_classes
    self.return_nodes = return_nodes

  @property
  def uses_objects(self):
    """Whether the network takes an 'objects' input (its structure has an object stem)."""
    return uses_objects(self)

  def get_config(self):
    config = _network_config(self)
    config["return_nodes"] = self.return_nodes
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["structure"] = structure_from_config(config)
    return cls(**config)


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNet(keras.Model):
  """AssembleNet / AssembleNet++ classifier: `AssembleNetBackbone` + `ClassificationHead`.

  With the defaults it is AssembleNet-50 (ICLR 2020): 'asn50', no attention.
  `attention_mode='peer'` and an object structure give AssembleNet++ (ECCV 2020), for
  which `assemblenet_plus.AssembleNetPlus` has the paper's defaults.

  Args:
    {args}
    num_classes: number of logits.
    max_pool_predictions: soft temporal max-pooling of per-frame logits.
    dropout_rate: dropout before the classifier (0 in the papers).

  {inputs} Output: float32 logits `[N, num_classes]`.

  One flat functional graph (layers `node_<k>_...`, `final_features`, `head`): the
  backbone's variables keep the same paths with any head; `backbone` is the sub-model up to
  the features, sharing the weights.
  """

  def __init__(self,
               structure="asn50",
               edge_weights="searched",
               depth=None,
               num_frames=32,
               image_size=224,
               num_classes=157,
               attention_mode=None,
               num_object_classes=151,
               max_pool_predictions=False,
               dropout_rate=0.0,
               **kwargs):
    spec, depth, resolved = _resolve(structure, depth, edge_weights, num_frames, image_size,
                                     attention_mode, num_object_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")
    inputs = model_inputs(spec, num_frames, image_size)
    features, _ = assemble_backbone(
        inputs, spec, depth, num_frames, edge_weights=resolved,
        attention_mode=attention_mode, num_object_classes=num_object_classes)
    # The head runs in float32 so logits are float32 under any mixed policy.
    logits = heads.ClassificationHead(
        num_classes, num_frames, max_pool_predictions=max_pool_predictions,
        dropout_rate=dropout_rate, name=HEAD_LAYER, dtype="float32")(features)
    kwargs.setdefault("name", "assemblenet")  # not Keras' auto-numbered name
    super().__init__(inputs=inputs, outputs=logits, **kwargs)
    self.structure = spec
    self.edge_weights = resolved
    self.depth = depth
    self.num_frames = num_frames
    self.image_size = image_size
    self.num_classes = num_classes
    self.attention_mode = attention_mode
    self.num_object_classes = num_object_classes
    self.max_pool_predictions = max_pool_predictions
    self.dropout_rate = dropout_rate

  @property
  def uses_objects(self):
    """Whether the network takes an 'objects' input (its structure has an object stem)."""
    return uses_objects(self)

  @property
  def backbone(self):
    """The sub-model from the inputs to the features `[N, T, C]` (`backbone_view`)."""
    return backbone_view(self)

  def get_config(self):
    config = _network_config(self)
    config.update({
        "num_classes": self.num_classes,
        "max_pool_predictions": self.max_pool_predictions,
        "dropout_rate": self.dropout_rate,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["structure"] = structure_from_config(config)
    return cls(**config)


for _cls in (AssembleNetBackbone, AssembleNet):
  _cls.__doc__ = _cls.__doc__.format(args=_ARGS_DOC, inputs=_INPUTS_DOC)


def uses_objects(model):
  """Whether `model` takes an 'objects' input (also for a reloaded or wrapped model)."""
  inputs = model.input
  return isinstance(inputs, dict) and OBJECTS_KEY in inputs


def backbone_view(model):
  """The sub-model of a classifier from its inputs to its features (the output of the
  layer `FEATURES_LAYER`, the head's input), sharing the weights: a new `keras.Model` view
  on each call."""
  return keras.Model(model.input, model.get_layer(FEATURES_LAYER).output,
                     name=f"{model.name}_backbone")


def _network_config(model):
  """The config of what the backbone and the classifier share."""
  return {
      "name": model.name,
      "trainable": model.trainable,
      "structure": model.structure.to_list(),
      "structure_name": model.structure.name,
      "edge_weights": edge_weights_config(model.structure, model.edge_weights),
      "depth": model.depth,
      "num_frames": model.num_frames,
      "image_size": model.image_size,
      "attention_mode": model.attention_mode,
      "num_object_classes": model.num_object_classes,
  }


def edge_weights_config(structure, edge_weights):
  if edge_weights is None:
    return None
  return structures.Structure(structure.nodes, edge_weights).edge_weights_list()


def structure_from_config(config):
  """Pops 'structure' and 'structure_name' from a model config; returns the Structure."""
  name = config.pop("structure_name", "custom")
  nodes = config.pop("structure")
  return structures.Structure.from_list(nodes, name=name)
