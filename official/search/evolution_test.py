"""`official.search.evolution` and the searcher's bookkeeping, with stub fitness: tournament
selection, aging, deterministic replay, the one-shot pruning, and `ConnectivitySearcher`
driven by hand (no Ray runtime)."""

import json

import numpy as np
import pytest

from official.modeling import structures
from official.search import evolution
from official.search import genome as genome_lib
from official.search import mutations
from official.search import searchers

SPACE = genome_lib.SearchSpace()


def _evolution(population=4, sample=2, seed=0, edge_mutation=mutations.GUIDED):
  return evolution.RegularizedEvolution(
      SPACE, population, sample, mutations.MutationOptions(edge_mutation=edge_mutation),
      seed)


def _tell(algorithm, index, fitness):
  structure = algorithm.propose(index).structure
  algorithm.tell(index, structure, fitness, {})
  return structure


def test_tournament_never_selects_the_sample_size_minus_one_worst():
  algorithm = _evolution(population=5, sample=3)
  for index, fitness in enumerate([0.5, 0.1, 0.9, 0.2, 0.7]):
    _tell(algorithm, index, fitness)
  rng = np.random.default_rng(0)
  chosen = [algorithm.select_parent(rng).index for _ in range(600)]
  # With S = 3, the two worst (indices 1 and 3) can never win a tournament; each of the
  # other three wins: 0.9 in 6 of 10 samples, 0.7 in 3, 0.5 in 1.
  assert set(chosen) == {0, 2, 4}
  frequencies = np.bincount(chosen, minlength=5) / len(chosen)
  np.testing.assert_allclose(frequencies[[2, 4, 0]], [0.6, 0.3, 0.1], atol=0.06)
  full = _evolution(population=5, sample=5)
  for index, fitness in enumerate([0.5, 0.1, 0.9, 0.2, 0.7]):
    _tell(full, index, fitness)
  assert {full.select_parent(rng).index for _ in range(20)} == {2}


def test_aging_removes_the_oldest_whatever_its_fitness():
  algorithm = _evolution(population=3, sample=2)
  removed = []
  for index, fitness in enumerate([0.9, 0.1, 0.2, 0.3, 0.4]):
    structure = algorithm.propose(index).structure
    removed.append(algorithm.tell(index, structure, fitness, {}))
  assert [m.index for m in algorithm.population] == [2, 3, 4]
  # The best genome (0.9) aged out first.
  assert [m.index if m else None for m in removed] == [None, None, None, 0, 1]
  assert [m.index for m in algorithm.history] == [0, 1, 2, 3, 4]
  algorithm.tell(5, structure, None, {})  # a failed trial joins nothing
  assert [m.index for m in algorithm.population] == [2, 3, 4]


def test_proposals_random_first_then_mutations_of_population_members():
  algorithm = _evolution(population=3, sample=2)
  origins = []
  for index in range(8):
    proposal = algorithm.propose(index)
    origins.append(proposal.origin)
    genome_lib.check_genome(proposal.structure, SPACE)
    if proposal.origin == "mutation":
      assert proposal.parent in [m.index for m in algorithm.population]
      assert proposal.mutation[0][0] in ("guided", "forced_flip")
      json.dumps(proposal.mutation)  # JSON-ready for the trial log
    weights = {e: 0.3 if e[0] == 0 else 0.7 for e in genome_lib.edges(proposal.structure)
               if len(proposal.structure.nodes[e[1]].inputs) > 1}
    algorithm.tell(index, proposal.structure, float(index % 3), weights)
  assert origins == ["random"] * 3 + ["mutation"] * 5


def test_replay_proposes_what_the_uninterrupted_search_would():
  fitness = lambda structure: len(genome_lib.edges(structure)) / 40.0  # pylint: disable=unnecessary-lambda-assignment
  first = _evolution(seed=5)
  proposals = []
  for index in range(9):
    structure = first.propose(index).structure
    proposals.append(structure.to_list())
    first.tell(index, structure, fitness(structure), {})
  resumed = _evolution(seed=5)
  for index in range(5):  # the finished trials, replayed
    structure = structures.Structure.from_list(proposals[index])
    resumed.tell(index, structure, fitness(structure), {})
  assert [resumed.propose(k).structure.to_list() for k in (5,)] == [proposals[5]]
  assert _evolution(seed=6).propose(0).structure.to_list() != proposals[0]


