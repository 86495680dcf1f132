"""The search algorithms, free of Ray: they propose genomes and are told their fitness.

- `RegularizedEvolution` (AssembleNet, ICLR 2020, Sec. 3.2; Real et al., AAAI 2019): the
  first `population_size` proposals are random over-connected genomes; afterwards a
  proposal samples `sample_size` members of the population, takes the fittest as the
  parent and mutates it. Each evaluated genome joins the population; when it is larger
  than `population_size`, the oldest member leaves (aging), whatever its fitness.
  With `edge_mutation='guided'` it is AssembleNet's evolution (connection-learning-guided
  mutation); with 'random_flip' the paper's baseline of random connection flips.
- `RandomSearch`: every proposal a random over-connected genome.
- `OneShot` (closest to the authors' released code): one supernet with every node
  connected to every lower-level node is trained with learned edge weights (and
  peer-attention when the experiment has it); its connections weighing under the
  threshold are pruned (each node keeps its strongest input), dead nodes removed, and the
  result retrained with the learned weights of the kept connections fixed. Two trials.
  The argmax peer of each connection is recorded, not imposed: the package's builder has
  no option to fix a connection's peer (unverified how the authors retrained it).

Proposals are pure functions of `(seed, proposal index, results told so far)`: proposal k
draws from `numpy.random.default_rng([seed, k])`. A resumed search that replays its
finished trials (`tell` in completion order) proposes what the uninterrupted one would
have, when trials run one at a time.
"""

import collections
import dataclasses
from typing import Dict, List, Optional

import numpy as np

from official.search import genome as genome_lib
from official.search import mutations

EVOLUTION = "evolution"
EVOLUTION_RANDOM = "evolution_random"
RANDOM = "random"
ONE_SHOT = "one_shot"
ALGORITHMS = (EVOLUTION, EVOLUTION_RANDOM, RANDOM, ONE_SHOT)


@dataclasses.dataclass
class Proposal:
  """A genome to evaluate.

  Attributes:
    index: the proposal's number in this search (0, 1, ...).
    structure: the genome (`structures.Structure`).
    origin: 'random', 'mutation', 'one_shot_supernet' or 'one_shot_retrain'.
    parent: the index of the parent proposal (mutations), else None.
    edge_weights: None (trained with learned edge weights) or node-aligned post-sigmoid
      weights to fix (the one-shot retrain).
    mutation: what the mutation did (JSON-ready), else None.
  """
  index: int
  structure: object
  origin: str
  parent: Optional[int] = None
  edge_weights: Optional[list] = None
  mutation: Optional[list] = None


@dataclasses.dataclass
class Member:
  """An evaluated genome: its proposal index, fitness and learned `{edge: weight}` in the
  genome's own indices."""
  index: int
  structure: object
  fitness: float
  edge_weights: Dict[genome_lib.Edge, float]


def learned_edge_weights(structure, pruned_weights):
  """A trial's learned weights (node-aligned, of the genome with dead nodes removed) as
  `{(source, target): weight}` in the genome's indices."""
  pruned, index_map = genome_lib.remove_dead_nodes(structure)
  return genome_lib.map_edge_weights(
      genome_lib.weights_to_edges(pruned, pruned_weights), index_map)


class RegularizedEvolution:
  """Tournament selection with aging (see the module docstring).

  Args:
    space: the `genome.SearchSpace`.
    population_size: P, members kept (and random genomes proposed first).
    sample_size: S, members sampled per tournament (1 <= S <= P).
    options: `mutations.MutationOptions` (guided or random-flip connection mutation).
    seed: the search's seed.
    connection_probability: of each allowed connection in a random genome.
  """

  def __init__(self, space, population_size, sample_size, options, seed=0,
               connection_probability=0.5):
    if isinstance(population_size, bool) or not isinstance(population_size, int) or (
        population_size < 1):
      raise ValueError(f"population_size must be a positive int. Received: "
                       f"{population_size!r}")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or not (
        1 <= sample_size <= population_size):
      raise ValueError(f"sample_size must be an int in [1, population_size="
                       f"{population_size}]. Received: {sample_size!r}")
    self.space = space
    self.population_size = population_size
    self.sample_size = sample_size
    self.options = options
    self.seed = seed
    self.connection_probability = connection_probability
    self.population = collections.deque()  # oldest first
    self.history: List[Member] = []

  def propose(self, index) -> Proposal:
    rng = np.random.default_rng([self.seed, index])
    if index < self.population_size or not self.population:
      structure = genome_lib.random_genome(self.space, rng, self.connection_probability,
                                           name=f"genome_{index}")
      return Proposal(index, structure, "random")
    parent = self.select_parent(rng)
    child, info = mutations.mutate(parent.structure, self.space, rng, self.options,
                                   parent.edge_weights)
    child = genome_lib.canonical(child, name=f"genome_{index}")
    genome_lib.check_genome(child, self.space)  # a mutation never breaks the rules
    return Proposal(index, child, "mutation", parent=parent.index,
                    mutation=_json_ready(info["steps"]))

  def select_parent(self, rng) -> Member:
    """The fittest of `sample_size` members drawn without replacement (ties: the
    younger)."""
    members = list(self.population)
    size = min(self.sample_size, len(members))
    sample = sorted(rng.choice(len(members), size, replace=False))
    best = max(sample, key=lambda k: (members[k].fitness, k))
    return members[best]

  def tell(self, proposal_index, structure, fitness, edge_weights):
    """Adds an evaluated genome; the oldest member leaves once the population is full.

    Args:
      proposal_index: its proposal's index.
      structure: the genome.
      fitness: held-out metric; None (a failed trial) adds nothing.
      edge_weights: `{(source, target): weight}` in the genome's indices.
    """
    if fitness is None:
      return None
    member = Member(proposal_index, structure, float(fitness), dict(edge_weights))
    self.history.append(member)
    self.population.append(member)
    if len(self.population) > self.population_size:
      return self.population.popleft()
    return None


