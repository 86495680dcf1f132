"""`official.search.mutations`: the connection-learning-guided mutation drops exactly the weak
connections and keeps the expected connection count (statistically, fixed seed); the
random-flip baseline flips exactly k; splits and merges keep each level's channel budget."""

import dataclasses

import numpy as np
import pytest

from official.modeling import structures
from official.search import genome as genome_lib
from official.search import mutations

SPACE = genome_lib.SearchSpace()
# Canonical, valid in SPACE: 3 stems, 2/2/2/1 nodes, 16/16/32/64 filters.
PARENT = structures.Structure.from_list([
    [-1, 1], [-2, 2], [-3, 1],
    [0, [0, 1], 8, 1, 1, 0], [0, [1, 2], 8, 2, 1, 0],
    [1, [0, 3, 4], 8, 1, 2, 0], [1, [2, 4], 8, 4, 2, 0],
    [2, [0, 5], 16, 2, 2, 0], [2, [3, 5, 6], 16, 1, 2, 0],
    [3, [2, 7, 8], 64, 1, 2, 0]], name="parent", depth=26)
# Learned weights of the multi-input nodes: 4 under 0.5 (node 6 has both under 0.5).
WEIGHTS = {(0, 3): 0.7, (1, 3): 0.3, (1, 4): 0.6, (2, 4): 0.55,
           (0, 5): 0.2, (3, 5): 0.9, (4, 5): 0.51,
           (2, 6): 0.1, (4, 6): 0.4,
           (0, 7): 0.8, (5, 7): 0.6,
           (3, 8): 0.52, (5, 8): 0.53, (6, 8): 0.54,
           (2, 9): 0.95, (7, 9): 0.9, (8, 9): 0.85}


def test_guided_mutation_drops_weak_connections_and_keeps_each_nodes_strongest():
  child, info = mutations.connection_guided(PARENT, WEIGHTS, np.random.default_rng(0))
  # (2, 6) 0.1 and (4, 6) 0.4 are both weak: node 6 keeps its strongest, (4, 6).
  assert info["dropped"] == [(0, 5), (1, 3), (2, 6)]
  absent = genome_lib.valid_edges(PARENT) - genome_lib.edges(PARENT)
  assert info["add_probability"] == pytest.approx(3 / len(absent))
  assert set(info["added"]) <= absent
  genome_lib.check_genome(child, SPACE)
  # A weak connection is never re-drawn; the child is exactly the parent rewired.
  assert not set(info["dropped"]) & set(info["added"])
  expected = (genome_lib.edges(PARENT) - set(info["dropped"])) | set(info["added"])
  assert child.to_list() == mutations.with_edges(PARENT, expected).to_list()
  assert len(genome_lib.edges(child)) == len(genome_lib.edges(PARENT)) - 3 + len(
      info["added"])


def test_guided_mutation_keeps_the_expected_connection_count():
  rng = np.random.default_rng(2024)
  parent_edges = len(genome_lib.edges(PARENT))
  absent = len(genome_lib.valid_edges(PARENT) - genome_lib.edges(PARENT))
  draws = 4000
  counts, added = [], []
  for _ in range(draws):
    child, info = mutations.connection_guided(PARENT, WEIGHTS, rng)
    counts.append(len(genome_lib.edges(child)))
    added.append(len(info["added"]))
    assert len(info["dropped"]) == 3
  # added ~ Binomial(absent, 3 / absent): mean 3, standard error of the mean below.
  standard_error = np.sqrt(3 * (1 - 3 / absent) / draws)
  assert abs(np.mean(added) - 3) < 4 * standard_error
  assert abs(np.mean(counts) - parent_edges) < 4 * standard_error
  # The counts do vary: a random mutation, not a fixed rewiring.
  assert np.std(counts) > 1.0


def test_guided_mutation_without_weights_or_without_weak_edges_changes_nothing():
  strong = {e: 0.9 for e in WEIGHTS}
  child, info = mutations.connection_guided(PARENT, strong, np.random.default_rng(0))
  assert child.to_list() == PARENT.to_list() and info["dropped"] == info["added"] == []
  child, _ = mutations.connection_guided(PARENT, {}, np.random.default_rng(0))
  assert child.to_list() == PARENT.to_list()
  with pytest.raises(ValueError, match=r"connections the genome lacks. Received: \[\(0, 4\)\]"):
    mutations.connection_guided(PARENT, {(0, 4): 0.5}, np.random.default_rng(0))
  with pytest.raises(ValueError, match="threshold must be in"):
    mutations.connection_guided(PARENT, WEIGHTS, np.random.default_rng(0), threshold=1.0)


