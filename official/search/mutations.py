"""Mutations of AssembleNet genomes.

- `connection_guided`: AssembleNet's connection-learning-guided mutation (ICLR 2020,
  Sec. 3.2). The parent was trained with learned edge weights; its connections whose
  post-sigmoid weight is below a threshold (0.5) are dropped, each node keeping its
  strongest input, and each absent valid connection is then added with probability
  (number dropped) / (number absent), so that the expected number of connections holds.
  Detail chosen here (unverified: the paper does not say): "absent" means valid
  connections the parent did not have, so a connection just dropped for its weak weight is
  not re-drawn; when fewer are absent than were dropped, all are added (the count falls).
- `random_flip`: the baseline of the paper's comparison, random connection flips instead.
- `redraw_dilation`, `split_node`, `merge_nodes`: the other mutations (unverified detail,
  options): re-draw a node's temporal dilation; split a node into two with the same inputs
  and half the filters each (consumers take both); merge two nodes of one level (filters
  summed, inputs and consumers united). Splits and merges keep each level's channel budget.

Every function takes a genome (`structures.Structure`) and a `numpy.random.Generator` and
returns a new canonical genome (`genome.from_nodes`); none changes its argument.
"""

import dataclasses
from typing import Dict, Optional

import numpy as np

from official.search import genome as genome_lib

GUIDED = "guided"
RANDOM_FLIP = "random_flip"
EDGE_MUTATIONS = (GUIDED, RANDOM_FLIP)
EXTRA_MUTATIONS = ("dilation", "split", "merge")


def _node_by_key(nodes):
  return {n.key: n for n in nodes}


def with_edges(structure, present):
  """`structure` with exactly the connections `present` ({(source, target)} in its
  indices), canonical (so its indices may differ from `structure`'s)."""
  nodes = genome_lib.to_nodes(structure)
  for node in nodes:
    if node.level != genome_lib.STEM_LEVEL:
      node.inputs = {s for s, t in present if t == node.key}
  return genome_lib.from_nodes(nodes, structure.name, structure.depth)


def weak_connections(structure, edge_weights: Dict[genome_lib.Edge, float], threshold):
  """The connections weighing under `threshold`, except that each node keeps its strongest
  input: `{(source, target)}`. Connections without a weight are never weak."""
  weak_edges = set()
  for index, node in structure.blocks:
    weighted = [(edge_weights[(s, index)], s) for s in node.inputs
                if (s, index) in edge_weights]
    if not weighted:
      continue
    weak = {(s, index) for w, s in weighted if w < threshold}
    if len(weak) == len(node.inputs):
      weak.discard((max(weighted)[1], index))  # keep the strongest input
    weak_edges |= weak
  return weak_edges


def connection_guided(structure, edge_weights: Dict[genome_lib.Edge, float],
                      rng: np.random.Generator, threshold=0.5):
  """The connection-learning-guided mutation (see the module docstring).

  Args:
    structure: the parent genome.
    edge_weights: `{(source, target): learned post-sigmoid weight}` in the parent's
      indices. Connections without a weight (single-input nodes, nodes removed as dead
      before training) are kept as they are.
    rng: random generator.
    threshold: connections weighing less are dropped.

  Returns:
    `(child, info)`: the child genome and `{'dropped': [edges], 'added': [edges],
    'add_probability': p}` in the parent's indices.
  """
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"threshold must be in (0, 1). Received: {threshold}")
  present = set(genome_lib.edges(structure))
  unknown = {e for e in edge_weights if e not in present}
  if unknown:
    raise ValueError(f"Edge weights given for connections the genome lacks. Received: "
                     f"{sorted(unknown)}")
  dropped = weak_connections(structure, edge_weights, threshold)
  kept = present - dropped
  absent = sorted(genome_lib.valid_edges(structure) - present)
  probability = min(1.0, len(dropped) / len(absent)) if absent and dropped else 0.0
  added = [e for e in absent if rng.random() < probability] if probability else []
  child = with_edges(structure, kept | set(added))
  return child, {"dropped": sorted(dropped), "added": added,
                 "add_probability": probability}


