"""`official.search.genome`: validity rules, dead-node removal, the round trips to the
`structures` form, to edge-weight dicts and to a model the builder accepts."""

import dataclasses

import numpy as np
import pytest

from official.modeling import builders
from official.modeling import structures
from official.search import genome as genome_lib

SPACE = genome_lib.SearchSpace()  # RGB, flow, object; 2/2/2/1 nodes; 16/16/32/64 filters
# Flow stem 1 only feeds node 4, which feeds nothing: both are dead.
WITH_DEAD = [[-1, 1], [-2, 2], [-3, 1],
             [0, [0], 8, 1, 1, 0], [0, [1], 8, 2, 1, 0],
             [1, [0, 3], 8, 1, 2, 0], [1, [3], 8, 4, 2, 0],
             [2, [0, 6], 16, 2, 2, 0], [2, [2, 5], 16, 1, 2, 0],
             [3, [2, 7, 8], 64, 1, 2, 0]]


def _genome(nodes):
  return structures.Structure.from_list(nodes, name="g", depth=26)


def test_random_genomes_are_valid_canonical_and_over_connected():
  fractions = []
  for seed in range(200):
    genome = genome_lib.random_genome(SPACE, np.random.default_rng(seed))
    genome_lib.check_genome(genome, SPACE)
    assert genome_lib.canonical(genome).to_list() == genome.to_list()
    assert genome_lib.summary(genome)["nodes_per_level"] == [2, 2, 2, 1]
    assert genome_lib.level_filters(genome) == (16, 16, 32, 64)
    fractions.append(len(genome_lib.edges(genome)) / len(genome_lib.valid_edges(genome)))
  # Each allowed edge with p = 0.5, plus one forced input where none was drawn.
  assert 0.5 < np.mean(fractions) < 0.56


def test_fully_connected_genome_has_every_valid_edge():
  genome = genome_lib.fully_connected_genome(SPACE, np.random.default_rng(0))
  assert genome_lib.edges(genome) == genome_lib.valid_edges(genome)
  # 3 stems; level 0 takes 3, level 1 takes 5, level 2 takes 7, level 3 takes 9.
  assert len(genome_lib.edges(genome)) == 2 * 3 + 2 * 5 + 2 * 7 + 9


@pytest.mark.parametrize("change, message", [
    (lambda n: n.__setitem__(5, [1, [0, 4], 8, 1, 2, 0]), None),  # valid: from level 0
    (lambda n: n.__setitem__(6, [1, [5], 8, 4, 2, 0]), "strictly lower levels"),
    (lambda n: n.__setitem__(3, [0, [0], 8, 1, 2, 0]), "spatial stride 1"),
    (lambda n: n.__setitem__(6, [1, [3], 8, 4, 1, 0]), "spatial stride 2"),
    (lambda n: n.__setitem__(6, [1, [3], 8, 3, 2, 0]), "dilation must be one of"),
    (lambda n: n.__setitem__(6, [1, [3], 4, 4, 2, 0]), "channel budget"),
    (lambda n: n.__setitem__(1, [-1, 2]), "stems must be"),
    (lambda n: n.__setitem__(1, [-2, 8]), "Stem 1's dilation"),
])
def test_check_genome_rules(change, message):
  nodes = [list(n) for n in WITH_DEAD]
  change(nodes)
  genome = _genome(nodes)
  if message is None:
    genome_lib.check_genome(genome, SPACE)
    assert genome_lib.is_valid(genome, SPACE)
    return
  with pytest.raises(ValueError, match=message):
    genome_lib.check_genome(genome, SPACE)
  assert not genome_lib.is_valid(genome, SPACE)


def test_check_genome_limits_nodes_per_level():
  space = dataclasses.replace(SPACE, max_nodes_per_level=2)
  nodes = [list(n) for n in WITH_DEAD]
  nodes[3:5] = [[0, [0], 4, 1, 1, 0], [0, [1], 8, 2, 1, 0], [0, [2], 4, 1, 1, 0]]
  nodes = [n if n[0] < 0 or n[0] == 0 else [n[0], [s + 1 if s >= 5 else s for s in n[1]]]
           + n[2:] for n in nodes]
  with pytest.raises(ValueError, match=r"At most 2 nodes per level. Received: \[3, 2, 2, 1\]"):
    genome_lib.check_genome(_genome(nodes), space)


def test_structure_rules_a_genome_inherits():
  with pytest.raises(ValueError, match="at least one input"):
    _genome([[-1, 1], [0, [], 4, 1, 1, 0], [3, [1], 4, 1, 2, 0]])
  with pytest.raises(ValueError, match="level-3 block"):
    _genome([[-1, 1], [0, [0], 4, 1, 1, 0], [2, [1], 4, 1, 2, 0]])


