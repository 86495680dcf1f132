"""`python -m official.search` end to end on Ray (local, 2 CPUs, small object store): a tiny
evolution writes its best structure as Python literals, a gin file that `official.train`
parses and builds, the network picture and the trial log; a search killed (SIGKILL of the
driver and every Ray process under it) after its first finished trial resumes without
running that trial again."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import gin
import pytest
import tensorflow as tf

from official import gin_flags
from official.modeling import assemblenet
from official.modeling import builders
from official.modeling import structures
from official.search import genome as genome_lib
from official.search import run
from official.search import searchers
from official.search import trial as trial_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILE = os.path.join(ROOT, "gin", "experiments", "search_synthetic.gin")
# RGB + object stems, one node per level, a few steps on 16 / 8 videos, no XLA.
TINY = [
    "build_search_space.stem_types = (-1, -3)",
    "build_search_space.nodes_per_level = (1, 1, 1, 1)",
    "build_search_space.level_filters = (4, 4, 8, 8)",
    "prepare_synthetic_charades.num_train = 16",
    "prepare_synthetic_charades.num_test = 8",
    "Experiment.jit_compile = False",
    "Experiment.train_batch_size = 4",
    "Experiment.eval_batch_size = 8",
    "Experiment.log_interval = 2",
]


@pytest.fixture
def local_ray():
  import ray  # pylint: disable=g-import-not-at-top
  yield
  if ray.is_initialized():
    ray.shutdown()
  gin.clear_config()


def _image_std(path):
  return float(tf.io.decode_png(tf.io.read_file(path)).numpy().std())


@pytest.mark.slow
def test_tiny_evolution_writes_the_best_structure(tmp_path, local_ray):
  out = str(tmp_path / "search")
  log = run.run_search("evolution", out, [GIN_FILE], TINY, trials=3, population=2,
                       sample=2, proxy_steps=2, num_cpus=2, command="test")
  saved = json.loads((tmp_path / "search" / "trials.json").read_text())
  records = saved["trials"]
  assert [r["index"] for r in records] == [0, 1, 2]
  assert [r["origin"] for r in records] == ["random", "random", "mutation"]
  assert records[2]["parent"] in (0, 1) and records[2]["mutation"][0][0] in (
      "guided", "forced_flip")
  for record in records:
    assert 0.0 <= record["fitness"] <= 1.0 and record["metric"] == "map"
    assert record["steps"] == 2
    # The learned weights fit the trained (pruned) network and are post-sigmoid values.
    structures.Structure.from_list(record["pruned_structure"], record["edge_weights"])
  best = log.best()
  assert best["fitness"] == max(r["fitness"] for r in records)

  namespace = {}
  exec((tmp_path / "search" / "best_structure.py").read_text(), namespace)  # pylint: disable=exec-used
  assert namespace["BEST_STRUCTURE"] == best["pruned_structure"]
  assert namespace["BEST_GENOME"] == best["structure"]
  found = structures.Structure.from_list(namespace["BEST_STRUCTURE"],
                                         namespace["BEST_EDGE_WEIGHTS"])
  assert json.loads((tmp_path / "search" / "best_edge_weights.json").read_text()) == (
      namespace["BEST_EDGE_WEIGHTS"])

  # best.gin: what `python -m official.train --gin_file=best.gin` parses and builds.
  gin.clear_config()
  gin_flags.parse_gin([os.path.join(out, "best.gin")], [])
  model = builders.build_model()
  assert model.structure.to_list() == found.to_list()
  assert assemblenet.uses_objects(model) == found.has_stem(structures.OBJECT)
  assert gin.query_parameter("%SEARCHED_EDGE_WEIGHTS") == namespace["BEST_EDGE_WEIGHTS"]
  assert gin.query_parameter("prepare_synthetic_charades.num_train") == 16
  assert gin.query_parameter("build_model.edge_weights") is None
  gin.clear_config()

  for name in ("best_network.png", "best_fitness.png"):
    assert _image_std(os.path.join(out, name)) > 10
  graph = json.loads((tmp_path / "search" / "best_network.json").read_text())
  assert graph["weights"] == "searched"


def _command(out):
  return [sys.executable, "-m", "official.search", "--algorithm=evolution", "--trials=3",
          "--population=2", "--sample=2", "--proxy_steps=2", f"--gin_file={GIN_FILE}",
          f"--out={out}"] + [f"--gin_param={b}" for b in TINY]


def _kill_tree(process):
  """SIGKILLs the driver and every process under it (Ray's GCS, raylet, workers)."""
  import psutil  # pylint: disable=g-import-not-at-top
  parent = psutil.Process(process.pid)
  tree = parent.children(recursive=True) + [parent]
  for member in tree:
    try:
      member.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
      pass
  _, alive = psutil.wait_procs(tree, timeout=30)
  assert not alive, alive
  process.wait(timeout=30)


@pytest.mark.slow
def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
  out = str(tmp_path / "search")
  log_path = os.path.join(out, searchers.LOG_FILE)
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  with open(tmp_path / "first.log", "w") as first_log:
    process = subprocess.Popen(_command(out), cwd=ROOT, env=env, stdout=first_log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    records = []
    while time.monotonic() < deadline and process.poll() is None:
      if os.path.exists(log_path):
        with open(log_path) as f:
          records = json.load(f)["trials"]
        if records:
          break
      time.sleep(0.5)
    assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    _kill_tree(process)
  assert len(records) == 1
  with open(log_path) as f:
    killed = json.load(f)["trials"]
  assert len(killed) in (1, 2)  # a second trial may have finished before the kill landed
  first = killed[0]
  first_metrics = os.path.join(first["model_dir"], "eval", "metrics.json")
  mtime = os.path.getmtime(first_metrics)

  resumed = subprocess.run(_command(out), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=900, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming {out}: {len(killed)} trial(s) finished" in resumed.stderr
  with open(log_path) as f:
    final = json.load(f)["trials"]
  assert sorted(r["index"] for r in final) == [0, 1, 2]
  assert final[:len(killed)] == killed  # finished trials kept, not run again
  assert os.path.getmtime(first_metrics) == mtime
  # Two Tune experiments: the killed one and the resumed one.
  assert sorted(os.listdir(os.path.join(out, "ray"))) == [
      "search_0000", f"search_{len(killed):04d}"]
  assert os.path.exists(os.path.join(out, "best_structure.py"))


@pytest.mark.slow
def test_comparison_retrains_the_best_and_the_reference(tmp_path, local_ray):
  out = str(tmp_path / "compare")
  comparison = run.run_all(["random"], out, [GIN_FILE], TINY + ["Experiment.train_steps = 2"],
                           retrain_best=True, command="test", trials=1, proxy_steps=1)
  entry = comparison["algorithms"]["random"]
  assert entry["trials"] == 1 and entry["best_trial"] == 0
  retrained = comparison["retrain"]["results"]
  assert sorted(retrained) == ["demo_asnp", "random"]
  assert retrained["random"]["structure"] == entry["best_structure"]
  assert retrained["demo_asnp"]["structure"] == structures.DEMO_ASNP.to_list()
  for result in retrained.values():
    assert result["step"] == 2 and 0.0 <= result["fitness"] <= 1.0
  # The retraining read a dataset of another seed, prepared apart from the search's.
  with open(os.path.join(out, run.RETRAIN_DIR, "synthetic_data", "PREPARED")) as f:
    assert json.load(f)["seed"] == 1
  table = (tmp_path / "compare" / "comparison.md").read_text()
  assert f"| random | 1 | {entry['best_fitness']:.3f} (0) |" in table
  assert "| demo_asnp (reference, not searched) |" in table
  assert _image_std(os.path.join(out, "best_fitness.png")) > 10


def _fake_tune(outcomes):
  """A stand-in for `run._tune` that completes one trial per entry of `outcomes` (a fitness,
  or None for a failed trial) and returns, as Tune does after Ctrl-C when trials remain."""
  def fake(searcher, *unused_args):
    for k, fitness in enumerate(outcomes):
      config = searcher.suggest(f"t{k}")
      if fitness is None:
        searcher.on_trial_complete(f"t{k}", error=True)
        continue
      structure = structures.Structure.from_list(config["structure"])
      pruned, _ = genome_lib.remove_dead_nodes(structure)
      weights = genome_lib.edges_to_weights(pruned, {e: 0.6 for e in genome_lib.edges(pruned)})
      searcher.on_trial_complete(f"t{k}", {
          "fitness": fitness, "metric": "map", "seconds": 1.0, "steps": 2,
          "model_dir": "/x", "index": config["index"],
          "result_json": json.dumps({"metrics": {"map": fitness}, "edge_weights": weights,
                                     "peers": [], "pruned_structure": pruned.to_list()})})
  return fake


def test_an_interrupted_search_stops_the_command_and_all_failed_is_not_success(
    tmp_path, monkeypatch):
  # Before: Tune returns normally after Ctrl-C, so an interrupted search wrote its best
  # files as if finished, exited 0, and a comparison went on to the next algorithm. And a
  # search whose every trial failed exited 0 too ("best: none").
  monkeypatch.setattr(run, "init_ray", lambda *args: None)
  monkeypatch.setattr(run, "_tune", _fake_tune([0.3]))
  with pytest.raises(run.SearchIncomplete, match=r"1 of 3 trials .* rerun the same command"):
    run.run_search("random", str(tmp_path / "a"), [GIN_FILE], TINY, trials=3,
                   data_dir=str(tmp_path))
  assert not (tmp_path / "a" / "best.gin").exists()
  monkeypatch.setattr(run, "_tune", _fake_tune([None, None]))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # The chart of no successful trial has no legend.
    log = run.run_search("random", str(tmp_path / "b"), [GIN_FILE], TINY, trials=2,
                         data_dir=str(tmp_path))
  assert log.best() is None and run.exit_status([log.best()]) == 1
  gin.clear_config()


def test_retrain_result_reads_the_held_out_evaluation_of_that_very_network(tmp_path):
  # Before: the retrained number was always eval/metrics.json, the split the best
  # checkpoint was chosen on, not final_eval/ (the held-out evaluation of experiments with
  # Experiment.final_eval_split); a folder holding another run (retrain folders are
  # numbered by position, so an extended search put its new best in the old best's folder;
  # or an earlier retraining on another data seed, with this one interrupted) gave that
  # run's number; a failed retraining crashed the comparison.
  structure = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 4, 1, 2, 0],
               [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]
  record = trial_lib.trial_record(structure, [GIN_FILE], ["prepare_synthetic_charades.seed = 1"],
                                  None, 0, None, "/data")
  folder = tmp_path / "trial_0000"
  (folder / "eval").mkdir(parents=True)
  (folder / "eval" / "metrics.json").write_text(json.dumps({"map": 0.53, "step": 4}))
  (folder / trial_lib.TRIAL_RECORD).write_text(json.dumps(record))
  result = lambda structure, record, final=False: run.retrain_result(
      str(folder), structure, record, 4, final)
  assert result(structure, record)["metrics"]["map"] == 0.53
  assert result(structure, record, final=True)["metrics"] is None  # Its final one is due.
  assert run.retrain_result(str(folder), structure, record, 8, False)["metrics"] is None
  (folder / "final_eval").mkdir()
  (folder / "final_eval" / "metrics.json").write_text(json.dumps({"map": 0.51, "step": 4}))
  assert result(structure, record)["metrics"]["map"] == 0.51
  other = [list(node) for node in structure]
  other[3][3] = 2  # Another network (a dilation differs): the folder's number is not its.
  other_record = dict(record, structure=other)
  assert result(other, other_record) == {
      "metrics": None, "model_dir": str(folder), "structure": other,
      "error": f"{folder} holds no finished run of this retraining (it failed or did not "
               "run: see Ray's log)"}
  other_data = dict(record, gin_bindings=["prepare_synthetic_charades.seed = 2"])
  assert result(structure, other_data)["metrics"] is None
  assert run.retrain_result(str(tmp_path / "absent"), structure, record, 4,
                            False)["metrics"] is None


@pytest.mark.slow
def test_a_trial_folder_of_another_network_is_set_aside_not_resumed(tmp_path):
  # Before: trial folders are numbered, and a resumed asynchronous search (or an extended
  # retrain) could put another genome into a folder holding a finished run: a
  # CheckpointError (a failed trial), or with equal variable shapes (a dilation changed)
  # the old run's fitness and weights reported for the new genome.
  data_dir = run.prepare_data([GIN_FILE], TINY, str(tmp_path))
  first = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 4, 1, 2, 0],
           [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]
  second = [list(node) for node in first]
  second[3][3] = 2  # Only a temporal dilation differs: the same variable shapes.
  folder = str(tmp_path / "trials" / "trial_0000")
  kwargs = dict(gin_files=[GIN_FILE], gin_bindings=TINY, model_dir=folder, steps=2,
                data_dir=data_dir)
  trial_lib.train_genome(first, **kwargs)
  result = trial_lib.train_genome(second, **kwargs)
  assert result["pruned_structure"][3][3] == 2 and result["steps"] == 2
  aside = [name for name in os.listdir(tmp_path / "trials") if name != "trial_0000"]
  assert aside == ["trial_0000.replaced"]
  record = json.loads((tmp_path / "trials" / "trial_0000" /
                       trial_lib.TRIAL_RECORD).read_text())
  assert record["structure"] == second
  # The same genome again resumes its own finished run: nothing is set aside.
  again = trial_lib.train_genome(second, **kwargs)
  assert again["fitness"] == result["fitness"] and len(os.listdir(tmp_path / "trials")) == 2
  gin.clear_config()


def test_a_search_resumed_through_a_symlink_is_the_same_search(tmp_path, monkeypatch):
  # Before: `out` was made absolute but not resolved, so a trial's record (its out and
  # data paths) differed when the same folder was reached through a link, and every
  # trial folder was set aside and trained again from scratch.
  (tmp_path / "real").mkdir()
  os.symlink(tmp_path / "real", tmp_path / "link")
  seen = []

  def recording_tune(searcher, *unused_args):
    seen.append(dict(searcher.setup))
    _fake_tune([0.3])(searcher)
  monkeypatch.setattr(run, "init_ray", lambda *args: None)
  monkeypatch.setattr(run, "_tune", recording_tune)
  run.run_search("random", str(tmp_path / "link" / "s"), [GIN_FILE], TINY, trials=1,
                 data_dir=str(tmp_path / "link" / "data"))
  assert seen[0]["out"] == str(tmp_path / "real" / "s")
  assert seen[0]["data_dir"] == str(tmp_path / "real" / "data")
  gin.clear_config()


def test_an_interrupted_retraining_stops_the_command(tmp_path, monkeypatch):
  # Before: retrain() had no check that Tune ran every network: after Ctrl-C the command
  # rewrote comparison.json/md with "failed" rows (or an earlier retraining's numbers) and
  # exited 0.
  class _Result:  # What Tune's ResultGrid holds for a trial that never reported.
    error, metrics = None, {}
  monkeypatch.setattr(run, "init_ray", lambda *args: None)
  monkeypatch.setattr(run, "_tune", lambda *args: [_Result()])
  structure = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 4, 1, 2, 0],
               [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]
  with pytest.raises(run.SearchIncomplete, match=r"1 of 1 networks unfinished"):
    run.retrain(str(tmp_path), [("random", structure)], [GIN_FILE], TINY)
  assert run.exit_status([0.4, None]) == 1  # A failed retraining is no result.
  gin.clear_config()
