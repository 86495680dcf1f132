"""AssembleNet structures: typed node specs and the paper's searched networks.

A structure is a list of nodes in topological order. Stems read the inputs; every block
node is a group of (2+1)D bottleneck blocks fed by a weighted sum of earlier nodes. The
authors write a structure as nested lists (google-research `assemblenet/model_structures.py`):
a stem is `[stem_type, temporal_dilation]`, a block
`[level, [input indices], filters, temporal_dilation, spatial_stride, 0]`, and the searched
edge weights are a node-aligned list with `[]` for stems and single-input nodes and
`[[w_1, ..., w_k]]` (post-sigmoid, in input order) otherwise. `Structure.from_list` reads
that form and `to_list` writes it back.
"""

import dataclasses
from typing import Optional, Sequence, Union

RGB = -1
FLOW = -2
OBJECT = -3
STEM_TYPES = {RGB: "rgb", FLOW: "flow", OBJECT: "object"}

# Bottleneck blocks per node, by network depth and node level 0..3 (AssembleNet, App. A).
BLOCKS_PER_LEVEL = {
    26: (2, 2, 2, 2),
    38: (2, 4, 4, 2),
    50: (3, 4, 6, 3),
    68: (3, 4, 12, 3),
    77: (3, 4, 15, 3),
    101: (3, 4, 23, 3),
}
NUM_LEVELS = 4


def _positive_int(value, what):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{what} must be a positive int. Received: {value!r}")


@dataclasses.dataclass(frozen=True)
class StemSpec:
  """An input stem: `stem_type` RGB (-1), FLOW (-2) or OBJECT (-3)."""
  stem_type: int
  temporal_dilation: int = 1

  def __post_init__(self):
    if self.stem_type not in STEM_TYPES:
      raise ValueError(
          f"Unknown stem type; expected one of {sorted(STEM_TYPES)} "
          f"({', '.join(STEM_TYPES.values())}). Received: {self.stem_type!r}")
    _positive_int(self.temporal_dilation, "A stem's temporal_dilation")

  @property
  def kind(self):
    return STEM_TYPES[self.stem_type]

  def to_list(self):
    return [self.stem_type, self.temporal_dilation]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """A block node: `level` 0..3, input node indices, bottleneck `filters` and strides."""
  level: int
  inputs: tuple
  filters: int
  temporal_dilation: int = 1
  spatial_stride: int = 1

  def __post_init__(self):
    object.__setattr__(self, "inputs", tuple(self.inputs))
    if self.level not in range(NUM_LEVELS):
      raise ValueError(f"A block's level must be in 0..3. Received: {self.level!r}")
    if not self.inputs:
      raise ValueError(f"A block needs at least one input. Received: {self.inputs}")
    if len(set(self.inputs)) != len(self.inputs):
      raise ValueError(f"A block's inputs must be distinct. Received: {self.inputs}")
    _positive_int(self.filters, "A block's filters")
    _positive_int(self.temporal_dilation, "A block's temporal_dilation")
    _positive_int(self.spatial_stride, "A block's spatial_stride")

  @property
  def output_channels(self):
    return 4 * self.filters

  def to_list(self):
    return [self.level, list(self.inputs), self.filters, self.temporal_dilation,
            self.spatial_stride, 0]


NodeSpec = Union[StemSpec, BlockSpec]


def _specs_from_list(nodes, block_spec, block_error):
  """Node specs from the authors' list form: stems `[type, dilation]`, blocks
  `block_spec(level, inputs, filters, dilation, stride)` from 5 or 6 entries
  (`block_error`, formatted with `index` and `node`, names the expected form)."""
  specs = []
  for index, node in enumerate(nodes):
    node = list(node)
    if not node:
      raise ValueError(f"Node {index} is empty. Received: {node}")
    if node[0] < 0:
      if len(node) != 2:
        raise ValueError(
            f"Stem node {index} must be [stem_type, temporal_dilation]. Received: {node}")
      specs.append(StemSpec(node[0], node[1]))
    else:
      if len(node) not in (5, 6):
        raise ValueError(block_error.format(index=index, node=node))
      specs.append(block_spec(node[0], tuple(node[1]), node[2], node[3], node[4]))
  return tuple(specs)


