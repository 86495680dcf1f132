"""Protocol hygiene (Toyota Smarthome): the best checkpoint is selected on the validation
split and the test split is evaluated once, at the end, apart from the selection."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")
# tiny_smoke has train/test only: a slice of train stands in for a validation split.
BINDINGS = ["Experiment.train_steps = 4", "Experiment.eval_interval = 2",
            "Experiment.checkpoint_interval = 2", "Experiment.eval_split = 'train[:4]'",
            "Experiment.final_eval_split = 'test'", "Experiment.views_per_video = None"]


def _train(model_dir, *bindings):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  args = [sys.executable, "-m", "official.train", "--mode=train_and_eval",
          f"--model_dir={model_dir}", f"--gin_file={GIN}"]
  args += [f"--gin_param={b}" for b in BINDINGS + list(bindings)]
  return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def _records(directory):
  history = directory / "history"
  return {p.name: json.loads(p.read_text()) for p in sorted(history.iterdir())}


@pytest.mark.slow
def test_best_is_chosen_on_validation_and_test_is_evaluated_once_apart(tmp_path):
  model_dir = tmp_path / "run"
  out = _train(model_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  selection = _records(model_dir / "eval")
  assert len(selection) == 2  # steps 2 and 4
  assert {r["view_protocol"]["split"] for r in selection.values()} == {"train[:4]"}
  assert {r["num_videos"] for r in selection.values()} == {4}
  best = json.loads((model_dir / "best" / "best.json").read_text())
  by_step = {r["step"]: r for r in selection.values()}
  assert best["value"] == max(r["map"] for r in by_step.values())
  assert best["value"] == by_step[best["step"]]["map"]
  final = json.loads((model_dir / "final_eval" / "metrics.json").read_text())
  assert final["view_protocol"]["split"] == "test" and final["num_videos"] == 8
  assert final["step"] == best["step"] and final["selected_on"] == "train[:4]"
  assert len(_records(model_dir / "final_eval")) == 1
  assert f"Final evaluation (best checkpoint of step {best['step']}, chosen on 'train[:4]', " \
         "evaluated on 'test' 1 time(s))" in out.stdout
  # The test split never reached the selection: no test record under eval/.
  assert all(r["view_protocol"]["split"] != "test" for r in selection.values())
  # Rerun after the end: nothing trained, and test is not evaluated a second time.
  again = _train(model_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "already evaluated once" in again.stderr
  assert len(_records(model_dir / "final_eval")) == 1
  # Extended: a later best is evaluated on test too, and the count of looks is kept.
  longer = _train(model_dir, "Experiment.train_steps = 6")
  assert longer.returncode == 0, longer.stderr[-3000:]
  best = json.loads((model_dir / "best" / "best.json").read_text())
  final = json.loads((model_dir / "final_eval" / "metrics.json").read_text())
  looks = _records(model_dir / "final_eval")
  assert final["step"] == best["step"]
  assert final["held_out_evaluations"] == len(looks)
  assert len(looks) == (1 if best["step"] <= 4 else 2)
  assert ("has now been evaluated 2 times" in longer.stderr) == (len(looks) == 2)
  assert f"best checkpoint of step {best['step']}" in longer.stdout


@pytest.mark.slow
def test_a_final_split_the_dataset_lacks_fails_before_training(tmp_path):
  out = _train(tmp_path / "run", "Experiment.final_eval_split = 'validaton'")
  assert out.returncode == 2, out.stderr[-3000:]
  assert "final_eval_split = 'validaton' is not a split of charades/synthetic" in out.stderr
  assert not list((tmp_path / "run").glob("ckpt-*"))


def test_final_split_equal_to_the_selection_split_is_refused():
  from official import errors  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  args = dict(model_fn=None, input_fn=None, train_batch_size=1, eval_batch_size=1,
              train_steps=1, eval_split="test")
  with pytest.raises(errors.ConfigError, match="selects the best checkpoint"):
    experiment.Experiment(final_eval_split="test", **args)
  with pytest.raises(errors.ConfigError, match="must be a split name"):
    experiment.Experiment(final_eval_split="", **args)


@pytest.mark.slow
def test_continuous_evaluation_prepares_no_data_before_a_checkpoint(tmp_path):
  # The training job beside it prepares the data; preparing it here too, at start, would
  # race with that job (the check of final_eval_split read the dataset's splits).
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  model_dir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=continuous_eval",
       f"--model_dir={model_dir}", f"--gin_file={GIN}", "--eval_timeout=1"] +
      [f"--gin_param={b}" for b in BINDINGS], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert not (model_dir / "synthetic_data").exists()