@pytest.mark.parametrize("seed", range(20))
def test_random_flip_flips_exactly_k_and_stays_valid(seed):
  child, info = mutations.random_flip(PARENT, np.random.default_rng(seed), num_flips=3)
  before = genome_lib.edges(PARENT)
  assert not set(info["dropped"]) - before and not set(info["added"]) & before
  assert len(info["dropped"]) + len(info["added"]) == 3
  expected = (before - set(info["dropped"])) | set(info["added"])
  assert child.to_list() == mutations.with_edges(PARENT, expected).to_list()
  genome_lib.check_genome(child, SPACE)


def test_random_flip_never_removes_a_single_input():
  chain = structures.Structure.from_list(
      [[-1, 1], [0, [0], 4, 1, 1, 0], [1, [1], 4, 1, 2, 0], [2, [2], 4, 1, 2, 0],
       [3, [3], 4, 1, 2, 0]])
  for seed in range(30):
    child, info = mutations.random_flip(chain, np.random.default_rng(seed), num_flips=2)
    assert len(info["dropped"]) + len(info["added"]) == 2
    # An input is removed only from a node that has gained another first.
    assert len(info["added"]) >= len(info["dropped"])
    assert all(node.inputs for _, node in child.blocks)


@pytest.mark.parametrize("seed", range(10))
def test_split_and_merge_keep_the_channel_budget(seed):
  rng = np.random.default_rng(seed)
  split, info = mutations.split_node(PARENT, SPACE, rng)
  genome_lib.check_genome(split, SPACE)
  assert len(split.blocks) == len(PARENT.blocks) + 1
  assert genome_lib.level_filters(split) == SPACE.level_filters
  merged, info = mutations.merge_nodes(PARENT, SPACE, rng)
  genome_lib.check_genome(merged, SPACE)
  assert len(merged.blocks) == len(PARENT.blocks) - 1 and len(info["nodes"]) == 2
  assert genome_lib.level_filters(merged) == SPACE.level_filters


def test_split_halves_filters_and_consumers_take_both():
  space = dataclasses.replace(SPACE, max_nodes_per_level=3)
  # Level 3 is the only level whose split is tested here: force it by a one-node space.
  chain = structures.Structure.from_list(
      [[-1, 1], [0, [0], 6, 1, 1, 0], [1, [0, 1], 4, 1, 2, 0], [2, [1, 2], 4, 1, 2, 0],
       [3, [3], 4, 1, 2, 0]])
  children = {}
  for seed in range(40):
    child, info = mutations.split_node(chain, space, np.random.default_rng(seed))
    children[info["node"]] = child.to_list()
  # Node 1 (6 filters, level 0) splits into 3 + 3; nodes 2 and 3 (the consumers) take both.
  assert children[1] == [[-1, 1], [0, [0], 3, 1, 1, 0], [0, [0], 3, 1, 1, 0],
                         [1, [0, 1, 2], 4, 1, 2, 0], [2, [1, 2, 3], 4, 1, 2, 0],
                         [3, [4], 4, 1, 2, 0]]
  assert children[4] == [[-1, 1], [0, [0], 6, 1, 1, 0], [1, [0, 1], 4, 1, 2, 0],
                         [2, [1, 2], 4, 1, 2, 0], [3, [3], 2, 1, 2, 0], [3, [3], 2, 1, 2, 0]]
  assert set(children) == {1, 2, 3, 4}
  narrow = dataclasses.replace(space, min_filters=4)
  assert mutations.split_node(chain, narrow, np.random.default_rng(0)) == (chain, None)