@dataclasses.dataclass(frozen=True)
class Structure:
  """A validated AssembleNet graph, with its searched edge weights when known.

  Attributes:
    nodes: stems and blocks in topological order. Stems come first and block levels never
      decrease along the list (every published structure has this form, and
      peer-attention relies on it: a node's candidate peers are all earlier-level nodes).
    edge_weights: `None`, or one tuple per node: `()` for stems and single-input nodes,
      else the post-sigmoid weight of each input, in input order, each in (0, 1).
    name: a label for logs and configs.
    depth: the network depth the structure was published with (`None` if unknown); a
      model built with `depth=None` uses it (and 50 when unknown).
  """
  nodes: tuple
  edge_weights: Optional[tuple] = None
  name: str = "custom"
  depth: Optional[int] = None

  def __post_init__(self):
    object.__setattr__(self, "nodes", tuple(self.nodes))
    if not self.nodes:
      raise ValueError("A structure needs at least one node. Received: []")
    seen_block = False
    last_level = 0
    for index, node in enumerate(self.nodes):
      if isinstance(node, StemSpec):
        if seen_block:
          raise ValueError(
              f"Stems must come before blocks; node {index} is a stem after a block. "
              f"Received: {node}")
        continue
      if not isinstance(node, BlockSpec):
        raise ValueError(f"Node {index} is not a StemSpec or BlockSpec. Received: {node!r}")
      if not seen_block and index == 0:
        raise ValueError("A structure must start with at least one stem. Received: "
                         f"node 0 = {node}")
      seen_block = True
      for source in node.inputs:
        if not isinstance(source, int) or not 0 <= source < index:
          raise ValueError(
              f"Node {index} has input {source!r}, which is not an earlier node index "
              f"(0 <= input < {index}). Received: inputs {list(node.inputs)}")
      if node.level < last_level:
        raise ValueError(
            f"Block levels must not decrease along the structure; node {index} has level "
            f"{node.level} after level {last_level}. Received: {node}")
      last_level = node.level
    if not any(isinstance(n, BlockSpec) and n.level == NUM_LEVELS - 1 for n in self.nodes):
      raise ValueError("A structure needs at least one level-3 block for the head. "
                       f"Received levels: {[getattr(n, 'level', None) for n in self.nodes]}")
    if self.edge_weights is not None:
      object.__setattr__(self, "edge_weights", self._check_edge_weights(self.edge_weights))
    if self.depth is not None and self.depth not in BLOCKS_PER_LEVEL:
      raise ValueError(
          f"`depth` must be one of {sorted(BLOCKS_PER_LEVEL)}. Received: {self.depth!r}")

  def _check_edge_weights(self, edge_weights):
    edge_weights = tuple(edge_weights)
    if len(edge_weights) != len(self.nodes):
      raise ValueError(
          f"Expected one edge-weight entry per node ({len(self.nodes)}). "
          f"Received: {len(edge_weights)} entries")
    checked = []
    for index, (node, weights) in enumerate(zip(self.nodes, edge_weights)):
      weights = _flatten_node_weights(weights)
      fused = isinstance(node, BlockSpec) and len(node.inputs) > 1
      expected = len(node.inputs) if fused else 0
      if len(weights) != expected:
        raise ValueError(
            f"Node {index} needs {expected} edge weights (one per input of a multi-input "
            f"block, none otherwise). Received: {list(weights)}")
      for w in weights:
        if not 0.0 < w < 1.0:
          raise ValueError(
              f"Node {index}: edge weights are post-sigmoid values in (0, 1). "
              f"Received: {list(weights)}")
      checked.append(weights)
    return tuple(checked)

  @classmethod
  def from_list(cls, nodes, edge_weights=None, name="custom", depth=None):
    """Builds a structure from the authors' nested-list form (see the module docstring)."""
    specs = _specs_from_list(
        nodes, BlockSpec,
        "Block node {index} must be [level, [inputs], filters, temporal_dilation, "
        "spatial_stride, 0]. Received: {node}")
    return cls(specs, edge_weights, name, depth)

  def to_list(self):
    return [node.to_list() for node in self.nodes]

  def edge_weights_list(self):
    """Edge weights in the authors' form (`[]` / `[[w...]]` per node), or `None`."""
    if self.edge_weights is None:
      return None
    return [[list(w)] if w else [] for w in self.edge_weights]

  def node_edge_weights(self, index):
    """The searched weights of node `index` as a list (empty if none), or `None`."""
    if self.edge_weights is None:
      return None
    return list(self.edge_weights[index])

  @property
  def blocks(self):
    """`(index, BlockSpec)` pairs in order."""
    return [(i, n) for i, n in enumerate(self.nodes) if isinstance(n, BlockSpec)]

  @property
  def stems(self):
    """`(index, StemSpec)` pairs in order."""
    return [(i, n) for i, n in enumerate(self.nodes) if isinstance(n, StemSpec)]

  def has_stem(self, stem_type):
    return any(n.stem_type == stem_type for _, n in self.stems)

  @property
  def final_nodes(self):
    """Indices of the level-3 blocks, which feed the head."""
    return [i for i, n in self.blocks if n.level == NUM_LEVELS - 1]

  def level(self, index):
    """Level of node `index`; stems have their (negative) stem type as level."""
    node = self.nodes[index]
    return node.stem_type if isinstance(node, StemSpec) else node.level


