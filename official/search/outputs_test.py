"""`official.search.outputs` and the comparison table: the best-so-far curve, the weight
clipping, the gin text and the Markdown table, exactly."""

import os

import gin
import pytest

from official import gin_flags
from official.modeling import builders
from official.search import outputs
from official.search import run

RECORD = {
    "index": 3, "metric": "map", "fitness": 0.4321, "steps": 100,
    "structure": [[-1, 1], [-2, 1], [0, [0], 4, 1, 1, 0], [1, [2], 4, 1, 2, 0],
                  [2, [3], 8, 1, 2, 0], [3, [0, 4], 8, 2, 2, 0]],
    "pruned_structure": [[-1, 1], [0, [0], 4, 1, 1, 0], [1, [1], 4, 1, 2, 0],
                         [2, [2], 8, 1, 2, 0], [3, [0, 3], 8, 2, 2, 0]],
    "edge_weights": [[], [], [], [], [[1.0, 0.25]]],
}


def test_best_so_far_counts_failed_trials():
  records = [{"fitness": None}, {"fitness": 0.3}, {"fitness": 0.2}, {"fitness": None},
             {"fitness": 0.5}]
  assert outputs.best_so_far(records) == [(2, 0.3), (3, 0.3), (4, 0.3), (5, 0.5)]


def test_clip_weights_keeps_post_sigmoid_values_open():
  assert outputs.clip_weights([[], [[1.0, 0.25, 0.0]]]) == [
      [], [[1.0 - 1e-6, 0.25, 1e-6]]]


def test_best_gin_builds_the_found_network():
  text = outputs.best_gin_text(RECORD, [outputs.ROOT + "/gin/experiments/search_synthetic.gin"],
                               ["NUM_FRAMES = 2"], "cmd")
  assert "include 'gin/experiments/search_synthetic.gin'\nNUM_FRAMES = 2\n" in text
  assert "build_model.edge_weights = None" in text
  gin.clear_config()
  try:
    gin_flags.parse_gin([], [text], finalize=False)
    assert gin.query_parameter("%SEARCHED_EDGE_WEIGHTS") == [[], [], [], [],
                                                             [[1.0 - 1e-6, 0.25]]]
    model = builders.build_model()
  finally:
    gin.clear_config()
  assert model.structure.to_list() == RECORD["pruned_structure"]
  assert int(model.input["rgb"].shape[1]) == 2


def test_structure_literal_is_python():
  namespace = {}
  exec(outputs.structure_literal_text(RECORD, "cmd"), namespace)  # pylint: disable=exec-used
  assert namespace["BEST_STRUCTURE"] == RECORD["pruned_structure"]
  assert namespace["BEST_GENOME"] == RECORD["structure"]
  assert namespace["BEST_EDGE_WEIGHTS"] == [[], [], [], [], [[1.0 - 1e-6, 0.25]]]


def test_comparison_table():
  comparison = {"command": "python -m official.search x", "metric": "map", "algorithms": {
      "evolution": {"trials": 8, "best_fitness": 0.5, "best_trial": 6, "mean_fitness": 0.41},
      "random": {"trials": 8, "best_fitness": None, "best_trial": None,
                 "mean_fitness": None}},
      "retrain": {"results": {"evolution": {"fitness": 0.61}, "demo_asnp": {"fitness": 0.6}}}}
  assert run.comparison_table(comparison).splitlines() == [
      "| algorithm | trials | best held-out map (trial) | mean map | retrained map |",
      "|---|---:|---:|---:|---:|",
      "| evolution | 8 | 0.500 (6) | 0.410 | 0.610 |",
      "| random | 8 | - | - | - |",
      "| demo_asnp (reference, not searched) | - | - | - | 0.600 |",
      "",
      "Command: `python -m official.search x`"]


def test_gin_include_path():
  assert outputs.gin_include_path(outputs.ROOT + "/gin/a.gin") == "gin/a.gin"
  assert outputs.gin_include_path("/elsewhere/a.gin") == "/elsewhere/a.gin"


def test_a_search_space_depth_other_than_the_models_is_refused():
  # Before: build_search_space.depth was recorded in the search's header and genomes, but
  # every trial built build_model.depth: changing only the space's depth searched depth-26
  # networks without a word.
  import gin  # pylint: disable=g-import-not-at-top
  from official.search import run  # pylint: disable=g-import-not-at-top
  gin_file = os.path.join(run.ROOT, "gin", "experiments", "search_synthetic.gin")
  try:
    assert run.parse_experiment([gin_file], []).depth == 26
    with pytest.raises(ValueError, match=r"build_search_space.depth = 50, .* "
                       r"build_model.depth = 26"):
      run.parse_experiment([gin_file], ["build_search_space.depth = 50"])
  finally:
    gin.clear_config()


def test_a_depth_bound_through_a_macro_is_resolved_before_the_comparison():
  # Before: query_parameter returned the unevaluated %DEPTH, which never equals an int.
  from official.search import run  # pylint: disable=g-import-not-at-top
  gin_file = os.path.join(run.ROOT, "gin", "experiments", "search_synthetic.gin")
  try:
    space = run.parse_experiment([gin_file], [
        "DEPTH = 50", "build_model.depth = %DEPTH", "build_search_space.depth = %DEPTH"])
    assert space.depth == 50
  finally:
    gin.clear_config()