class RandomSearch:
  """Random over-connected genomes (the paper's random-search baseline)."""

  def __init__(self, space, seed=0, connection_probability=0.5):
    self.space = space
    self.seed = seed
    self.connection_probability = connection_probability
    self.history: List[Member] = []

  def propose(self, index) -> Proposal:
    rng = np.random.default_rng([self.seed, index])
    return Proposal(index, genome_lib.random_genome(
        self.space, rng, self.connection_probability, name=f"genome_{index}"), "random")

  def tell(self, proposal_index, structure, fitness, edge_weights):
    if fitness is not None:
      self.history.append(Member(proposal_index, structure, float(fitness),
                                 dict(edge_weights)))


class OneShot:
  """The one-shot variant: proposal 0 is the supernet, proposal 1 (once 0 is told) its
  pruned network with fixed weights. `propose` returns None while waiting for the
  supernet."""

  def __init__(self, space, seed=0, threshold=0.5):
    if not 0.0 < threshold < 1.0:
      raise ValueError(f"threshold must be in (0, 1). Received: {threshold}")
    self.space = space
    self.seed = seed
    self.threshold = threshold
    self.history: List[Member] = []
    self.supernet: Optional[Member] = None

  def propose(self, index) -> Optional[Proposal]:
    if index == 0:
      rng = np.random.default_rng([self.seed, 0])
      return Proposal(0, genome_lib.fully_connected_genome(self.space, rng, "supernet"),
                      "one_shot_supernet")
    if index > 1:
      raise ValueError(f"The one-shot search has two trials (supernet, retrain). "
                       f"Received: proposal index {index}")
    if self.supernet is None:
      return None
    structure, weights = prune(self.supernet.structure, self.supernet.edge_weights,
                               self.threshold)
    return Proposal(1, structure, "one_shot_retrain", parent=0, edge_weights=weights)

  def tell(self, proposal_index, structure, fitness, edge_weights):
    if fitness is None:
      return
    member = Member(proposal_index, structure, float(fitness), dict(edge_weights))
    self.history.append(member)
    if proposal_index == 0:
      self.supernet = member


def prune(structure, edge_weights, threshold=0.5):
  """The one-shot pruning: drops connections weighing under `threshold` (each node keeps
  its strongest input), removes dead nodes.

  Returns:
    `(pruned structure, node-aligned weights of its kept connections)`.
  """
  kept = (set(genome_lib.edges(structure)) -
          mutations.weak_connections(structure, edge_weights, threshold))
  nodes = genome_lib.to_nodes(structure)
  for node in nodes:
    if node.level != genome_lib.STEM_LEVEL:
      node.inputs = {s for s, t in kept if t == node.key}
  # Keys are the original indices: the weights follow the renumbering.
  rebuilt, key_index = genome_lib.assemble(nodes, "one_shot_pruned", structure.depth)
  pruned, index_map = genome_lib.remove_dead_nodes(rebuilt)
  pruned_weights = {}
  for (s, t), w in edge_weights.items():
    if (s, t) in kept and key_index[s] in index_map and key_index[t] in index_map:
      pruned_weights[(index_map[key_index[s]], index_map[key_index[t]])] = w
  return pruned, genome_lib.edges_to_weights(pruned, pruned_weights)


def build_algorithm(name, space, population_size=8, sample_size=3, seed=0,
                    threshold=0.5, options=None):
  """The algorithm `name` of `ALGORITHMS`; `options` (`MutationOptions`) applies to the
  evolutions, whose edge mutation the name decides."""
  if name not in ALGORITHMS:
    raise ValueError(f"algorithm must be one of {ALGORITHMS}. Received: {name!r}")
  if name == RANDOM:
    return RandomSearch(space, seed)
  if name == ONE_SHOT:
    return OneShot(space, seed, threshold)
  options = options or mutations.MutationOptions()
  edge_mutation = mutations.GUIDED if name == EVOLUTION else mutations.RANDOM_FLIP
  options = dataclasses.replace(options, edge_mutation=edge_mutation, threshold=threshold)
  return RegularizedEvolution(space, population_size, sample_size, options, seed)


def _json_ready(value):
  if isinstance(value, dict):
    return {k: _json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  return value