def _flatten_node_weights(weights):
  """`[]`, `[[w...]]` (authors) or `[w...]` -> a tuple of floats."""
  weights = list(weights)
  if len(weights) == 1 and isinstance(weights[0], (list, tuple)):
    weights = list(weights[0])
  for w in weights:
    if isinstance(w, (list, tuple)):
      raise ValueError(f"Edge weights of a node must be [] or [[w, ...]]. Received: {weights}")
  return tuple(float(w) for w in weights)


# AssembleNet-50, found by evolution on Moments in Time (AssembleNet paper, Fig. 4), with
# its learned connection weights.
_ASN50_NODES = [
    [-1, 4], [-1, 4], [-2, 1], [-2, 1],
    [0, [1], 32, 1, 1, 0], [0, [0], 32, 4, 1, 0], [0, [0, 1, 2, 3], 32, 1, 1, 0],
    [0, [2, 3], 32, 2, 1, 0],
    [1, [0, 4, 5, 6, 7], 64, 2, 2, 0], [1, [0, 2, 4, 7], 64, 1, 2, 0],
    [1, [0, 5, 7], 64, 4, 2, 0], [1, [0, 5], 64, 1, 2, 0],
    [2, [4, 8, 10, 11], 256, 1, 2, 0], [2, [8, 9], 256, 4, 2, 0],
    [3, [12, 13], 512, 2, 2, 0],
]
_ASN_WEIGHTS = [
    [], [], [], [], [], [],
    [[0.13810564577579498, 0.8465337157249451, 0.3072969317436218, 0.2867436408996582]],
    [[0.5846117734909058, 0.6066334843635559]],
    [[0.16382087767124176, 0.8852924704551697, 0.4039595425128937, 0.6823437809944153,
      0.5331538319587708]],
    [[0.028569204732775688, 0.10333596915006638, 0.7517264485359192, 0.9260114431381226]],
    [[0.28832191228866577, 0.7627848982810974, 0.404977947473526]],
    [[0.23474831879138947, 0.7841425538063049]],
    [[0.27616503834724426, 0.9514784812927246, 0.6568767428398132, 0.9547983407974243]],
    [[0.5047007203102112, 0.8876819610595703]],
    [[0.9892204403877258, 0.8454614877700806]],
]
# AssembleNet-101 uses the same graph with narrower level-2/3 nodes.
_ASN101_NODES = [list(node) for node in _ASN50_NODES]
_ASN101_NODES[12] = [2, [4, 8, 10, 11], 192, 1, 2, 0]
_ASN101_NODES[13] = [2, [8, 9], 192, 4, 2, 0]
_ASN101_NODES[14] = [3, [12, 13], 256, 2, 2, 0]

