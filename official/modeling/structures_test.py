"""Tests for the structure specs and the paper's named structures."""

import pytest

from official.modeling import structures


def test_named_structures_round_trip_to_the_authors_lists():
  asn50 = structures.ASN50.to_list()
  assert asn50[0] == [-1, 4] and asn50[3] == [-2, 1]
  assert asn50[8] == [1, [0, 4, 5, 6, 7], 64, 2, 2, 0]
  assert asn50[14] == [3, [12, 13], 512, 2, 2, 0]
  asn101 = structures.ASN101.to_list()
  assert [n[2] for n in asn101[12:]] == [192, 192, 256]
  assert asn101[:12] == asn50[:12]
  asnp = structures.FULL_ASNP50.to_list()
  assert asnp[4] == [-3, 4]
  assert asnp[13] == [2, [2, 3, 4, 5, 6, 7, 8, 10, 11], 256, 4, 2, 0]
  assert len(asnp) == 15
  assert structures.FULL_ASNP50.final_nodes == [14]
  assert (structures.ASN50.depth, structures.ASN101.depth) == (50, 101)


def test_searched_edge_weights_are_kept_exactly():
  weights = structures.ASN50.edge_weights_list()
  assert weights[:6] == [[]] * 6
  assert weights[6] == [[0.13810564577579498, 0.8465337157249451, 0.3072969317436218,
                         0.2867436408996582]]
  assert structures.ASN101.edge_weights == structures.ASN50.edge_weights
  asnp = structures.FULL_ASNP50.node_edge_weights(13)
  assert len(asnp) == 9 and asnp[2] == 0.9739039540290833
  assert structures.FULL_ASNP50.node_edge_weights(4) == []


def test_from_list_accepts_flat_node_weights():
  nodes = [[-1, 1], [-2, 1], [3, [0, 1], 4, 1, 2, 0]]
  nested = structures.Structure.from_list(nodes, [[], [], [[0.25, 0.75]]])
  flat = structures.Structure.from_list(nodes, [[], [], [0.25, 0.75]])
  assert nested == flat
  assert nested.edge_weights == ((), (), (0.25, 0.75))


def test_get_structure():
  assert structures.get_structure("asn50") is structures.ASN50
  assert structures.get_structure(structures.ASN101) is structures.ASN101
  custom = structures.get_structure([[-1, 1], [3, [0], 4, 1, 1, 0]])
  assert custom.name == "custom" and custom.edge_weights is None
  with pytest.raises(ValueError, match="Unknown structure name"):
    structures.get_structure("asn51")


@pytest.mark.parametrize("nodes,weights,message", [
    ([[-1, 1], [3, [1], 4, 1, 1, 0]], None, "input 1, which is not an earlier node"),
    ([[-1, 1], [3, [0, 2], 4, 1, 1, 0]], None, "input 2, which is not an earlier node"),
    ([[-1, 1], [3, [-1], 4, 1, 1, 0]], None, "not an earlier node"),
    ([[-4, 1], [3, [0], 4, 1, 1, 0]], None, "Unknown stem type"),
    ([[-1, 1], [-2, 1], [3, [0, 1], 4, 1, 1, 0]], [[], [], [[0.5]]], "needs 2 edge weights"),
    ([[-1, 1], [3, [0], 4, 1, 1, 0]], [[], [[0.5]]], "needs 0 edge weights"),
    ([[-1, 1], [3, [0], 4, 1, 1, 0]], [[]], "one edge-weight entry per node"),
    ([[-1, 1], [-2, 1], [3, [0, 1], 4, 1, 1, 0]], [[], [], [[0.5, 1.0]]], "in \\(0, 1\\)"),
    ([[-1, 1], [2, [0], 4, 1, 1, 0]], None, "level-3 block"),
    ([[-1, 1], [1, [0], 4, 1, 1, 0], [0, [1], 4, 1, 1, 0], [3, [2], 4, 1, 1, 0]], None,
     "levels must not decrease"),
    ([[-1, 1], [3, [0], 4, 1, 1, 0], [-2, 1]], None, "Stems must come before blocks"),
    ([[-1, 1], [4, [0], 4, 1, 1, 0]], None, "level must be in 0..3"),
    ([[-1, 1], [3, [0, 0], 4, 1, 1, 0]], None, "distinct"),
    ([[-1, 1], [3, [], 4, 1, 1, 0]], None, "at least one input"),
    ([[-1, 1], [3, [0], 0, 1, 1, 0]], None, "filters must be a positive int"),
    ([[-1, 0], [3, [0], 4, 1, 1, 0]], None, "temporal_dilation must be a positive int"),
    ([[-1, 1], [3, [0], 4, 1]], None, "must be \\[level"),
    ([], None, "at least one node"),
])
def test_invalid_structures_raise(nodes, weights, message):
  with pytest.raises(ValueError, match=message):
    structures.Structure.from_list(nodes, weights)


def test_specs_are_frozen_and_hashable():
  assert hash(structures.ASN50) == hash(structures.Structure.from_list(
      structures.ASN50.to_list(), structures.ASN50.edge_weights, "asn50", 50))
  with pytest.raises(AttributeError):
    structures.ASN50.name = "x"  # pytype: disable=not-writable