def test_evolution_with_stub_fitness_beats_its_initial_population():
  # Stub fitness: the fraction of a target connection set present; its learned weights
  # say which connections belong (0.9) or not (0.1): the guided mutation can follow them.
  target = genome_lib.valid_edges(genome_lib.fully_connected_genome(
      SPACE, np.random.default_rng(0)))
  target = {e for e in target if (e[0] + e[1]) % 3 == 0}

  def evaluate(structure):
    present = genome_lib.edges(structure)
    score = len(present & target) / len(target) - 0.5 * len(present - target) / len(present)
    weights = {e: (0.9 if e in target else 0.1) for e in present
               if len(structure.nodes[e[1]].inputs) > 1}
    return score, weights

  results = {}
  for mutation in mutations.EDGE_MUTATIONS:
    algorithm = _evolution(population=6, sample=3, seed=1, edge_mutation=mutation)
    scores = []
    for index in range(60):
      structure = algorithm.propose(index).structure
      score, weights = evaluate(structure)
      scores.append(score)
      algorithm.tell(index, structure, score, weights)
    results[mutation] = scores
    assert max(scores[6:]) > max(scores[:6])
  # With informative weights, the guided mutation climbs faster than random flips.
  assert max(results["guided"]) > max(results["random_flip"])


def test_random_search_and_argument_checks():
  search = evolution.build_algorithm("random", SPACE, seed=3)
  assert search.propose(4).structure.to_list() == search.propose(4).structure.to_list()
  assert search.propose(4).origin == "random"
  with pytest.raises(ValueError, match="sample_size must be an int in"):
    evolution.build_algorithm("evolution", SPACE, population_size=2, sample_size=3)
  with pytest.raises(ValueError, match="algorithm must be one of"):
    evolution.build_algorithm("evolve", SPACE)
  assert evolution.build_algorithm("evolution_random", SPACE).options.edge_mutation == (
      "random_flip")


def test_one_shot_prunes_weak_connections_and_fixes_the_kept_weights():
  space = genome_lib.SearchSpace(stem_types=(-1, -2), nodes_per_level=(1, 1, 1, 1),
                                 level_filters=(4, 4, 8, 8))
  one_shot = evolution.build_algorithm("one_shot", space, threshold=0.5)
  supernet = one_shot.propose(0)
  assert supernet.origin == "one_shot_supernet"
  assert supernet.structure.to_list()[2:] == [
      [0, [0, 1], 4, supernet.structure.nodes[2].temporal_dilation, 1, 0],
      [1, [0, 1, 2], 4, supernet.structure.nodes[3].temporal_dilation, 2, 0],
      [2, [0, 1, 2, 3], 8, supernet.structure.nodes[4].temporal_dilation, 2, 0],
      [3, [0, 1, 2, 3, 4], 8, supernet.structure.nodes[5].temporal_dilation, 2, 0]]
  assert one_shot.propose(1) is None  # waits for the supernet
  weights = {(0, 2): 0.8, (1, 2): 0.3,
             (0, 3): 0.2, (1, 3): 0.4, (2, 3): 0.45,  # all weak: keeps (2, 3)
             (0, 4): 0.6, (1, 4): 0.1, (2, 4): 0.2, (3, 4): 0.7,
             (0, 5): 0.1, (1, 5): 0.2, (2, 5): 0.3, (3, 5): 0.35, (4, 5): 0.9}
  one_shot.tell(0, supernet.structure, 0.4, weights)
  retrain = one_shot.propose(1)
  assert retrain.origin == "one_shot_retrain" and retrain.parent == 0
  # The flow stem (1) lost every connection: dead, removed.
  dilations = [n.temporal_dilation for n in supernet.structure.nodes]
  assert retrain.structure.to_list() == [
      [-1, dilations[0]], [0, [0], 4, dilations[2], 1, 0], [1, [1], 4, dilations[3], 2, 0],
      [2, [0, 2], 8, dilations[4], 2, 0], [3, [3], 8, dilations[5], 2, 0]]
  assert retrain.edge_weights == [[], [], [], [[0.6, 0.7]], []]
  with pytest.raises(ValueError, match="two trials"):
    one_shot.propose(2)


# The searcher, driven by hand ---------------------------------------------------------------