# AssembleNet++-50, found on Charades (AssembleNet++ paper); node 4 is the object stem.
_FULL_ASNP50_NODES = [
    [-1, 2], [-1, 4], [-2, 2], [-2, 1], [-3, 4],
    [0, [0, 1, 2, 3, 4], 32, 1, 1, 0], [0, [0, 1, 4], 32, 4, 1, 0],
    [0, [2, 3, 4], 32, 8, 1, 0], [0, [2, 3, 4], 32, 1, 1, 0],
    [1, [0, 1, 2, 4, 5, 6, 7, 8], 64, 4, 2, 0], [1, [2, 3, 4, 7, 8], 64, 1, 2, 0],
    [1, [0, 4, 5, 6, 7], 128, 8, 2, 0],
    [2, [4, 11], 256, 8, 2, 0], [2, [2, 3, 4, 5, 6, 7, 8, 10, 11], 256, 4, 2, 0],
    [3, [12, 13], 512, 2, 2, 0],
]
_FULL_ASNP50_WEIGHTS = [
    [], [], [], [], [],
    [[0.6143830418586731, 0.7111759185791016, 0.19351491332054138, 0.1701001077890396,
      0.7178536653518677]],
    [[0.5755624771118164, 0.5644599795341492, 0.7128658294677734]],
    [[0.26563042402267456, 0.3033692538738251, 0.8244096636772156]],
    [[0.07013848423957825, 0.07905343919992447, 0.8767927885055542]],
    [[0.5008697509765625, 0.5020178556442261, 0.49819135665893555, 0.5015180706977844,
      0.4987695813179016, 0.4990265369415283, 0.499239057302475, 0.4974501430988312]],
    [[0.47034338116645813, 0.4694305658340454, 0.767791748046875, 0.5539310574531555,
      0.4520096182823181]],
    [[0.2769702076911926, 0.8116549253463745, 0.597356915473938, 0.6585626602172852,
      0.5915306210517883]],
    [[0.501274824142456, 0.5016682147979736]],
    [[0.0866393893957138, 0.08469288796186447, 0.9739039540290833, 0.058271341025829315,
      0.08397126197814941, 0.10285478830337524, 0.18506969511508942, 0.23874442279338837,
      0.9188644886016846]],
    [[0.4174623489379883, 0.5844835638999939]],
]

ASN50 = Structure.from_list(_ASN50_NODES, _ASN_WEIGHTS, name="asn50", depth=50)
ASN101 = Structure.from_list(_ASN101_NODES, _ASN_WEIGHTS, name="asn101", depth=101)
FULL_ASNP50 = Structure.from_list(_FULL_ASNP50_NODES, _FULL_ASNP50_WEIGHTS,
                                  name="full_asnp50", depth=50)

# A miniature AssembleNet++ for the CPU demo and the ablations on the synthetic dataset
# (gin/experiments/demo_synthetic.gin, official/tools/ablate.py); not from the papers. It
# keeps every code path of `full_asnp50` at a fraction of the cost: one RGB, one flow and
# one object stem (node 2), one or two nodes per level, multi-input weighted connections,
# the object stem feeding every node up to level 2, and temporal dilations 1 / 2 / 4. No
# searched weights: the demo learns them (edge_weights=None). Use it at depth 26.
_DEMO_ASNP_NODES = [
    [-1, 1], [-2, 1], [-3, 1],
    [0, [0, 1, 2], 8, 1, 1, 0], [0, [0, 2], 8, 2, 1, 0],
    [1, [0, 1, 2, 3, 4], 16, 2, 2, 0],
    [2, [2, 3, 5], 32, 4, 2, 0],
    [3, [5, 6], 64, 1, 2, 0],
]
DEMO_ASNP = Structure.from_list(_DEMO_ASNP_NODES, name="demo_asnp", depth=26)

NAMED_STRUCTURES = {s.name: s for s in (ASN50, ASN101, FULL_ASNP50, DEMO_ASNP)}


def get_structure(structure: Union[str, Structure, Sequence]) -> Structure:
  """A `Structure` from a name ('asn50', 'asn101', 'full_asnp50', 'demo_asnp'), a
  `Structure`, or the authors' nested-list form (without edge weights)."""
  if isinstance(structure, Structure):
    return structure
  if isinstance(structure, str):
    if structure not in NAMED_STRUCTURES:
      raise ValueError(
          f"Unknown structure name; expected one of {sorted(NAMED_STRUCTURES)}. "
          f"Received: {structure!r}")
    return NAMED_STRUCTURES[structure]
  if isinstance(structure, (list, tuple)):
    return Structure.from_list(structure)
  raise ValueError(
      f"`structure` must be a name, a Structure or a node list. Received: {structure!r}")