def test_merge_unites_inputs_and_consumers():
  child, info = mutations.merge_nodes(PARENT, SPACE, np.random.default_rng(0))
  merged_level = PARENT.nodes[info["nodes"][0]].level
  assert [n.level for n in PARENT.nodes if hasattr(n, "level")].count(merged_level) == 2
  first, second = (PARENT.nodes[k] for k in info["nodes"])
  merged = [n for _, n in child.blocks if n.level == merged_level]
  assert len(merged) == 1 and merged[0].filters == first.filters + second.filters
  assert merged[0].temporal_dilation == first.temporal_dilation
  single = structures.Structure.from_list(
      [[-1, 1], [0, [0], 4, 1, 1, 0], [1, [1], 4, 1, 2, 0], [2, [2], 4, 1, 2, 0],
       [3, [3], 4, 1, 2, 0]])
  assert mutations.merge_nodes(single, SPACE, np.random.default_rng(0)) == (single, None)


def test_redraw_dilation_changes_one_node():
  for seed in range(20):
    child, info = mutations.redraw_dilation(PARENT, SPACE, np.random.default_rng(seed))
    # PARENT's nodes of one level have different inputs: the order cannot change.
    changed = [k for k, (a, b) in enumerate(zip(PARENT.nodes, child.nodes)) if a != b]
    assert changed == [info["node"]]
    assert child.nodes[info["node"]] == dataclasses.replace(
        PARENT.nodes[info["node"]], temporal_dilation=info["to"])
    assert info["from"] != info["to"] and info["to"] in SPACE.temporal_dilations
  one = dataclasses.replace(SPACE, temporal_dilations=(1,))
  assert mutations.redraw_dilation(PARENT, one, np.random.default_rng(0)) == (PARENT, None)


@pytest.mark.parametrize("edge_mutation", mutations.EDGE_MUTATIONS)
def test_mutate_gives_a_valid_child_that_differs(edge_mutation):
  options = mutations.MutationOptions(edge_mutation=edge_mutation, dilation_probability=0.5,
                                      split_probability=0.5, merge_probability=0.5)
  rng = np.random.default_rng(7)
  for _ in range(30):
    child, info = mutations.mutate(PARENT, SPACE, rng, options, WEIGHTS)
    genome_lib.check_genome(child, SPACE)
    assert genome_lib.genome_key(child) != genome_lib.genome_key(PARENT)
    assert info["steps"][0][0] in (edge_mutation, "forced_flip")
  # Guided, with no weak connection and no optional mutation: a forced flip.
  quiet = mutations.MutationOptions(dilation_probability=0.0, max_attempts=2)
  child, info = mutations.mutate(PARENT, SPACE, rng, quiet, {e: 0.9 for e in WEIGHTS})
  assert info["steps"][0][0] == "forced_flip"
  assert abs(len(genome_lib.edges(child)) - len(genome_lib.edges(PARENT))) == 1
  with pytest.raises(ValueError, match="edge_mutation must be one of"):
    mutations.MutationOptions(edge_mutation="flip")


def test_a_child_never_trains_its_parents_network():
  # Before: the child was compared with its parent as a whole genome, dead nodes included
  # (what training drops), so a flip or a dilation inside the dead subgraph made a "new"
  # child that trained exactly the parent's network: about 1 in 10 evolution_random
  # children (39 of 400) and 3 of 400 guided ones.
  space = genome_lib.SearchSpace(stem_types=(-1, -2, -3), nodes_per_level=(2, 2, 2, 1),
                                 level_filters=(16, 16, 32, 64), temporal_dilations=(1, 2, 4),
                                 stem_dilations=(1, 2), max_nodes_per_level=3, depth=26)
  for edge_mutation in (mutations.GUIDED, mutations.RANDOM_FLIP):
    options = mutations.MutationOptions(edge_mutation=edge_mutation)
    same = 0
    for seed in range(200):
      rng = np.random.default_rng(seed)
      parent = genome_lib.random_genome(space, rng)
      pruned, index_map = genome_lib.remove_dead_nodes(parent)
      weights = genome_lib.map_edge_weights(
          {e: float(rng.uniform(0.47, 0.53)) for e in genome_lib.edges(pruned)
           if len(pruned.nodes[e[1]].inputs) > 1}, index_map)
      child, _ = mutations.mutate(parent, space, rng, options, weights)
      same += (genome_lib.genome_key(genome_lib.remove_dead_nodes(child)[0]) ==
               genome_lib.genome_key(pruned))
    assert same == 0, (edge_mutation, same)