def test_remove_dead_nodes():
  pruned, index_map = genome_lib.remove_dead_nodes(_genome(WITH_DEAD))
  assert index_map == {0: 0, 2: 1, 3: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7}
  assert pruned.to_list() == [
      [-1, 1], [-3, 1], [0, [0], 8, 1, 1, 0], [1, [0, 2], 8, 1, 2, 0],
      [1, [2], 8, 4, 2, 0], [2, [0, 4], 16, 2, 2, 0], [2, [1, 3], 16, 1, 2, 0],
      [3, [1, 5, 6], 64, 1, 2, 0]]
  assert pruned.name == "g" and pruned.depth == 26
  # Nothing dead: unchanged.
  again, identity = genome_lib.remove_dead_nodes(pruned)
  assert again.to_list() == pruned.to_list() and identity == {k: k for k in range(8)}


def test_canonical_sorts_blocks_and_inputs():
  nodes = genome_lib.to_nodes(_genome(WITH_DEAD))
  nodes.reverse()  # blocks out of level order, stems reversed
  nodes = [n for n in nodes if n.level >= 0] + [n for n in nodes if n.level < 0][::-1]
  assert genome_lib.from_nodes(nodes, "g", 26).to_list() == _genome(WITH_DEAD).to_list()
  assert genome_lib.genome_key(_genome(WITH_DEAD)) == repr(WITH_DEAD)


def test_edge_weight_round_trip_on_the_papers_weights():
  structure = structures.FULL_ASNP50
  by_edge = genome_lib.weights_to_edges(structure, structure.edge_weights_list())
  assert by_edge[(4, 13)] == 0.9739039540290833 and by_edge[(0, 5)] == 0.6143830418586731
  assert len(by_edge) == sum(len(n.inputs) for _, n in structure.blocks if len(n.inputs) > 1)
  assert genome_lib.edges_to_weights(structure, by_edge) == structure.edge_weights_list()
  with pytest.raises(ValueError, match=r"Node 14: no weight for the connections from \[12\]"):
    genome_lib.edges_to_weights(structure, {e: w for e, w in by_edge.items() if e != (12, 14)})


def test_map_edge_weights_back_to_genome_indices():
  pruned, index_map = genome_lib.remove_dead_nodes(_genome(WITH_DEAD))
  assert genome_lib.map_edge_weights({(1, 5): 0.3, (0, 3): 0.9}, index_map) == {
      (2, 7): 0.3, (0, 5): 0.9}


def test_genome_round_trips_to_the_structures_form_and_a_built_model():
  genome = genome_lib.random_genome(SPACE, np.random.default_rng(3))
  assert structures.Structure.from_list(genome.to_list(), name=genome.name,
                                        depth=genome.depth) == genome
  pruned, _ = genome_lib.remove_dead_nodes(genome)
  weights = genome_lib.edges_to_weights(pruned, {e: 0.25 for e in genome_lib.edges(pruned)})
  model = builders.build_model(
      structure=pruned.to_list(), edge_weights=weights, model_type="assemblenet_plus",
      depth=26, num_frames=2, image_size=32, num_classes=3, attention_mode="peer")
  assert model.uses_objects == pruned.has_stem(structures.OBJECT)
  assert model.structure.to_list() == pruned.to_list()
  # The fixed weights reach the model's fusions (post-sigmoid 0.25 on every connection).
  fusions = [l for l in model.layers if l.name.endswith("_fusion") and l.num_inputs > 1]
  assert fusions
  for layer in fusions:
    np.testing.assert_allclose(layer.edge_weight_values().numpy(), 0.25, rtol=1e-5)


def test_search_space_validation():
  with pytest.raises(ValueError, match="split evenly into 3 nodes"):
    genome_lib.SearchSpace(nodes_per_level=(3, 2, 2, 1))
  with pytest.raises(ValueError, match="needs 4 positive ints"):
    genome_lib.SearchSpace(level_filters=(16, 16, 32))
  with pytest.raises(ValueError, match="stem_types must be"):
    genome_lib.SearchSpace(stem_types=(-4,))
  with pytest.raises(ValueError, match="depth must be one of"):
    genome_lib.SearchSpace(depth=27)
  space = genome_lib.build_search_space(stem_types=[-1], nodes_per_level=[1, 1, 1, 1],
                                        level_filters=[4, 4, 8, 8])
  assert space.stem_types == (-1,) and not space.uses_objects