# AssembleNet++lite --------------------------------------------------------------------------
# The authors' memory-lean variant (google-research `assemblenet/assemblenet_plus_lite.py`,
# structure in `model_structures.py`): a block node's filters are an (expand, middle, out)
# triple of its inverted-bottleneck blocks instead of one bottleneck width.

# Inverted-bottleneck blocks per node, by level 0..3 (the authors' `run_asn.py`:
# `num_layers=[3, 5, 11, 7]`); the lite network has no depth variants.
LITE_BLOCKS_PER_LEVEL = (3, 5, 11, 7)


@dataclasses.dataclass(frozen=True)
class LiteBlockSpec(BlockSpec):
  """An AssembleNet++lite block node: `filters` is the triple (expand, middle, out).

  The node outputs `out` channels (`output_channels`), not `4 * filters`. In the authors'
  list form a lite block is `[level, [inputs], [expand, middle, out], temporal_dilation,
  spatial_stride, 0]`.
  """

  def __post_init__(self):
    object.__setattr__(self, "inputs", tuple(self.inputs))
    if isinstance(self.filters, (list, tuple)):
      object.__setattr__(self, "filters", tuple(self.filters))
    if self.level not in range(NUM_LEVELS):
      raise ValueError(f"A block's level must be in 0..3. Received: {self.level!r}")
    if not self.inputs:
      raise ValueError(f"A block needs at least one input. Received: {self.inputs}")
    if len(set(self.inputs)) != len(self.inputs):
      raise ValueError(f"A block's inputs must be distinct. Received: {self.inputs}")
    if not isinstance(self.filters, tuple) or len(self.filters) != 3:
      raise ValueError(
          "A lite block's filters must be three ints (expand, middle, out). "
          f"Received: {self.filters!r}")
    for value in self.filters:
      _positive_int(value, "Each of a lite block's filters")
    _positive_int(self.temporal_dilation, "A block's temporal_dilation")
    _positive_int(self.spatial_stride, "A block's spatial_stride")

  @property
  def output_channels(self):
    return self.filters[-1]

  def to_list(self):
    return [self.level, list(self.inputs), list(self.filters), self.temporal_dilation,
            self.spatial_stride, 0]


def lite_structure_from_list(nodes, edge_weights=None, name="custom"):
  """A lite `Structure` from the authors' list form (blocks carry a filters triple)."""
  specs = _specs_from_list(
      nodes, LiteBlockSpec,
      "Lite block node {index} must be [level, [inputs], [expand, middle, out], "
      "temporal_dilation, spatial_stride, 0]. Received: {node}")
  return Structure(specs, edge_weights, name)


# The authors' AssembleNet++lite structure with its searched connection weights
# (`asnp_lite_structure`, `asnp_lite_structure_weights`): one RGB and one flow stem, 9 block
# nodes over levels 0-3 (2/4/2/1), all with spatial stride 2. No object stem.
_ASNP_LITE_NODES = [
    [-1, 1], [-2, 1],
    [0, [0, 1], [27, 27, 12], 1, 2, 0],
    [0, [0, 1], [27, 27, 12], 4, 2, 0],
    [1, [0, 1, 2, 3], [54, 54, 24], 2, 2, 0],
    [1, [0, 1, 2, 3], [54, 54, 24], 1, 2, 0],
    [1, [0, 1, 2, 3], [54, 54, 24], 4, 2, 0],
    [1, [0, 1, 2, 3], [54, 54, 24], 1, 2, 0],
    [2, [0, 1, 2, 3, 4, 5, 6, 7], [152, 152, 68], 1, 2, 0],
    [2, [0, 1, 2, 3, 4, 5, 6, 7], [152, 152, 68], 4, 2, 0],
    [3, [2, 3, 4, 5, 6, 7, 8, 9], [432, 432, 192], 2, 2, 0],
]
_ASNP_LITE_WEIGHTS = [
    [], [],
    [[0.19914183020591736, 0.9278576374053955]],
    [[0.010816320776939392, 0.888792097568512]],
    [[0.9473835825920105, 0.6303419470787048, 0.1704932451248169, 0.05950307101011276]],
    [[0.9560931324958801, 0.7898273468017578, 0.36138781905174255, 0.07344610244035721]],
    [[0.9213919043540955, 0.13418640196323395, 0.8371981978416443, 0.07936054468154907]],
    [[0.9441559910774231, 0.9435100555419922, 0.7253988981246948, 0.13498817384243011]],
    [[0.9964852333068848, 0.8427878618240356, 0.8895476460456848, 0.11014710366725922,
      0.6270533204078674, 0.44782018661499023, 0.61344975233078, 0.44898226857185364]],
    [[0.9970942735671997, 0.7105681896209717, 0.5078442096710205, 0.0951600968837738,
      0.624282717704773, 0.8527252674102783, 0.8105692863464355, 0.7857823967933655]],
    [[0.6180334091186523, 0.11882413923740387, 0.06102970987558365, 0.04484326392412186,
      0.05602221190929413, 0.052324872463941574, 0.9969874024391174, 0.9987731575965881]],
]

