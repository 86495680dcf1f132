"""Issue 13: the accidents of real multi-day runs, through the command line on
`gin/experiments/tiny_smoke.gin` — a run killed before its final evaluation, a lost checkpoint
state file, a damaged checkpoint, two runs on one model_dir, a NaN stop, bad configuration —
each either recovered from or refused with one `error:` line naming the input and the way out.

One finished tiny run is shared (module fixture); each test works on a copy of it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  return env


def _cli(*args, module="official.train", cwd=ROOT):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=300, check=False)


def _train(model_dir, *args, mode="train_and_eval"):
  return _cli(f"--mode={mode}", f"--model_dir={model_dir}", f"--gin_file={GIN}", *args)


def _error_lines(out):
  return [line for line in out.stderr.splitlines() if line.startswith("error:")]


def _one_error(out, returncode=1):
  assert out.returncode == returncode, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = _error_lines(out)
  assert len(errors) == 1, out.stderr[-3000:]
  return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("finished") / "run"
  out = _train(model_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  return model_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(finished_run, copy)
  return copy


def _data_bindings(finished_run):
  # Reuse the fixture's prepared synthetic data instead of generating it again.
  return [f"--gin_param=prepare_synthetic_charades.data_dir='{finished_run}/synthetic_data'"]


# Fault 1 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_final_evaluation_lost_to_a_kill_is_run_on_resume(run_copy):
  # Killed after the last checkpoint, before the final evaluation wrote anything.
  shutil.rmtree(run_copy / "eval")
  shutil.rmtree(run_copy / "best")
  out = _train(run_copy)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((run_copy / "eval" / "metrics.json").read_text())
  assert metrics["step"] == 12 and 0.0 < metrics["map"] <= 1.0
  assert len((run_copy / "eval" / "charades_submission.txt").read_text().splitlines()) == 8
  best = json.loads((run_copy / "best" / "best.json").read_text())
  assert (best["step"], best["value"]) == (12, metrics["map"])
  history = json.loads((run_copy / "eval" / "history" / "metrics-12.json").read_text())
  assert history["map"] == metrics["map"]
  # Once written, a rerun does not evaluate again.
  again = _train(run_copy)
  assert again.returncode == 0 and "Evaluation at step 12" not in again.stderr


@pytest.mark.slow
def test_interrupted_interval_evaluation_is_run_on_resume(run_copy):
  # Killed during the evaluation at step 6 (eval_interval=6): ckpt-6 is the latest.
  _rollback_to_ckpt_6(run_copy)
  shutil.rmtree(run_copy / "eval")
  shutil.rmtree(run_copy / "best")
  out = _train(run_copy, "--gin_param=Experiment.eval_interval=6")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Evaluation at step 6:" in out.stderr and "Evaluation at step 12:" in out.stderr
  steps = {json.loads((run_copy / "eval" / "history" / name).read_text())["step"]
           for name in os.listdir(run_copy / "eval" / "history")}
  assert steps == {6, 12}


# Fault 6 -------------------------------------------------------------------------------


def _rollback_to_ckpt_6(model_dir):
  for name in os.listdir(model_dir):
    if name.startswith("ckpt-12."):
      os.remove(model_dir / name)
  (model_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-6"\n'
                                        'all_model_checkpoint_paths: "ckpt-6"\n')


@pytest.mark.slow
def test_resumed_run_trains_on_the_uninterrupted_batches(finished_run, tmp_path):
  # Through the command line (Runner -> Trainer -> build_dataset(start_batch=6)): a run
  # resumed at step 6 ends with exactly the weights of the uninterrupted run.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  args = (*_data_bindings(finished_run), "--gin_param=Experiment.deterministic=True")
  whole = tmp_path / "whole"
  out = _train(whole, *args, mode="train")
  assert out.returncode == 0, out.stderr[-3000:]
  resumed = tmp_path / "resumed"
  shutil.copytree(whole, resumed)
  _rollback_to_ckpt_6(resumed)
  out = _train(resumed, *args, mode="train")
  assert out.returncode == 0 and "at step 6" in out.stderr, out.stderr[-3000:]
  a = tf.train.load_checkpoint(str(whole / "ckpt-12"))
  b = tf.train.load_checkpoint(str(resumed / "ckpt-12"))
  keys = [k for k in a.get_variable_to_shape_map() if k.startswith("model_variables/")]
  assert len(keys) > 20
  for key in keys:
    np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)


# Fault 2 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_lost_state_file_resumes_instead_of_restarting(run_copy):
  # A state file cut short or empty: official/training/checkpointing_test.py.
  (run_copy / "checkpoint").unlink()
  before = {name: (run_copy / name).read_bytes() for name in os.listdir(run_copy)
            if name.startswith("ckpt-")}
  out = _train(run_copy, mode="train")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "training starts at step 0" not in out.stderr
  assert "recovered" in out.stderr and "ckpt-12" in out.stderr
  after = {name: (run_copy / name).read_bytes() for name in os.listdir(run_copy)
           if name.startswith("ckpt-")}
  assert after == before  # Nothing overwritten.
  out = _train(run_copy, mode="eval")
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((run_copy / "eval" / "metrics.json").read_text())["step"] == 12


# Fault 4 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_second_run_on_a_locked_model_dir_is_refused(run_copy):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    (run_copy / "train.lock").write_text(json.dumps(
        {"pid": holder.pid, "host": socket.gethostname(), "mode": "train_and_eval"}))
    config = (run_copy / "config.gin").read_text()
    error = _one_error(_train(run_copy))
    assert f"model_dir {run_copy} is in use by another run" in error
    assert f"pid {holder.pid} on {socket.gethostname()}" in error
    assert (run_copy / "config.gin").read_text() == config  # Nothing of the first touched.
  finally:
    holder.kill()
    holder.wait()
  # The holder is gone: its lock is stale and taken over, with a warning.
  out = _train(run_copy, mode="train")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "stale lock" in out.stderr
  assert not (run_copy / "train.lock").exists()  # Released at the end.


# Fault 5 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_damaged_checkpoint_is_one_error_naming_it_and_the_way_out(run_copy):
  data = run_copy / "ckpt-12.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  for mode in ("eval", "train", "export"):
    error = _one_error(_train(run_copy, mode=mode))
    assert error.startswith(f"error: Checkpoint {run_copy / 'ckpt-12'} is damaged"), error
    assert f"--checkpoint={run_copy / 'ckpt-6'}" in error
    assert "move the ckpt-12.* files out of" in error
  out = _train(run_copy, f"--checkpoint={run_copy / 'ckpt-6'}", mode="eval")
  assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_nan_stop_is_one_error_and_leaves_only_finite_checkpoints(finished_run, tmp_path):
  model_dir = tmp_path / "nan"
  error = _one_error(_train(model_dir, *_data_bindings(finished_run),
                            "--gin_param=BASE_LEARNING_RATE=1e4",
                            "--gin_param=Experiment.checkpoint_interval=1", mode="train"))
  assert "training stopped" in error and "lower the learning rate" in error
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for name in os.listdir(model_dir):
    if name.endswith(".index"):
      reader = tf.train.load_checkpoint(str(model_dir / name[:-len(".index")]))
      for key in reader.get_variable_to_shape_map():
        value = np.asarray(reader.get_tensor(key))
        if np.issubdtype(value.dtype, np.floating):
          assert np.all(np.isfinite(value)), (name, key)


@pytest.mark.slow
def test_gin_value_of_the_wrong_type_names_the_binding(tmp_path):
  error = _one_error(_train(tmp_path, "--gin_param=Experiment.train_steps='three'"), 2)
  assert "Experiment.train_steps" in error and "'three'" in error
  error = _one_error(_train(tmp_path, "--gin_param=VideoInput.num_frames=4.5"), 2)
  assert "VideoInput.num_frames" in error and "4.5" in error



@pytest.mark.slow
@pytest.mark.parametrize("binding,where", [
    ("VideoInput.seed = 3", "--seed flag"),
    ("VideoInput.batch_size = 3", "Experiment.train_batch_size"),
    ("VideoInput.deterministic = True", "Experiment.deterministic"),
    ("VideoInput.use_objects = True", "object stem"),
    ("VideoInput.split = 'test'", "Experiment.train_split"),
])
def test_binding_an_argument_the_runner_sets_is_a_parse_error(tmp_path, binding, where):
  # Before: build_dataset.seed / batch_size / deterministic / use_objects were bindable and
  # silently replaced by the runner's values, while operative_config.gin showed them.
  out = _train(tmp_path / "run", f"--gin_param={binding}")
  error = _one_error(out, 2)
  name = binding.split(" = ")[0]
  assert f"{name} cannot be bound: the runner sets it from" in error and where in error
  assert "Strategy" not in out.stderr  # Nothing was built.
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_class_count_disagreeing_with_the_dataset_is_named(finished_run, tmp_path):
  error = _one_error(_train(tmp_path, *_data_bindings(finished_run),
                            "--gin_param=NUM_CLASSES=5", mode="train"), 2)
  assert "5 classes" in error and "12" in error and "charades/synthetic" in error


# Fault 7 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_or_unprepared_data_dir_is_checked_first(tmp_path):
  no_prepare = "--gin_param=Experiment.prepare_data_fn=None"
  missing = tmp_path / "missing"
  error = _one_error(_train(tmp_path / "run", no_prepare,
                            f"--gin_param=VideoInput.data_dir='{missing}'"))
  assert f"data_dir {missing} does not exist" in error
  assert "python -m data_prep.prepare --dataset=charades/synthetic" in error
  assert "download_and_prepare" not in error
  empty = tmp_path / "empty"
  empty.mkdir()
  out = _train(tmp_path / "run", no_prepare, f"--gin_param=VideoInput.data_dir='{empty}'")
  error = _one_error(out)
  assert f"data_dir {empty} holds no prepared charades/synthetic" in error
  assert "python -m data_prep.prepare --dataset=charades/synthetic" in error
  assert "Building model" not in out.stderr and "Strategy" not in out.stderr


# Fault 8 -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("module", ["official.train", "official.tools.model_info",
                                    "official.demo"])
def test_help_lists_the_gin_flags(module):
  out = _cli("--help", module=module)
  # The flag listing ("  --gin_file: ..."), not a usage example in the module docstring.
  assert "\n  --gin_file: " in out.stdout and "\n  --gin_param: " in out.stdout, out.stdout


@pytest.mark.slow
def test_gin_includes_resolve_from_any_directory(tmp_path):
  out = _cli("--mode=train", f"--model_dir={tmp_path / 'run'}", f"--gin_file={GIN}",
             "--gin_param=Experiment.train_steps='three'", cwd=str(tmp_path))
  # Past the includes (gin/base/train.gin, ...): the error is the bad value, not a file.
  error = _one_error(out, 2)
  assert "Experiment.train_steps" in error and "include" not in error


# Evaluation as Model Garden / PySlowFast users expect it ----------------------------------


def _scalars(event_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for name in os.listdir(event_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
        for value in event.summary.value:
          values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return values


@pytest.mark.slow
def test_eval_mode_keeps_a_history_tensorboard_progress_and_says_where(run_copy):
  shutil.rmtree(run_copy / "eval")
  shutil.rmtree(run_copy / "best")
  out = _train(run_copy, f"--checkpoint={run_copy / 'ckpt-6'}", mode="eval")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Evaluation: 16/16 views (8/8 videos)" in out.stderr  # tiny_smoke: 8 videos x 2.
  out = _train(run_copy, mode="eval")
  assert out.returncode == 0, out.stderr[-3000:]
  history = run_copy / "eval" / "history"
  records = {step: json.loads((history / f"metrics-{step}.json").read_text())
             for step in (6, 12)}
  assert records[6]["checkpoint"] == str(run_copy / "ckpt-6")
  latest = json.loads((run_copy / "eval" / "metrics.json").read_text())
  assert latest["step"] == 12 and latest["map"] == records[12]["map"]
  scalars = _scalars(run_copy / "eval")
  assert scalars[("map", 6)] == pytest.approx(records[6]["map"])
  assert scalars[("map", 12)] == pytest.approx(records[12]["map"])
  assert f"Metrics: {run_copy / 'eval' / 'metrics.json'} (latest)" in out.stdout
  assert f"Charades submission file: {run_copy / 'eval' / 'charades_submission.txt'}" \
      in out.stdout
  # Resuming train_and_eval takes these records as its evaluations (nothing is evaluated
  # again) and takes their best step into best/ (before: best/ stayed empty).
  out = _train(run_copy)
  assert out.returncode == 0 and "Evaluation at step" not in out.stderr, out.stderr[-3000:]
  best_step = max((6, 12), key=lambda step: (records[step]["map"], -step))
  best = json.loads((run_copy / "best" / "best.json").read_text())
  assert (best["step"], best["value"]) == (best_step, records[best_step]["map"])
  assert (run_copy / "best" / f"best-{best_step}.index").exists()


@pytest.mark.slow
def test_continuous_eval_evaluates_each_checkpoint_once_then_stops(run_copy):
  shutil.rmtree(run_copy / "eval")
  shutil.rmtree(run_copy / "best")
  # An empty state file (before: no checkpoint listed, "Evaluated steps: []" after the
  # timeout): the ckpt-N files are watched instead.
  (run_copy / "checkpoint").write_text("")
  # As if training had written a checkpoint every 3 steps, deleting ckpt-9 before a poll
  # saw it (before: nothing said so; "skipped ...: []"). ckpt-3, deleted before this job
  # started watching, is not its to report.
  out = _train(run_copy, "--eval_timeout=60", "--gin_param=Experiment.checkpoint_interval=3",
               mode="continuous_eval")
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(os.listdir(run_copy / "eval" / "history")) == ["metrics-12.json",
                                                                "metrics-6.json"]
  assert "Evaluated steps: [6, 12]" in out.stdout
  assert "missed (written and deleted between polls): [9]" in out.stdout
  assert "1 checkpoint(s) (steps [9]) were written and deleted" in out.stderr
  assert json.loads((run_copy / "best" / "best.json").read_text())["step"] in (6, 12)
  # Everything is evaluated and the final step reached: a rerun stops at once.
  out = _train(run_copy, "--eval_timeout=60", mode="continuous_eval")
  assert out.returncode == 0 and "Evaluated steps: []" in out.stdout


_PRUNE_DURING_CHECKS = """
import glob, os, sys
from absl import app
from official import train
from official.training import experiment
model_dir, oldest = sys.argv[1], sys.argv[2]
checks = experiment.Runner.check_num_classes
def pruning_checks(self):
  # What the training job's max_to_keep does on its next save, while this job checks the
  # data (which may prepare it: seconds to minutes) before its first evaluation.
  for path in glob.glob(os.path.join(model_dir, oldest + ".*")):
    os.remove(path)
  return checks(self)