def random_flip(structure, rng: np.random.Generator, num_flips=2):
  """Flips `num_flips` distinct valid connections chosen uniformly (present -> removed,
  absent -> added); a removal that would leave a node without input is skipped and
  another connection drawn.

  Returns:
    `(child, info)` with `{'dropped': [edges], 'added': [edges]}` in the parent's indices.
  """
  if isinstance(num_flips, bool) or not isinstance(num_flips, int) or num_flips < 1:
    raise ValueError(f"num_flips must be a positive int. Received: {num_flips!r}")
  present = set(genome_lib.edges(structure))
  candidates = sorted(genome_lib.valid_edges(structure))
  inputs = {index: len(node.inputs) for index, node in structure.blocks}
  dropped, added = [], []
  for position in rng.permutation(len(candidates)):
    if len(dropped) + len(added) == num_flips:
      break
    edge = candidates[position]
    if edge in present:
      if inputs[edge[1]] == 1:
        continue
      inputs[edge[1]] -= 1
      present.discard(edge)
      dropped.append(edge)
    else:
      inputs[edge[1]] += 1
      present.add(edge)
      added.append(edge)
  return with_edges(structure, present), {"dropped": sorted(dropped),
                                           "added": sorted(added)}


def redraw_dilation(structure, space: genome_lib.SearchSpace, rng: np.random.Generator):
  """Gives one block node, drawn uniformly, a different temporal dilation from the space.

  Returns:
    `(child, info)` with `{'node': index, 'from': d, 'to': d'}`, or `(structure, None)`
    when the space has a single dilation.
  """
  if len(space.temporal_dilations) < 2:
    return structure, None
  nodes = genome_lib.to_nodes(structure)
  blocks = [n for n in nodes if n.level != genome_lib.STEM_LEVEL]
  node = blocks[int(rng.integers(len(blocks)))]
  choices = [d for d in space.temporal_dilations if d != node.temporal_dilation]
  old, node.temporal_dilation = node.temporal_dilation, int(rng.choice(choices))
  return (genome_lib.from_nodes(nodes, structure.name, structure.depth),
          {"node": node.key, "from": old, "to": node.temporal_dilation})


def split_node(structure, space: genome_lib.SearchSpace, rng: np.random.Generator):
  """Splits one block node into two with its inputs and dilation and half its filters
  each (`f // 2` and `f - f // 2`); every consumer of the node takes both halves.

  Only nodes of at least `2 * space.min_filters` filters, at levels with fewer than
  `space.max_nodes_per_level` nodes, can split.

  Returns:
    `(child, info)` with `{'node': index}`, or `(structure, None)` when none can split.
  """
  nodes = genome_lib.to_nodes(structure)
  counts = _level_counts(nodes)
  candidates = [n for n in nodes if n.level != genome_lib.STEM_LEVEL
                and n.filters >= 2 * space.min_filters
                and counts[n.level] < space.max_nodes_per_level]
  if not candidates:
    return structure, None
  node = candidates[int(rng.integers(len(candidates)))]
  twin = dataclasses.replace(node, key=max(n.key for n in nodes) + 1,
                             filters=node.filters - node.filters // 2,
                             inputs=set(node.inputs))
  node.filters //= 2
  for consumer in nodes:
    if node.key in consumer.inputs:
      consumer.inputs.add(twin.key)
  nodes.append(twin)
  return genome_lib.from_nodes(nodes, structure.name, structure.depth), {"node": node.key}


