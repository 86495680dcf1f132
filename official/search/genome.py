"""The genome of AssembleNet's connectivity search: a `structures.Structure` and its rules.

AssembleNet (Ryoo et al., ICLR 2020, Sec. 3) evolves multi-stream networks written in the
package's structure form: stems (RGB / flow / object, each with a temporal dilation) and
block nodes `(level 0-3, inputs from strictly lower levels, filters, temporal dilation,
spatial stride)`. A genome here IS a `structures.Structure` without edge weights; this
module adds what the search needs on top of the structure's own checks:

- `SearchSpace`: which stems, how many nodes per level, the per-level channel budget (the
  released structures spend 128 / 256 / 512 / 512 bottleneck filters over their nodes per
  level), the dilations to draw from.
- `check_genome`: the validity rules (inputs strictly from lower levels, stride 1 at level
  0 and 2 above, dilations from the space, the channel budget of every level spent exactly,
  a level-3 node; every node has an input and the stems come first by construction).
- `random_genome`: the initial population, over-connected (each allowed edge with p = 0.5).
- `remove_dead_nodes`: nodes (stems included) from which no level-3 node can be reached
  are dropped before building; the genome keeps them, so a later mutation can revive them.
- Edges as `(source, target)` index pairs and learned weights as `{edge: weight}`, the
  form mutations use, and back to the authors' node-aligned `[[w...]]` lists.

Canonical form: stems first (in space order), blocks sorted by level and within a level by
their inputs (then filters, dilation), each node's inputs in increasing index order.
`canonical` brings a structure to it, so equal graphs have equal `to_list()` values (used
to tell a child from its parent).
"""

import dataclasses
from typing import Dict, Optional, Tuple

import gin
import numpy as np

from official.modeling import structures