experiment.Runner.check_num_classes = pruning_checks
sys.argv = [sys.argv[0]] + sys.argv[3:]
app.run(train.main)
"""


@pytest.mark.slow
def test_continuous_eval_skips_a_checkpoint_deleted_while_it_starts(run_copy, finished_run):
  # Before: "error: --checkpoint=.../ckpt-N is not a checkpoint" (no such flag was given)
  # and exit status 1: the FileNotFoundError of a pruned checkpoint was not counted as a
  # skip, and the later checkpoints were never evaluated.
  shutil.rmtree(run_copy / "eval")
  shutil.rmtree(run_copy / "best")
  steps = sorted(int(name[len("ckpt-"):-len(".index")]) for name in os.listdir(run_copy)
                 if name.startswith("ckpt-") and name.endswith(".index"))
  assert len(steps) >= 2, steps
  out = subprocess.run(
      [sys.executable, "-c", _PRUNE_DURING_CHECKS, str(run_copy), f"ckpt-{steps[0]}",
       "--mode=continuous_eval", f"--model_dir={run_copy}", f"--gin_file={GIN}",
       "--eval_timeout=5", *_data_bindings(finished_run)],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"Evaluated steps: {steps[1:]}" in out.stdout, out.stdout + out.stderr[-3000:]
  assert f"ckpt-{steps[0]} was deleted (max_to_keep) before it was evaluated" in out.stderr


@pytest.mark.slow
def test_continuous_eval_prepares_no_data_before_a_checkpoint_exists(tmp_path):
  # Before: started beside a training job on a fresh model_dir, it generated the synthetic
  # data too, and the training job died in data_prep.prepare ("Another preparation ... is
  # running", a traceback). Now it leaves the preparation to the training job.
  out = _train(tmp_path, "--eval_timeout=1", mode="continuous_eval")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Evaluated steps: []" in out.stdout
  assert not (tmp_path / "synthetic_data").exists()


@pytest.mark.slow
def test_resume_with_another_config_keeps_the_earlier_one_and_warns(run_copy):
  # Before: config.gin was silently overwritten, and a train_steps below the checkpoint's
  # step trained nothing without a word.
  earlier = (run_copy / "config.gin").read_text()
  out = _train(run_copy, "--gin_param=Experiment.train_steps=10", mode="train")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (run_copy / "config-12.gin").read_text() == earlier
  assert "Experiment.train_steps = 10" in (run_copy / "config.gin").read_text()
  assert "gin configuration differs from the one" in out.stderr
  assert "at step 12, beyond train_steps = 10" in out.stderr


@pytest.mark.slow
def test_a_failed_resume_with_another_config_does_not_rewrite_the_config_record(run_copy):
  # Before: the failed attempt (a model that does not match the checkpoint) had already
  # rewritten config.gin, and the next start with the original config filed that text as
  # config-12.gin, "the config trained with up to step 12", though it never trained.
  # Likewise flags.txt: a resume with another --seed (another data order) overwrote it
  # without a word.
  trained_with = (run_copy / "config.gin").read_text()
  flags_before = (run_copy / "flags.txt").read_text()
  other_model = ("--gin_param=build_model.structure=[[-1, 1], [-1, 1], [0, [0, 1], 16, 1, 1, 0], "
                 "[1, [2], 16, 1, 2, 0], [2, [2, 3], 16, 1, 2, 0], [3, [4], 32, 1, 2, 0]]")
  out = _train(run_copy, other_model, mode="train")
  assert out.returncode != 0 and "does not match the model" in out.stderr, out.stderr[-3000:]
  out = _train(run_copy, "--seed=1", mode="train")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (run_copy / "config-12.gin").read_text() == trained_with
  assert (run_copy / "config.gin").read_text() == trained_with
  assert (run_copy / "flags-12.txt").read_text() == flags_before
  assert "--seed=1" in (run_copy / "flags.txt").read_text()
  assert "--seed=1 differs from the --seed=0" in out.stderr, out.stderr[-3000:]


@pytest.mark.slow
def test_the_same_command_in_another_job_keeps_no_flags_copy(run_copy, tmp_path):
  # Before: flags.txt held every flag absl knows, --test_tmpdir (which follows $TMPDIR, set
  # per job on clusters) and --test_random_seed among them, so the same command resumed in
  # another batch job "changed its flags": a flags-<step>.txt and a warning every time.
  job_tmp = tmp_path / "job2"
  job_tmp.mkdir()
  out = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={run_copy}",
       f"--gin_file={GIN}", "--gin_param=Experiment.train_steps=14"],
      cwd=ROOT, env=dict(_env(), TMPDIR=str(job_tmp)), capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  out = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={run_copy}",
       f"--gin_file={GIN}", "--gin_param=Experiment.train_steps=14"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert not [name for name in os.listdir(run_copy) if name.startswith("flags-14")]
  assert "command-line flags differs" not in out.stderr
  flags_text = (run_copy / "flags.txt").read_text()
  assert "--test_tmpdir" not in flags_text and "--seed=0" in flags_text
  assert f"--model_dir={run_copy}" in flags_text


@pytest.mark.slow
def test_bad_class_names_are_one_error_line_at_export_and_before_training(run_copy):
  # Before: a repeated or blank name (or a wrong count) in Experiment.class_names ended
  # --mode=export in a traceback, after training, without naming where the names came from.
  names = [f"action {i}" for i in range(11)] + ["action 0"]
  bad = f"--gin_param=Experiment.class_names = {names!r}"
  error = _one_error(_train(run_copy, bad, mode="export"), returncode=2)
  assert "Experiment.class_names" in error and "'action 0' (classes 0 and 11)" in error
  before = sorted(os.listdir(run_copy))
  error = _one_error(_train(run_copy, bad, "--gin_param=Experiment.train_steps=14",
                            mode="train"), returncode=2)
  assert "Experiment.class_names" in error
  assert sorted(os.listdir(run_copy)) == before  # Refused before anything was written.


@pytest.mark.slow
def test_export_removes_the_staging_folder_of_a_killed_export(run_copy):
  # Before: every export killed mid-way left its `.staging_<version>` folder for good.
  (run_copy / "export" / ".staging_17" / "model").mkdir(parents=True)
  out = _train(run_copy, mode="export")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "left by an interrupted export" in out.stderr
  names = os.listdir(run_copy / "export")
  assert len(names) == 1 and names[0].isdigit(), names
