"""Checkpoints that cannot be trusted are recovered from or refused, never silently replaced:
the state file lost or cut short (issue 13, fault 2), a damaged data file (fault 5), non-finite
weights (fault 3), a full disk (fault 5)."""

import errno
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.training import checkpointing
from official.training import trainer as trainer_lib
from official.training import training_test


def _two_checkpoints(model_dir):
  """ckpt-6 (all 6.0) and ckpt-12 (all 12.0) of one variable, through a manager."""
  variable = tf.Variable(tf.zeros([64]))
  checkpoint = tf.train.Checkpoint(v=variable)
  manager = tf.train.CheckpointManager(checkpoint, str(model_dir), max_to_keep=3)
  for step in (6, 12):
    variable.assign(tf.fill([64], float(step)))
    manager.save(checkpoint_number=step)
  return checkpoint, variable


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage", ["deleted", "empty", "cut_short"])
def test_lost_state_file_recovers_latest_intact_checkpoint(tmp_path, damage):
  _two_checkpoints(tmp_path)
  state = tmp_path / "checkpoint"
  if damage == "deleted":
    state.unlink()
  elif damage == "empty":
    state.write_text("")
  else:
    state.write_text(state.read_text()[:25])
  latest = checkpointing.latest_checkpoint(str(tmp_path))
  assert latest == str(tmp_path / "ckpt-12")
  # The state file is rewritten, so TensorFlow's own lookup (and a CheckpointManager that
  # prunes old checkpoints) agrees again.
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-12")
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.zeros([64]))),
                                       str(tmp_path), max_to_keep=3)
  assert manager.checkpoints == [str(tmp_path / "ckpt-6"), str(tmp_path / "ckpt-12")]


def test_lost_state_file_skips_a_damaged_newest_checkpoint(tmp_path):
  _two_checkpoints(tmp_path)
  (tmp_path / "checkpoint").unlink()
  _truncate(tmp_path / "ckpt-12.data-00000-of-00001")
  assert checkpointing.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-6")


def test_no_intact_checkpoint_is_refused_naming_the_files(tmp_path):
  _two_checkpoints(tmp_path)
  (tmp_path / "checkpoint").unlink()
  for step in (6, 12):
    _truncate(tmp_path / f"ckpt-{step}.data-00000-of-00001")
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"ckpt-6, ckpt-12 .*none of them can be read"):
    checkpointing.latest_checkpoint(str(tmp_path))


def test_empty_model_dir_has_no_latest_checkpoint(tmp_path):
  assert checkpointing.latest_checkpoint(str(tmp_path)) is None
  assert checkpointing.latest_checkpoint(str(tmp_path / "not_yet")) is None


def test_damaged_checkpoint_error_names_it_and_the_way_out(tmp_path):
  checkpoint, _ = _two_checkpoints(tmp_path)
  _truncate(tmp_path / "ckpt-12.data-00000-of-00001")
  with pytest.raises(checkpointing.CheckpointError) as info:
    checkpointing.restore(checkpoint, str(tmp_path / "ckpt-12"), str(tmp_path))
  message = str(info.value)
  assert f"Checkpoint {tmp_path / 'ckpt-12'} is damaged" in message
  assert "Read less bytes than requested" in message
  assert f"--checkpoint={tmp_path / 'ckpt-6'}" in message
  assert "move the ckpt-12.* files out of" in message
  # The intact one restores.
  checkpointing.restore(checkpoint, str(tmp_path / "ckpt-6"), str(tmp_path))


@pytest.mark.parametrize("partial", [False, True])
def test_checkpoint_of_another_shape_is_a_mismatch_not_damage(tmp_path, partial):
  # Before: "Checkpoint .../ckpt-12 is damaged and cannot be read (ValueError: Received
  # incompatible tensor with shape (64,) ...) ... move the ckpt-12.* files out of" an intact
  # checkpoint, for a model built with another gin configuration.
  _two_checkpoints(tmp_path)
  other_shape = tf.train.Checkpoint(v=tf.Variable(tf.zeros([32])))
  with pytest.raises(checkpointing.CheckpointError) as info:
    checkpointing.restore(other_shape, str(tmp_path / "ckpt-12"), str(tmp_path),
                          partial=partial)
  message = str(info.value)
  assert f"Checkpoint {tmp_path / 'ckpt-12'} does not match the model" in message
  assert "another gin configuration" in message
  assert "damaged" not in message and "move" not in message
  assert sorted(os.listdir(tmp_path)) == sorted(  # Nothing moved or rewritten.
      ["checkpoint"] + [f"ckpt-{s}.{e}" for s in (6, 12)
                        for e in ("index", "data-00000-of-00001")])