def merge_nodes(structure, space: genome_lib.SearchSpace, rng: np.random.Generator):
  """Merges two block nodes of one level (drawn uniformly among levels with two or more)
  into one: filters summed, inputs united, the first node's dilation; consumers of either
  take the merged node.

  Returns:
    `(child, info)` with `{'nodes': [i, j]}`, or `(structure, None)` when no level has two
    nodes.
  """
  del space  # Merging never breaks the space's limits.
  nodes = genome_lib.to_nodes(structure)
  levels = sorted(level for level, count in _level_counts(nodes).items() if count >= 2)
  if not levels:
    return structure, None
  level = levels[int(rng.integers(len(levels)))]
  members = [n for n in nodes if n.level == level]
  first, second = (members[k] for k in sorted(rng.choice(len(members), 2, replace=False)))
  first.filters += second.filters
  first.inputs |= second.inputs
  for consumer in nodes:
    if second.key in consumer.inputs:
      consumer.inputs.discard(second.key)
      consumer.inputs.add(first.key)
  nodes = [n for n in nodes if n.key != second.key]
  return (genome_lib.from_nodes(nodes, structure.name, structure.depth),
          {"nodes": [first.key, second.key]})


def _level_counts(nodes):
  counts = {}
  for n in nodes:
    if n.level != genome_lib.STEM_LEVEL:
      counts[n.level] = counts.get(n.level, 0) + 1
  return counts


@dataclasses.dataclass(frozen=True)
class MutationOptions:
  """How a child is made from its parent.

  Attributes:
    edge_mutation: 'guided' (connection-learning-guided, AssembleNet) or 'random_flip'
      (the baseline).
    threshold: the guided mutation's weight threshold.
    num_flips: connections the random-flip baseline flips.
    dilation_probability: chance of also re-drawing one node's dilation.
    split_probability, merge_probability: chances of also splitting / merging nodes.
    max_attempts: a child that trains its parent's network (`trained_key`: equal once
      dead nodes are removed) is drawn again, up to this many times; then one random
      connection flip is forced (up to this many draws), so that no trial repeats its
      parent.
  """
  edge_mutation: str = GUIDED
  threshold: float = 0.5
  num_flips: int = 2
  dilation_probability: float = 0.25
  split_probability: float = 0.0
  merge_probability: float = 0.0
  max_attempts: int = 10

  def __post_init__(self):
    if self.edge_mutation not in EDGE_MUTATIONS:
      raise ValueError(f"edge_mutation must be one of {EDGE_MUTATIONS}. Received: "
                       f"{self.edge_mutation!r}")
    for name in ("dilation_probability", "split_probability", "merge_probability"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {getattr(self, name)}")


def mutate(parent, space, rng, options: MutationOptions,
           edge_weights: Optional[Dict[genome_lib.Edge, float]] = None):
  """A child of `parent`: its connection mutation, then each optional mutation with its
  probability. Returns `(child, info)`; `info['steps']` lists what was applied."""
  key = trained_key(parent)
  for _ in range(options.max_attempts):
    child, steps = _mutate_once(parent, space, rng, options, edge_weights or {})
    if trained_key(child) != key:
      return child, {"steps": steps}
  for _ in range(options.max_attempts):
    child, info = random_flip(parent, rng, num_flips=1)
    if trained_key(child) != key:
      break
  return child, {"steps": [("forced_flip", info)]}


def trained_key(structure):
  """`genome_key` of the network a trial trains from `structure`: its dead nodes (from
  which no level-3 node is reached) removed. Two genomes differing only there train the
  same network, so a child is compared with its parent by this key."""
  return genome_lib.genome_key(genome_lib.remove_dead_nodes(structure)[0])


def _mutate_once(parent, space, rng, options, edge_weights):
  if options.edge_mutation == GUIDED:
    child, info = connection_guided(parent, edge_weights, rng, options.threshold)
  else:
    child, info = random_flip(parent, rng, options.num_flips)
  steps = [(options.edge_mutation, info)]
  for name, probability, function in (
      ("dilation", options.dilation_probability, redraw_dilation),
      ("split", options.split_probability, split_node),
      ("merge", options.merge_probability, merge_nodes)):
    if probability and rng.random() < probability:
      child, info = function(child, space, rng)
      if info is not None:
        steps.append((name, info))
  return child, steps