def _result(structure, fitness):
  pruned, _ = genome_lib.remove_dead_nodes(structure)
  weights = genome_lib.edges_to_weights(pruned, {e: 0.6 for e in genome_lib.edges(pruned)})
  return {"fitness": fitness, "metric": "map", "seconds": 1.0, "steps": 2,
          "model_dir": "/x", "index": 0,
          "result_json": json.dumps({"metrics": {"map": fitness}, "edge_weights": weights,
                                     "peers": [], "pruned_structure": pruned.to_list()})}


def test_searcher_logs_every_trial_and_resumes_from_the_log(tmp_path):
  path = str(tmp_path / "trials.json")
  header = {"algorithm": "evolution", "seed": 0}
  log = searchers.TrialLog(path, header)
  searcher = searchers.ConnectivitySearcher(_evolution(population=2), log, 4,
                                            {"out": "/x"}, "evolution")
  configs = [searcher.suggest(f"t{k}") for k in range(2)]
  assert [c["index"] for c in configs] == [0, 1] and configs[0]["setup"] == {"out": "/x"}
  structure = structures.Structure.from_list(configs[1]["structure"])
  searcher.on_trial_complete("t1", _result(structure, 0.25))
  searcher.on_trial_complete("t0", error=True)
  saved = json.loads((tmp_path / "trials.json").read_text())
  assert [r["index"] for r in saved["trials"]] == [1, 0]
  assert saved["trials"][0]["fitness"] == 0.25 and saved["trials"][1]["error"]
  assert saved["header"] == header
  # A new searcher on the same log continues the numbering and the budget.
  resumed_log = searchers.TrialLog(path, header)
  algorithm = _evolution(population=2)
  searchers.replay(algorithm, resumed_log)
  assert [m.index for m in algorithm.population] == [1]
  pruned, index_map = genome_lib.remove_dead_nodes(structure)
  expected = genome_lib.map_edge_weights(
      {e: 0.6 for e in genome_lib.edges(pruned) if len(pruned.nodes[e[1]].inputs) > 1},
      index_map)
  assert expected and algorithm.population[0].edge_weights == expected
  resumed = searchers.ConnectivitySearcher(algorithm, resumed_log, 4, {}, "evolution")
  assert resumed.suggest("t2")["index"] == 2
  assert resumed.suggest("t3")["index"] == 3
  assert resumed.suggest("t4") == searchers.Searcher.FINISHED
  assert resumed_log.best()["index"] == 1
  with pytest.raises(ValueError, match=r"belongs to another search \(differs in \['seed'\]\)"):
    searchers.TrialLog(path, {"algorithm": "evolution", "seed": 1})


def test_a_failed_supernet_ends_the_one_shot_search_without_a_result(tmp_path):
  # Before: with the supernet failed, the retrain proposal stayed None ("waiting for the
  # supernet") and the searcher answered "not ready yet" forever: Tune polled with no trial
  # running, the command hung, and a rerun replayed the failure and hung again. And when
  # the retrain failed, best() fell back to the supernet, reported as the found network.
  header = {"algorithm": evolution.ONE_SHOT, "seed": 0}
  log = searchers.TrialLog(str(tmp_path / "trials.json"), header)
  searcher = searchers.ConnectivitySearcher(
      evolution.build_algorithm(evolution.ONE_SHOT, SPACE), log, 2, {}, evolution.ONE_SHOT)
  assert searcher.suggest("t0")["index"] == 0
  assert searcher.suggest("t1") is None  # The supernet still runs: wait.
  searcher.on_trial_complete("t0", error=True)
  assert searcher.suggest("t1") == searchers.Searcher.FINISHED
  assert log.best() is None
  # A supernet that trained, then a failed retrain: no result either.
  log = searchers.TrialLog(str(tmp_path / "other.json"), header)
  searcher = searchers.ConnectivitySearcher(
      evolution.build_algorithm(evolution.ONE_SHOT, SPACE), log, 2, {}, evolution.ONE_SHOT)
  supernet = structures.Structure.from_list(searcher.suggest("t0")["structure"])
  searcher.on_trial_complete("t0", _result(supernet, 0.39))
  assert searcher.suggest("t1")["index"] == 1
  searcher.on_trial_complete("t1", error=True)
  assert log.best() is None