def _tiny_trainer(model_dir, learning_rate, steps, checkpoint_interval=1):
  return training_test.tiny_trainer(model_dir, learning_rate, steps, checkpoint_interval)


def _huge_inputs():
  # Finite losses, but one SGD step at this learning rate sends the weights to +-inf: the
  # loss of step k is computed before step k's update, so it is still finite. Two equal
  # clips with opposite labels keep every logit's gradient away from zero, whatever the
  # initial weights.
  x = np.full((2, 1, 2, 2, 3), 1e20, np.float32)
  labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  return tf.data.Dataset.from_tensors(({"rgb": x}, labels)).repeat()


def _all_checkpoints_finite(model_dir):
  for name in sorted(os.listdir(model_dir)):
    if name.endswith(".index"):
      reader = tf.train.load_checkpoint(os.path.join(model_dir, name[:-len(".index")]))
      for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(
            np.isfinite(value)):
          return f"{name}: {key}"
  return None


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path):
  keras.utils.set_random_seed(0)
  trainer = _tiny_trainer(tmp_path, 1e30, 10)
  ordinary = _huge_inputs().map(lambda f, l: ({"rgb": f["rgb"] * 0.0}, l)).take(2)
  with pytest.raises(trainer_lib.NonFiniteLossError) as info:
    trainer.train(ordinary.concatenate(_huge_inputs()))
  # Steps 1 and 2 are ordinary (their checkpoints are finite); step 3's update overflows.
  assert _all_checkpoints_finite(str(tmp_path)) is None
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
  assert str(info.value).startswith("Weights are not finite after step 3: training stopped "
                                    "without writing that checkpoint. The last good "
                                    f"checkpoint is {tmp_path / 'ckpt-2'};")


def test_failed_checkpoint_write_names_directory_and_resume_point(tmp_path, monkeypatch):
  trainer = _tiny_trainer(tmp_path, 0.1, 4, checkpoint_interval=2)
  x = np.ones((2, 1, 2, 2, 3), np.float32)
  dataset = tf.data.Dataset.from_tensors(({"rgb": x}, np.ones((2, 2), np.float32))).repeat()
  real_save = tf.train.CheckpointManager.save
  calls = []

  def save(self, checkpoint_number=None, **kwargs):
    calls.append(checkpoint_number)
    if len(calls) > 1:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"Could not write checkpoint ckpt-4 to .*No space left on device.*"
                           r"free space .*resumes from .*ckpt-2"):
    trainer.train(dataset)


def test_recovered_state_file_is_relative_so_a_copied_model_dir_leaves_the_original(
    tmp_path, monkeypatch):
  # Before: the rewritten state file named absolute paths (/.../orig/ckpt-6), so training a
  # `cp -a` copy of model_dir pruned (deleted) the original's checkpoints.
  original = tmp_path / "orig"
  _two_checkpoints(original)
  (original / "checkpoint").write_text("")
  monkeypatch.chdir(tmp_path)  # A relative --model_dir too.
  assert checkpointing.latest_checkpoint("orig") == os.path.join("orig", "ckpt-12")
  assert tf.train.latest_checkpoint("orig") == os.path.join("orig", "ckpt-12")
  assert "orig" not in (original / "checkpoint").read_text()
  copy = tmp_path / "copy"
  shutil.copytree(original, copy)
  assert checkpointing.latest_checkpoint(str(copy)) == str(copy / "ckpt-12")
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.zeros([64]))),
                                       str(copy), max_to_keep=1)
  manager.save(checkpoint_number=18)
  assert sorted(n for n in os.listdir(original) if n.endswith(".index")) == [
      "ckpt-12.index", "ckpt-6.index"]
  assert sorted(n for n in os.listdir(copy) if n.endswith(".index")) == ["ckpt-18.index"]


def test_training_over_an_empty_state_file_resumes(tmp_path):
  # Before: tf.train.CheckpointManager, built before the state file was recovered, raised
  # "Invalid checkpoint state loaded from" an empty `checkpoint` file.
  trainer = _tiny_trainer(tmp_path, 0.1, 2, checkpoint_interval=2)
  x = np.ones((2, 1, 2, 2, 3), np.float32)
  dataset = tf.data.Dataset.from_tensors(({"rgb": x}, np.ones((2, 2), np.float32))).repeat()
  trainer.train(dataset)
  (tmp_path / "checkpoint").write_text("")
  resumed = _tiny_trainer(tmp_path, 0.1, 4, checkpoint_interval=2)
  assert resumed.train(dataset) == 4
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-4")


