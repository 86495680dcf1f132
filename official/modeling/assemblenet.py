"""AssembleNet (Ryoo et al., ICLR 2020): a multi-stream (2+1)D network from a structure.

The network is a Keras functional model over a dict of inputs. Stems turn the clip into
per-frame feature maps `[N*T, H, W, C]`; every block node fuses its inputs with learned or
searched edge weights (`WeightedFusion`) and runs a group of (2+1)D bottleneck blocks; the
head averages the level-3 nodes and classifies. `assemble_network` builds that graph for
both AssembleNet and AssembleNet++ (`assemblenet_plus.py`), which only adds attention and
the object stem.
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


def assemble_network(inputs,
                     structure,
                     depth,
                     num_frames,
                     num_classes,
                     edge_weights=None,
                     attention_mode=None,
                     num_object_classes=151,
                     max_pool_predictions=False,
                     dropout_rate=0.0,
                     object_input="one_hot"):
  """Builds the AssembleNet/AssembleNet++ graph on symbolic inputs; returns the logits.

  Args:
    inputs: dict of `keras.Input`s: 'rgb' `[N, T, H, W, 3]`, and 'objects'
      `[N, T, H, W, num_object_classes]` (or ids `[N, T, H, W]`) when the structure has
      an object stem.
    structure: a validated `structures.Structure`.
    depth: network depth, a key of `structures.BLOCKS_PER_LEVEL`.
    num_frames: frames per clip T.
    num_classes: number of logits.
    edge_weights: resolved per-node weights (`resolve_edge_weights`) or `None` (learned).
    attention_mode: 'peer', 'self' or `None`.
    num_object_classes: channels of the object map.
    max_pool_predictions: soft temporal max-pooling of per-frame logits in the head.
    dropout_rate: dropout before the classifier.
    object_input: 'one_hot' or 'ids', the form of the 'objects' input (`stems.ObjectStem`).
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
        stream = stems.ObjectStem(
            num_frames, object_input, num_object_classes,
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
  # The head runs in float32 so logits are float32 under any mixed policy.
  return heads.ClassificationHead(
      num_classes,
      num_frames,
      max_pool_predictions=max_pool_predictions,
      dropout_rate=dropout_rate,
      name="head",
      dtype="float32")(final)


def check_common_arguments(structure, depth, num_frames, image_size, num_classes):
  """Raises `ValueError` for arguments every AssembleNet variant rejects."""
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
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")


def rgb_input(num_frames, image_size):
  return keras.Input((num_frames, image_size, image_size, 3), name=RGB_KEY)


def shared_config(model):
  """The config of what AssembleNet and AssembleNetPlus have in common."""
  return {
      "name": model.name,
      "trainable": model.trainable,
      "structure": model.structure.to_list(),
      "structure_name": model.structure.name,
      "edge_weights": edge_weights_config(model.structure, model.edge_weights),
      "depth": model.depth,
      "num_frames": model.num_frames,
      "image_size": model.image_size,
      "num_classes": model.num_classes,
      "max_pool_predictions": model.max_pool_predictions,
      "dropout_rate": model.dropout_rate,
  }


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNet(keras.Model):
  """AssembleNet (v1): RGB and flow stems, weighted connections, no attention.

  Args:
    structure: 'asn50', 'asn101', 'full_asnp50', a `structures.Structure` or the authors'
      nested-list form. Object stems need `AssembleNetPlus`.
    edge_weights: 'searched' (fixed to the structure's searched weights), `None` (learned,
      the one-shot connectivity search) or a node-aligned list (fixed).
    depth: 26, 38, 50, 68, 77 or 101; `None` takes the structure's published depth
      (101 for 'asn101', else 50).
    num_frames: frames per clip T (time is never downsampled).
    image_size: input height and width.
    num_classes: number of logits.
    max_pool_predictions: soft temporal max-pooling of per-frame logits.
    dropout_rate: dropout before the classifier (0 in the paper).

  Inputs: {'rgb': float32 `[N, T, H, W, 3]` in [-1, 1]}. Output: float32 logits
  `[N, num_classes]`.
  """

  def __init__(self,
               structure="asn50",
               edge_weights="searched",
               depth=None,
               num_frames=32,
               image_size=224,
               num_classes=157,
               max_pool_predictions=False,
               dropout_rate=0.0,
               **kwargs):
    spec = structures.get_structure(structure)
    if spec.has_stem(structures.OBJECT):
      raise ValueError(
          f"Structure {spec.name!r} has an object stem; AssembleNet (v1) has no object "
          "input, use AssembleNetPlus with use_object_input=True. Received: "
          f"{[n.to_list() for _, n in spec.stems]}")
    depth = (spec.depth or 50) if depth is None else depth
    check_common_arguments(spec, depth, num_frames, image_size, num_classes)
    resolved = resolve_edge_weights(spec, edge_weights)
    inputs = {RGB_KEY: rgb_input(num_frames, image_size)}
    logits = assemble_network(
        inputs, spec, depth, num_frames, num_classes,
        edge_weights=resolved,
        max_pool_predictions=max_pool_predictions,
        dropout_rate=dropout_rate)
    kwargs.setdefault("name", "assemblenet")  # not Keras' auto-numbered name
    super().__init__(inputs=inputs, outputs=logits, **kwargs)
    self.structure = spec
    self.edge_weights = resolved
    self.depth = depth
    self.num_frames = num_frames
    self.image_size = image_size
    self.num_classes = num_classes
    self.max_pool_predictions = max_pool_predictions
    self.dropout_rate = dropout_rate
    self.use_object_input = False

  def get_config(self):
    return shared_config(self)

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["structure"] = structure_from_config(config)
    return cls(**config)


def edge_weights_config(structure, edge_weights):
  if edge_weights is None:
    return None
  return structures.Structure(structure.nodes, edge_weights).edge_weights_list()


def structure_from_config(config):
  """Pops 'structure' and 'structure_name' from a model config; returns the Structure."""
  name = config.pop("structure_name", "custom")
  nodes = config.pop("structure")
  return structures.Structure.from_list(nodes, name=name)
