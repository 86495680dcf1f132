"""AssembleNet++lite: the authors' memory-lean AssembleNet++, with an optional object stream.

The authors' third network (google-research/google-research
`assemblenet/assemblenet_plus_lite.py`, structure `asnp_lite` in `model_structures.py`;
AssembleNet++, ECCV 2020, supplementary material), sized so that one 16 GB GPU trains a
batch of 8 clips of 32 frames. Against AssembleNet++ (`assemblenet_plus.py`):

- stems: one 24-channel stem per modality, a 1x3x3 stride-2 conv and a temporal conv of
  kernel 3 (no max-pool, so the backbone starts at H/2); the flow is the in-model
  representation flow with 20 TV-L1 iterations instead of 40;
- block nodes: groups of inverted-bottleneck 3D residual blocks (`lite_blocks`) with an
  (expand, middle, out) width triple, `LITE_BLOCKS_PER_LEVEL` = (3, 5, 11, 7) blocks;
- head: the (single) level-3 node, 1x1x1 convs to 432 and 2048 channels, global average
  pooling over T, H and W, then the classifier;
- weighted connections and peer-attention are those of AssembleNet++ (`WeightedFusion`),
  applied per frame.

The authors' file has three faults; this model decides per fault:

1. Fusion width (`authors_fusion_width`). In 5-D mode the authors' fusion reads the width
   of the fused tensor from axis 3 of `[N, T, H, W, C]`, the spatial width W, not the
   channel count (`lg_channel = inp.shape[3]` in `fusion_with_peer_attention`, with the
   comparison `inp.shape[-1] > lg_channel` then mixing channels and widths). Every fused
   node therefore projects its inputs to a spatial size's worth of channels (112 at the
   level-0, -1 and -2 nodes of a 224 x 224 network, 14 at the level-3 node), and the network
   depends on the image size. `authors_fusion_width=True` (default) reproduces it: the
   parameter count then equals the authors' graph (50,108,773 trainable at 224 x 224, 157
   classes, peer-attention). `False` uses the widest non-object input, as AssembleNet++
   does in 4-D mode (50,042,581, independent of the image size). The searched edge weights
   were found with the faulty graph.
2. Dropout. The authors pass `FLAGS.dropout_keep_prob` to `Dropout`, whose argument is the
   rate of dropped units (their default, None, has no dropout). Here `dropout_rate` is a
   drop rate; to repeat an authors' run with `--dropout_keep_prob=p`, pass
   `dropout_rate=p` (that is what their graph dropped). Default 0, as theirs.
3. Object stem. The authors' lite file never wires an object stem (its stem type -3
   branch feeds `None` to a conv stem and drops the result; `asnp_lite` has no object
   stem). Here a structure with an object stem (`asnp_lite_objects`: the object stem
   feeds every node below level 3, as node 4 of `full_asnp50`) gets `LiteObjectStem`, the
   AssembleNet++ object stem (no weights, max-pooled one-hot class maps) at the lite
   stems' resolution H/2. Its object maps are uint8 class ids, one-hot inside the graph.

Peer candidates are every lower-level node in index order (the authors list them by level,
which only permutes the softmax entries). The authors' 'self' mode also builds the peer
Dense layers it never uses; this model does not, so its 'self' count is smaller.
"""

import keras

from official.modeling import assemblenet
from official.modeling import structures
from official.modeling.layers import fusion
from official.modeling.layers import heads
from official.modeling.layers import lite_blocks
from official.modeling.layers import representation_flow

# The authors' lite flow: 20 TV-L1 iterations (the full networks use 40).
FLOW_ITERATIONS = 20