# `asnp_lite` with an object stem wired as in `full_asnp50` (not from the authors, whose lite
# file has no object input): the object stem is node 2, after the RGB and flow stems, and
# feeds every level-0, -1 and -2 node (in `full_asnp50` node 4 feeds nodes 5-13, every node
# below level 3); the level-3 node keeps its inputs. Later indices shift by one. The object
# connections were never searched, so there are no searched weights: learn them
# (edge_weights=None, the one-shot connectivity search of the papers).
_ASNP_LITE_OBJECTS_NODES = [
    [-1, 1], [-2, 1], [-3, 1],
    [0, [0, 1, 2], [27, 27, 12], 1, 2, 0],
    [0, [0, 1, 2], [27, 27, 12], 4, 2, 0],
    [1, [0, 1, 2, 3, 4], [54, 54, 24], 2, 2, 0],
    [1, [0, 1, 2, 3, 4], [54, 54, 24], 1, 2, 0],
    [1, [0, 1, 2, 3, 4], [54, 54, 24], 4, 2, 0],
    [1, [0, 1, 2, 3, 4], [54, 54, 24], 1, 2, 0],
    [2, [0, 1, 2, 3, 4, 5, 6, 7, 8], [152, 152, 68], 1, 2, 0],
    [2, [0, 1, 2, 3, 4, 5, 6, 7, 8], [152, 152, 68], 4, 2, 0],
    [3, [3, 4, 5, 6, 7, 8, 9, 10], [432, 432, 192], 2, 2, 0],
]

ASNP_LITE = lite_structure_from_list(_ASNP_LITE_NODES, _ASNP_LITE_WEIGHTS, name="asnp_lite")
ASNP_LITE_OBJECTS = lite_structure_from_list(_ASNP_LITE_OBJECTS_NODES,
                                             name="asnp_lite_objects")

# Kept apart from NAMED_STRUCTURES: AssembleNet/AssembleNetPlus cannot build lite blocks.
LITE_STRUCTURES = {s.name: s for s in (ASNP_LITE, ASNP_LITE_OBJECTS)}


def get_lite_structure(structure: Union[str, Structure, Sequence]) -> Structure:
  """A lite `Structure` from a name ('asnp_lite', 'asnp_lite_objects'), a `Structure` of
  `LiteBlockSpec`s, or the authors' list form with filters triples (no edge weights)."""
  if isinstance(structure, str):
    if structure not in LITE_STRUCTURES:
      raise ValueError(
          f"Unknown lite structure name; expected one of {sorted(LITE_STRUCTURES)}. "
          f"Received: {structure!r}")
    return LITE_STRUCTURES[structure]
  if isinstance(structure, (list, tuple)):
    structure = lite_structure_from_list(structure)
  if not isinstance(structure, Structure):
    raise ValueError(
        f"`structure` must be a name, a Structure or a node list. Received: {structure!r}")
  plain = [i for i, n in structure.blocks if not isinstance(n, LiteBlockSpec)]
  if plain:
    raise ValueError(
        "A lite structure's blocks need (expand, middle, out) filters triples; nodes "
        f"{plain} have a single width. Received: {structure.name!r}")
  return structure