Edge = Tuple[int, int]
STEM_LEVEL = -1  # Stems sit below level 0: every block may take a stem as input.


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """What the search may build.

  Attributes:
    stem_types: stems of every genome, in order (`structures.RGB` -1, `FLOW` -2,
      `OBJECT` -3); each gets its temporal dilation from `stem_dilations`.
    nodes_per_level: block nodes per level 0..3 in a random (initial) genome.
    level_filters: the channel budget: bottleneck filters summed over the nodes of each
      level 0..3 (AssembleNet-50: 128, 256, 512, 512). A random genome splits it evenly.
    temporal_dilations: dilations a block's temporal convolution may take.
    stem_dilations: dilations a stem may take (used by the RGB stem's temporal conv; the
      flow and object stems have none, so mutating theirs changes nothing).
    max_nodes_per_level: a split never makes a level wider than this.
    min_filters: a split never makes a node narrower than this.
    depth: network depth the genomes are built with (`structures.BLOCKS_PER_LEVEL`).
  """
  stem_types: Tuple[int, ...] = (structures.RGB, structures.FLOW, structures.OBJECT)
  nodes_per_level: Tuple[int, ...] = (2, 2, 2, 1)
  level_filters: Tuple[int, ...] = (16, 16, 32, 64)
  temporal_dilations: Tuple[int, ...] = (1, 2, 4, 8)
  stem_dilations: Tuple[int, ...] = (1, 2, 4)
  max_nodes_per_level: int = 4
  min_filters: int = 2
  depth: int = 26

  def __post_init__(self):
    for name in ("stem_types", "nodes_per_level", "level_filters", "temporal_dilations",
                 "stem_dilations"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if not self.stem_types or any(t not in structures.STEM_TYPES for t in self.stem_types):
      raise ValueError(f"stem_types must be stem types {sorted(structures.STEM_TYPES)}. "
                       f"Received: {self.stem_types}")
    for name in ("nodes_per_level", "level_filters"):
      value = getattr(self, name)
      if len(value) != structures.NUM_LEVELS or any(
          isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name} needs {structures.NUM_LEVELS} positive ints (levels "
                         f"0..3). Received: {value}")
    for level, (count, budget) in enumerate(zip(self.nodes_per_level, self.level_filters)):
      if budget % count or budget // count < self.min_filters:
        raise ValueError(
            f"Level {level}'s budget of {budget} filters must split evenly into "
            f"{count} nodes of at least min_filters={self.min_filters}. Received: "
            f"nodes_per_level={self.nodes_per_level}, level_filters={self.level_filters}")
      if count > self.max_nodes_per_level:
        raise ValueError(f"nodes_per_level exceeds max_nodes_per_level="
                         f"{self.max_nodes_per_level}. Received: {self.nodes_per_level}")
    for name in ("temporal_dilations", "stem_dilations"):
      if not getattr(self, name) or any(
          isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in getattr(self, name)):
        raise ValueError(f"{name} must be positive ints. Received: {getattr(self, name)}")
    if self.depth not in structures.BLOCKS_PER_LEVEL:
      raise ValueError(f"depth must be one of {sorted(structures.BLOCKS_PER_LEVEL)}. "
                       f"Received: {self.depth!r}")

  @property
  def uses_objects(self):
    return structures.OBJECT in self.stem_types


@gin.configurable
def build_search_space(stem_types=(structures.RGB, structures.FLOW, structures.OBJECT),
                       nodes_per_level=(2, 2, 2, 1), level_filters=(16, 16, 32, 64),
                       temporal_dilations=(1, 2, 4, 8), stem_dilations=(1, 2, 4),
                       max_nodes_per_level=4, min_filters=2, depth=26):
  """The gin boundary of the search: a `SearchSpace` (see its attributes)."""
  return SearchSpace(tuple(stem_types), tuple(nodes_per_level), tuple(level_filters),
                     tuple(temporal_dilations), tuple(stem_dilations), max_nodes_per_level,
                     min_filters, depth)


# Levels and edges ---------------------------------------------------------------------------


def node_level(node):
  """A block's level, `STEM_LEVEL` (-1) for a stem."""
  return STEM_LEVEL if isinstance(node, structures.StemSpec) else node.level


def spatial_stride(level):
  """The stride rule of the released structures: 1 at level 0, 2 above."""
  return 1 if level == 0 else 2


def allowed_inputs(structure, index):
  """Indices a block node may take as input: every node of a strictly lower level."""
  level = node_level(structure.nodes[index])
  return [k for k, node in enumerate(structure.nodes) if node_level(node) < level]


def edges(structure) -> frozenset:
  """The genome's connections as `(source, target)` index pairs."""
  return frozenset((src, index) for index, node in structure.blocks for src in node.inputs)


def valid_edges(structure) -> frozenset:
  """Every connection the level rule allows, present or not."""
  return frozenset((src, index) for index, _ in structure.blocks
                   for src in allowed_inputs(structure, index))


def level_filters(structure):
  """Bottleneck filters summed per level 0..3."""
  totals = [0] * structures.NUM_LEVELS
  for _, node in structure.blocks:
    totals[node.level] += node.filters
  return tuple(totals)


def check_genome(structure, space: SearchSpace):
  """Raises ValueError naming the first rule `structure` breaks in `space`.

  The rules: the stems are `space.stem_types` with dilations from `space.stem_dilations`;
  every block takes inputs only from strictly lower levels (stems count as level -1), has
  stride 1 at level 0 and 2 above and a dilation from `space.temporal_dilations`; each
  level's filters sum to `space.level_filters` and no level has more than
  `space.max_nodes_per_level` nodes. `structures.Structure` itself guarantees stems first,
  at least one input per block and a level-3 node.
  """
  stem_types = tuple(stem.stem_type for _, stem in structure.stems)
  if stem_types != space.stem_types:
    raise ValueError(f"The genome's stems must be {space.stem_types}. Received: {stem_types}")
  for index, stem in structure.stems:
    if stem.temporal_dilation not in space.stem_dilations:
      raise ValueError(f"Stem {index}'s dilation must be one of {space.stem_dilations}. "
                       f"Received: {stem.temporal_dilation}")
  counts = [0] * structures.NUM_LEVELS
  for index, node in structure.blocks:
    counts[node.level] += 1
    for src in node.inputs:
      if node_level(structure.nodes[src]) >= node.level:
        raise ValueError(
            f"Node {index} (level {node.level}) takes input {src} of level "
            f"{node_level(structure.nodes[src])}; inputs must come from strictly lower "
            f"levels. Received: {node.to_list()}")
    if node.spatial_stride != spatial_stride(node.level):
      raise ValueError(f"Node {index} at level {node.level} must have spatial stride "
                       f"{spatial_stride(node.level)}. Received: {node.to_list()}")
    if node.temporal_dilation not in space.temporal_dilations:
      raise ValueError(f"Node {index}'s dilation must be one of {space.temporal_dilations}. "
                       f"Received: {node.to_list()}")
  if level_filters(structure) != space.level_filters:
    raise ValueError(f"Each level must spend its channel budget {space.level_filters} "
                     f"(filters summed per level). Received: {level_filters(structure)}")
  if max(counts) > space.max_nodes_per_level:
    raise ValueError(f"At most {space.max_nodes_per_level} nodes per level. Received: "
                     f"{counts} nodes at levels 0..3")


def is_valid(structure, space):
  """Whether `check_genome` accepts `structure` in `space`."""
  try:
    check_genome(structure, space)
  except ValueError:
    return False
  return True


# Building and rebuilding --------------------------------------------------------------------


@dataclasses.dataclass
class Node:
  """A mutable node of a genome being edited: `inputs` are keys of other nodes."""
  key: int
  level: int  # STEM_LEVEL for stems
  temporal_dilation: int
  stem_type: Optional[int] = None
  filters: Optional[int] = None
  inputs: set = dataclasses.field(default_factory=set)


def to_nodes(structure):
  """The editable form of `structure`: one `Node` per node, keyed by its index."""
  nodes = []
  for index, node in enumerate(structure.nodes):
    if isinstance(node, structures.StemSpec):
      nodes.append(Node(index, STEM_LEVEL, node.temporal_dilation, stem_type=node.stem_type))
    else:
      nodes.append(Node(index, node.level, node.temporal_dilation, filters=node.filters,
                        inputs=set(node.inputs)))
  return nodes


def from_nodes(nodes, name="genome", depth=None):
  """A canonical `structures.Structure` from editable nodes (any order, any keys).

  Stems keep their order; blocks are sorted by level, and within a level by their
  (renumbered, sorted) inputs, filters and dilation. Raises ValueError (from `structures`) when a node has no input or
  no level-3 node is left.
  """
  return assemble(nodes, name, depth)[0]


def assemble(nodes, name="genome", depth=None):
  """`from_nodes`, also returning `{node key: index in the structure}`."""
  stems = [n for n in nodes if n.level == STEM_LEVEL]
  index = {n.key: i for i, n in enumerate(stems)}
  specs = [structures.StemSpec(n.stem_type, n.temporal_dilation) for n in stems]
  for level in sorted({n.level for n in nodes if n.level != STEM_LEVEL}):
    # Within a level, order by (renumbered inputs, filters, dilation): the lower levels
    # are numbered already, so equal graphs get equal lists.
    members = sorted((n for n in nodes if n.level == level), key=lambda n: (
        sorted(index[k] for k in n.inputs), n.filters, n.temporal_dilation, n.key))
    for n in members:
      index[n.key] = len(specs)
      specs.append(structures.BlockSpec(
          level, tuple(sorted(index[k] for k in n.inputs)), n.filters,
          n.temporal_dilation, spatial_stride(level)))
  return structures.Structure(tuple(specs), None, name, depth), index


def canonical(structure, name=None):
  """`structure` in canonical order, without edge weights."""
  return from_nodes(to_nodes(structure), name or structure.name, structure.depth)


def random_genome(space: SearchSpace, rng: np.random.Generator, connection_probability=0.5,
                  name="random"):
  """A random over-connected genome (AssembleNet's initial population).

  Each level gets `space.nodes_per_level` nodes splitting its budget evenly, each node a
  random dilation and each allowed input with probability `connection_probability`; a
  node left without input gets one allowed input drawn uniformly.
  """
  if not 0.0 < connection_probability <= 1.0:
    raise ValueError(f"connection_probability must be in (0, 1]. Received: "
                     f"{connection_probability}")
  nodes = [Node(k, STEM_LEVEL, int(rng.choice(space.stem_dilations)), stem_type=t)
           for k, t in enumerate(space.stem_types)]
  for level in range(structures.NUM_LEVELS):
    lower = [n.key for n in nodes]  # built level by level: all are lower
    count = space.nodes_per_level[level]
    for _ in range(count):
      chosen = {k for k in lower if rng.random() < connection_probability}
      if not chosen:
        chosen = {int(rng.choice(lower))}
      nodes.append(Node(len(nodes), level, int(rng.choice(space.temporal_dilations)),
                        filters=space.level_filters[level] // count, inputs=chosen))
  return from_nodes(nodes, name, space.depth)


def fully_connected_genome(space: SearchSpace, rng: np.random.Generator, name="one_shot"):
  """Every node connected to every lower-level node (the one-shot variant's supernet);
  dilations drawn at random."""
  return random_genome(space, rng, connection_probability=1.0, name=name)


def remove_dead_nodes(structure):
  """Drops the nodes (stems included) from which no level-3 node can be reached.

  Args:
    structure: a `structures.Structure` (a genome).

  Returns:
    `(pruned, index_map)`: the pruned `Structure` (same name and depth, no edge weights)
    and `{old index: new index}` of the kept nodes. The kept blocks keep all their inputs:
    an input of a live node is live.
  """
  live = set(structure.final_nodes)
  for index in reversed(range(len(structure.nodes))):
    if index in live and isinstance(structure.nodes[index], structures.BlockSpec):
      live.update(structure.nodes[index].inputs)
  kept = [k for k in range(len(structure.nodes)) if k in live]
  index_map = {old: new for new, old in enumerate(kept)}
  specs = []
  for old in kept:
    node = structure.nodes[old]
    if isinstance(node, structures.BlockSpec):
      node = dataclasses.replace(node, inputs=tuple(index_map[s] for s in node.inputs))
    specs.append(node)
  return structures.Structure(tuple(specs), None, structure.name, structure.depth), index_map


# Edge weights -------------------------------------------------------------------------------


def weights_to_edges(structure, node_weights) -> Dict[Edge, float]:
  """Node-aligned post-sigmoid weights (`[]` / `[[w...]]` or flat per node, as trials
  return and `Structure.edge_weights` holds) -> `{(source, target): weight}` for the
  multi-input nodes."""
  if len(node_weights) != len(structure.nodes):
    raise ValueError(f"Expected one weight entry per node ({len(structure.nodes)}). "
                     f"Received: {len(node_weights)}")
  result = {}
  for index, node in structure.blocks:
    weights = list(node_weights[index])
    if len(weights) == 1 and isinstance(weights[0], (list, tuple)):
      weights = list(weights[0])
    if len(node.inputs) > 1:
      if len(weights) != len(node.inputs):
        raise ValueError(f"Node {index} has {len(node.inputs)} inputs but "
                         f"{len(weights)} weights. Received: {weights}")
      result.update({(src, index): float(w) for src, w in zip(node.inputs, weights)})
  return result


def edges_to_weights(structure, edge_weights: Dict[Edge, float]):
  """`{(source, target): weight}` -> the authors' node-aligned form (`[]` for stems and
  single-input nodes, `[[w_1..w_k]]` in input order otherwise); raises ValueError when a
  multi-input connection has no weight."""
  result = []
  for index, node in enumerate(structure.nodes):
    if isinstance(node, structures.StemSpec) or len(node.inputs) == 1:
      result.append([])
      continue
    missing = [src for src in node.inputs if (src, index) not in edge_weights]
    if missing:
      raise ValueError(f"Node {index}: no weight for the connections from {missing}. "
                       f"Received weights for: {sorted(edge_weights)}")
    result.append([[float(edge_weights[(src, index)]) for src in node.inputs]])
  return result


def map_edge_weights(edge_weights, index_map):
  """Re-keys `{(source, target): w}` from pruned indices back to genome indices
  (`index_map` from `remove_dead_nodes`: genome -> pruned)."""
  back = {new: old for old, new in index_map.items()}
  return {(back[s], back[t]): w for (s, t), w in edge_weights.items()}


def genome_key(structure):
  """A hashable identity of the genome's graph, independent of the node order."""
  return repr(canonical(structure).to_list())


def structure_from_config(value, name="genome", depth=None) -> structures.Structure:
  """A genome from the authors' nested-list form (as trials receive it in their config)."""
  return structures.Structure.from_list(value, name=name, depth=depth)


def summary(structure) -> Dict[str, object]:
  """Counts for logs: nodes per level, edges, filters per level."""
  counts = [0] * structures.NUM_LEVELS
  for _, node in structure.blocks:
    counts[node.level] += 1
  return {"nodes_per_level": counts, "edges": len(edges(structure)),
          "level_filters": list(level_filters(structure))}