def authors_fusion_width(input_shapes, num_object_classes):
  """The fused width the authors' 5-D fusion computes (fault 1 of the module docstring).

  Mirrors `lg_channel` of `fusion_with_peer_attention(use_5d_mode=True)`: over the inputs
  in order, an input whose channel count exceeds the running value (and differs from
  `num_object_classes`) sets it to the input's spatial WIDTH.

  Args:
    input_shapes: static per-frame shapes `[N*T, H, W, C]` of the node's inputs.
    num_object_classes: the channel count the authors exclude (the object stem's).
  """
  width = 0
  for shape in input_shapes:
    if shape[-1] > width and shape[-1] != num_object_classes:
      width = shape[2]  # axis 3 of [N, T, H, W, C]: W
  return width


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNetPlusLite(keras.Model):
  """AssembleNet++lite: inverted-bottleneck 3D blocks, weighted peer-attended connections.

  Args:
    structure: 'asnp_lite' (the authors', RGB + flow), 'asnp_lite_objects' (with an object
      stem: the model then takes 'objects'), a `structures.Structure` of `LiteBlockSpec`s or
      the authors' list form with (expand, middle, out) triples. Exactly one level-3 node.
    edge_weights: 'searched' (fixed, `asnp_lite` only), `None` (learned, the one-shot
      connectivity search) or a node-aligned list of post-sigmoid values (fixed).
    num_frames: frames per clip T (at least 2 with a flow stem).
    image_size: input height and width (of the RGB clip and the object maps).
    num_classes: number of logits (the authors' default 339 is Moments in Time; Charades
      157).
    attention_mode: 'peer' (AssembleNet++), 'self' or `None`.
    num_object_classes: K, object classes of the id maps (ADE-20K 150 + 1).
    max_pool_predictions: soft temporal max-pooling of per-frame logits (authors'
      `max_pool_preditions`).
    dropout_rate: fraction of features dropped before the classifier (see fault 2).
    authors_fusion_width: `True` reproduces the authors' fused widths read from the
      spatial width axis, `False` uses channel counts (see fault 1).
    blocks_per_level: inverted-bottleneck blocks per node, by level.

  Inputs: {'rgb': float32 `[N, T, H, W, 3]` in [-1, 1], 'objects' (object structures
  only): uint8 class ids `[N, T, H, W]`}. Output: float32 logits `[N, num_classes]`.
  """

  def __init__(self,
               structure="asnp_lite",
               edge_weights="searched",
               num_frames=32,
               image_size=224,
               num_classes=157,
               attention_mode="peer",
               num_object_classes=151,
               max_pool_predictions=False,
               dropout_rate=0.0,
               authors_fusion_width=True,
               blocks_per_level=structures.LITE_BLOCKS_PER_LEVEL,
               **kwargs):
    spec = structures.get_lite_structure(structure)
    if attention_mode not in fusion.ATTENTION_MODES:
      raise ValueError(
          f"Unknown attention_mode; expected one of {fusion.ATTENTION_MODES}. "
          f"Received: {attention_mode!r}")
    # Depth 50 only satisfies the shared check: the lite blocks come from blocks_per_level.
    assemblenet.check_arguments(spec, 50, num_frames, image_size, attention_mode,
                                num_object_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")
    if len(spec.final_nodes) != 1:
      raise ValueError(
          "The lite head reads one level-3 node (the authors' head ignores any other); "
          f"the structure has {len(spec.final_nodes)}. Received: nodes {spec.final_nodes}")
    if not isinstance(authors_fusion_width, bool):
      raise ValueError(
          f"`authors_fusion_width` must be a bool. Received: {authors_fusion_width!r}")
    blocks_per_level = tuple(blocks_per_level)
    if len(blocks_per_level) != structures.NUM_LEVELS or any(
        isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks_per_level):
      raise ValueError(
          f"`blocks_per_level` must be 4 positive ints. Received: {blocks_per_level!r}")
    resolved = assemblenet.resolve_edge_weights(spec, edge_weights)

    inputs = assemblenet.model_inputs(spec, num_frames, image_size)
    logits = _lite_network(inputs, spec, num_frames, num_classes, resolved, attention_mode,
                           num_object_classes, max_pool_predictions, dropout_rate,
                           authors_fusion_width, blocks_per_level)
    kwargs.setdefault("name", "assemblenet_plus_lite")  # not Keras' auto-numbered name
    super().__init__(inputs=inputs, outputs=logits, **kwargs)
    self.structure = spec
    self.edge_weights = resolved
    self.num_frames = num_frames
    self.image_size = image_size
    self.num_classes = num_classes
    self.attention_mode = attention_mode
    self.num_object_classes = num_object_classes
    self.max_pool_predictions = max_pool_predictions
    self.dropout_rate = dropout_rate
    self.authors_fusion_width = authors_fusion_width
    self.blocks_per_level = blocks_per_level

  @property
  def uses_objects(self):
    """Whether the network takes an 'objects' input (its structure has an object stem)."""
    return assemblenet.uses_objects(self)

  @property
  def backbone(self):
    """The sub-model from the inputs to the features `[N, T, 2048]` (the head's input),
    sharing the weights (`assemblenet.backbone_view`)."""
    return assemblenet.backbone_view(self)

  def get_config(self):
    return {
        "name": self.name,
        "trainable": self.trainable,
        "structure": self.structure.to_list(),
        "structure_name": self.structure.name,
        "edge_weights": assemblenet.edge_weights_config(self.structure, self.edge_weights),
        "num_frames": self.num_frames,
        "image_size": self.image_size,
        "num_classes": self.num_classes,
        "attention_mode": self.attention_mode,
        "num_object_classes": self.num_object_classes,
        "max_pool_predictions": self.max_pool_predictions,
        "dropout_rate": self.dropout_rate,
        "authors_fusion_width": self.authors_fusion_width,
        "blocks_per_level": list(self.blocks_per_level),
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    name = config.pop("structure_name", "custom")
    config["structure"] = structures.lite_structure_from_list(config.pop("structure"),
                                                              name=name)
    return cls(**config)


def _lite_network(inputs, structure, num_frames, num_classes, edge_weights, attention_mode,
                  num_object_classes, max_pool_predictions, dropout_rate,
                  use_authors_width, blocks_per_level):
  """Builds the lite graph on symbolic inputs; returns the logits `[N, num_classes]`."""
  rgb = inputs[assemblenet.RGB_KEY]
  flow = None
  if structure.has_stem(structures.FLOW):
    # TV-L1 stays in float32 under mixed precision (values up to 255).
    flow = representation_flow.RepresentationFlow(
        num_iterations=FLOW_ITERATIONS, name="rep_flow", dtype="float32")(rgb)

  streams = []
  pooled = {}

  def spatial_mean(index):
    if index not in pooled:
      pooled[index] = keras.layers.GlobalAveragePooling2D(name=f"node_{index}_gap")(
          streams[index])
    return pooled[index]

  for index, node in enumerate(structure.nodes):
    prefix = f"node_{index}"
    if isinstance(node, structures.StemSpec):
      if node.stem_type == structures.OBJECT:
        stream = lite_blocks.LiteObjectStem(
            num_frames, num_object_classes,
            name=f"{prefix}_object_stem")(inputs[assemblenet.OBJECTS_KEY])
      else:
        kind = "rgb" if node.stem_type == structures.RGB else "flow"
        stream = lite_blocks.LiteStem(
            lite_blocks.STEM_FILTERS, num_frames, node.temporal_dilation,
            name=f"{prefix}_{kind}_stem")(rgb if kind == "rgb" else flow)
      streams.append(stream)
      continue

    connections = [streams[j] for j in node.inputs]
    if len(connections) > 1 or attention_mode is not None:
      output_channels = None
      if len(connections) > 1:
        if use_authors_width:
          output_channels = authors_fusion_width([c.shape for c in connections],
                                                 num_object_classes)
        else:
          output_channels = max(
              c.shape[-1] for j, c in zip(node.inputs, connections)
              if structure.level(j) != structures.OBJECT)
      peers = None
      if attention_mode == "peer":
        # Candidate peers: every lower-level node, stems included, connected or not.
        peers = [spatial_mean(k) for k in range(index) if structure.level(k) < node.level]
      fuse = fusion.WeightedFusion(
          len(connections),
          edge_weights=None if edge_weights is None else list(edge_weights[index]),
          output_channels=output_channels,
          attention_mode=attention_mode,
          name=f"{prefix}_fusion")
      merged = fuse(connections, peers) if peers is not None else fuse(connections)
    else:
      merged = connections[0]
    streams.append(
        lite_blocks.InvertedBottleneckGroup(
            node.filters,
            blocks_per_level[node.level],
            num_frames,
            spatial_strides=node.spatial_stride,
            temporal_dilation=node.temporal_dilation,
            name=f"{prefix}_blocks")(merged))

  final = lite_blocks.LiteHeadConvs(name="head_convs")(streams[structure.final_nodes[0]])
  features = keras.layers.GlobalAveragePooling2D(name="head_gap")(final)
  # Mean over frames of the per-frame spatial means = the authors' average over T, H, W.
  # The classifier runs in float32 so logits are float32 under any mixed policy.
  features = heads.FinalFeatures(num_frames, name=assemblenet.FEATURES_LAYER,
                                 dtype="float32")([features])
  return heads.ClassificationHead(
      num_classes,
      num_frames,
      max_pool_predictions=max_pool_predictions,
      dropout_rate=dropout_rate,
      name=assemblenet.HEAD_LAYER,
      dtype="float32")(features)