def _best_of_step_6(model_dir):
  """ckpt-6, ckpt-12 in model_dir; best/ holds step 6 (map 0.3), as train_and_eval left it."""
  checkpoint, variable = _two_checkpoints(model_dir)
  variable.assign(tf.fill([64], 6.0))
  checkpointing.BestCheckpointKeeper(checkpoint, str(model_dir), "map",
                                     evaluated={}).maybe_save(6, 0.3)
  return checkpoint, variable


def _best_value(model_dir, step):
  reader = tf.train.load_checkpoint(str(model_dir / "best" / f"best-{step}"))
  return float(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")[0])


def test_best_takes_in_a_better_step_that_another_job_evaluated(tmp_path):
  # Before: `--mode=eval` wrote eval/history/metrics-12.json, the resumed training took it as
  # "evaluated" and never offered step 12 to best/: best.json stayed at step 6 (map 0.3)
  # while the history's best was step 12 (map 0.5), and ckpt-12 was later pruned.
  checkpoint, _ = _best_of_step_6(tmp_path)
  evaluated = {6: {"map": 0.3, "step": 6},
               12: {"map": 0.5, "step": 12, "checkpoint": str(tmp_path / "ckpt-12")}}
  keeper = checkpointing.BestCheckpointKeeper(checkpoint, str(tmp_path), "map",
                                              evaluated=evaluated)
  best = json.loads((tmp_path / "best" / "best.json").read_text())
  assert best == keeper.best == {"step": 12, "metric": "map", "value": 0.5,
                                 "checkpoint": "best-12"}
  assert _best_value(tmp_path, 12) == 12.0  # A copy of ckpt-12.
  assert not (tmp_path / "best" / "best-6.index").exists()
  assert tf.train.latest_checkpoint(str(tmp_path / "best")) == str(tmp_path / "best" /
                                                                   "best-12")
  assert not keeper.maybe_save(18, 0.4)
  assert keeper.maybe_save(18, 0.6)
  assert sorted(n for n in os.listdir(tmp_path / "best") if n.endswith(".index")) == [
      "best-18.index"]


def test_best_keeps_its_step_when_the_better_checkpoint_is_gone_or_not_this_runs(tmp_path):
  checkpoint, _ = _best_of_step_6(tmp_path)
  evaluated = {12: {"map": 0.9, "checkpoint": "/elsewhere/ckpt-12"}}
  keeper = checkpointing.BestCheckpointKeeper(checkpoint, str(tmp_path), "map",
                                              evaluated=evaluated)
  assert keeper.best["step"] == 6  # Another run's checkpoint: not this run's best.
  for name in os.listdir(tmp_path):
    if name.startswith("ckpt-12."):
      os.remove(tmp_path / name)
  keeper = checkpointing.BestCheckpointKeeper(checkpoint, str(tmp_path), "map",
                                              evaluated={12: {"map": 0.9}})
  assert keeper.best["step"] == 6 and _best_value(tmp_path, 6) == 6.0


@pytest.mark.parametrize("damage", ["empty_state_file", "cut_best_json", "both"])
def test_damaged_best_state_file_or_best_json_is_recovered(tmp_path, damage):
  # Before: an empty best/checkpoint raised "Invalid checkpoint state loaded" in
  # tf.train.CheckpointManager, a cut best.json a JSONDecodeError (tracebacks).
  checkpoint, _ = _best_of_step_6(tmp_path)
  if damage != "cut_best_json":
    (tmp_path / "best" / "checkpoint").write_text("")
  if damage != "empty_state_file":
    (tmp_path / "best" / "best.json").write_text('{"step": 6, "met')
  keeper = checkpointing.BestCheckpointKeeper(checkpoint, str(tmp_path), "map",
                                              evaluated={6: {"map": 0.3}})
  assert keeper.best == {"step": 6, "metric": "map", "value": 0.3, "checkpoint": "best-6"}
  assert json.loads((tmp_path / "best" / "best.json").read_text()) == keeper.best
  assert not keeper.maybe_save(12, 0.2)
  assert keeper.maybe_save(12, 0.4)
  assert sorted(n for n in os.listdir(tmp_path / "best") if n.endswith(".index")) == [
      "best-12.index"]


@pytest.mark.parametrize("damage", ["empty", "deleted"])
def test_checkpoint_directory_flag_recovers_its_state_file(tmp_path, damage):
  # Before: --checkpoint=DIR with an empty state file raised "Invalid checkpoint state
  # loaded" (a traceback); without one it said "a directory without any checkpoint in it".
  _best_of_step_6(tmp_path)
  for directory, latest in ((tmp_path, "ckpt-12"), (tmp_path / "best", "best-6")):
    state = directory / "checkpoint"
    state.write_text("") if damage == "empty" else state.unlink()
    assert checkpointing.resolve_checkpoint("unused", str(directory)) == str(
        directory / latest)
