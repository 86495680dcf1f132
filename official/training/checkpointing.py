"""Checkpoints: the latest ones (for resuming), the best one by the validation metric, and
clear errors for missing, damaged or non-finite ones.

The small `checkpoint` state file is a convenience, not the record: when it is missing or
cut short, the latest intact `ckpt-N` is found from the files themselves (and the state file
rewritten), so a training job never restarts from scratch over existing checkpoints.
"""

import json
import os
import re

from absl import logging
import tensorflow as tf

from official.evaluation import writers

BEST_DIR = "best"
BEST_JSON = "best.json"
# The checkpoint dependency that holds the model's variables, by path.
MODEL_VARIABLES = "model_variables"
CHECKPOINT_NAME = "ckpt"
STATE_FILE = "checkpoint"
_INDEX_RE = re.compile(r"^" + CHECKPOINT_NAME + r"-(\d+)\.index$")
# What reading a damaged checkpoint raises: a cut data file gives a bare IndexError ("Read
# less bytes than requested"), a damaged index an OpError (DataLossError, ...).
_READ_ERRORS = (tf.errors.OpError, IndexError, OSError, ValueError)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be read or written; the message names it and the way out."""


def model_variables(model):
  """`{path: variable}` for every variable of `model`, trainable or not.

  Checkpoints name the model's variables by their Keras paths instead of through the
  model's object graph. `tf.train.Checkpoint` does not walk into the Python lists and dicts
  that Keras 3 layers keep their sublayers in, so with `Checkpoint(model=model)` most
  batch-norm statistics of an AssembleNet were never saved (the trainable weights only
  survived through the optimiser's own list), and a restored model evaluated with freshly
  initialised statistics.

  Raises:
    ValueError: when two variables share a path (they could not be told apart).
  """
  variables = {}
  for variable in model.variables:
    if variable.path in variables:
      raise ValueError(f"Two variables of model {model.name} share the path "
                       f"{variable.path!r}; checkpoints name variables by path.")
    variables[variable.path] = variable
  return variables


def model_checkpoint(model, **items):
  """A `tf.train.Checkpoint` of every variable of `model` (by path) and `items`."""
  return tf.train.Checkpoint(**{MODEL_VARIABLES: model_variables(model)}, **items)


def checkpoint_files(model_dir):
  """`[(step, prefix)]` of every `ckpt-N` with an index file in `model_dir`, by step."""
  if not tf.io.gfile.isdir(model_dir):
    return []
  found = []
  for name in tf.io.gfile.listdir(model_dir):
    match = _INDEX_RE.match(name)
    if match:
      found.append((int(match.group(1)), os.path.join(model_dir, name[:-len(".index")])))
  return sorted(found)


def read_failure(prefix):
  """None when every tensor of checkpoint `prefix` reads back; else why not (a string).

  Reads the whole checkpoint: used when the state file cannot say which checkpoint is the
  latest, not on every resume.
  """
  try:
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except _READ_ERRORS as e:
    return f"{type(e).__name__}: {e}"
  return None


def _state_step(model_dir):
  """The step the state file names as latest (None: no usable state file)."""
  try:
    latest = tf.train.latest_checkpoint(model_dir)
  except (ValueError, tf.errors.OpError) as e:  # An empty or cut state file.
    logging.warning("Checkpoint state file %s is unreadable (%s).",
                    os.path.join(model_dir, STATE_FILE), e)
    return None
  if latest is None:
    return None
  match = _INDEX_RE.match(os.path.basename(latest) + ".index")
  return int(match.group(1)) if match else None


def _rewrite_state_file(model_dir, files, latest):
  # Written by TensorFlow's own writer, with the files' times, so that a
  # tf.train.CheckpointManager reads the list back and keeps pruning old checkpoints.
  times = [tf.io.gfile.stat(prefix + ".index").mtime_nsec / 1e9 for _, prefix in files]
  tf.compat.v1.train.update_checkpoint_state(
      model_dir, latest, all_model_checkpoint_paths=[prefix for _, prefix in files],
      all_model_checkpoint_timestamps=times, last_preserved_timestamp=min(times) - 1.0)


def latest_checkpoint(model_dir):
  """The prefix of the newest checkpoint in `model_dir`, or None when it holds none.

  Normally the state file's latest. When the state file is missing, unreadable or behind
  the `ckpt-N` files (a crash between writing a checkpoint and the state file), the newest
  `ckpt-N` whose every tensor reads back is taken, and the state file rewritten to list
  the intact checkpoints (a warning says so).

  Raises:
    CheckpointError: `ckpt-N` files exist but none of them can be read, naming them. A
      fresh start would overwrite them.
  """
  files = checkpoint_files(model_dir)
  if not files:
    return None
  state_step = _state_step(model_dir)
  newest_step = files[-1][0]
  if state_step is not None and state_step >= newest_step:
    return dict(files).get(state_step, files[-1][1])
  failures = {}
  for step, prefix in reversed(files):
    if state_step is not None and step <= state_step:
      break  # The state file's latest exists and everything newer is damaged.
    failures[prefix] = read_failure(prefix)
    if failures[prefix] is None:
      intact = [(s, p) for s, p in files if s < step or p == prefix]
      intact = [(s, p) for s, p in intact if failures.get(p) is None]
      _rewrite_state_file(model_dir, intact, prefix)
      logging.warning(
          "The checkpoint state file %s is missing, unreadable or behind the checkpoint "
          "files: recovered %s from the files themselves (newest intact of %s).",
          os.path.join(model_dir, STATE_FILE), prefix,
          ", ".join(os.path.basename(p) for _, p in files))
      return prefix
  if state_step is not None:
    return dict(files)[state_step]
  names = ", ".join(os.path.basename(p) for _, p in files)
  details = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in failures.items())
  raise CheckpointError(
      f"model_dir {model_dir} holds checkpoints {names} but none of them can be read "
      f"({details}). Refusing to start from scratch over them: move them out of "
      "model_dir to start afresh, or use another --model_dir.")


def restore(checkpoint, prefix, model_dir, partial=False):
  """Restores `checkpoint` from `prefix`, turning a damaged or mismatched file into a
  `CheckpointError` that names it and, for a damaged file only, the intact checkpoints to
  use instead (an intact file that does not fit the model is a configuration mistake:
  nothing is to be moved).

  Args:
    checkpoint: `tf.train.Checkpoint`.
    prefix: the checkpoint to read (`.../ckpt-12`).
    model_dir: where to look for other checkpoints to suggest.
    partial: allow values in the file that `checkpoint` does not use (eval/export skip the
      optimiser).

  Raises:
    CheckpointError: the file cannot be read, or does not match the model.
  """
  try:
    status = checkpoint.read(prefix) if partial else checkpoint.restore(prefix)
    if partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise CheckpointError(
        f"Checkpoint {prefix} does not match the model ({e}). Was it written with another "
        "gin configuration? Pass the same --gin_file/--gin_param as the training run.") from e
  except _READ_ERRORS as e:
    if read_failure(prefix) is None:
      # Every tensor reads back: the file is intact, the model is not the one that wrote it
      # (a variable of another shape: restoring raises ValueError).
      raise CheckpointError(
          f"Checkpoint {prefix} does not match the model ({type(e).__name__}: {e}). The "
          "checkpoint itself reads back intact: the model built here differs from the one "
          "that wrote it. Was it written with another gin configuration? Pass the same "
          "--gin_file/--gin_param as the training run (its model_dir/config.gin holds "
          "them).") from e
    name = os.path.basename(prefix)
    others = [p for _, p in checkpoint_files(model_dir)
              if p != prefix and read_failure(p) is None]
    if others:
      way_out = (f"Intact checkpoint(s): {', '.join(others)}. Evaluate or export one with "
                 f"--checkpoint={others[-1]}; to resume training from it, move the "
                 f"{name}.* files out of {model_dir}.")
    else:
      way_out = (f"No other intact checkpoint is in {model_dir}; move the {name}.* files "
                 "out of it to train from scratch.")
    raise CheckpointError(f"Checkpoint {prefix} is damaged and cannot be read "
                          f"({type(e).__name__}: {e}). {way_out}") from e
  return prefix


def resolve_checkpoint(model_dir, checkpoint=None):
  """The checkpoint prefix to restore for eval/export.

  Args:
    model_dir: the training directory (its latest checkpoint is the default).
    checkpoint: None, a checkpoint prefix (`.../ckpt-100`) or a directory holding checkpoints.

  Raises:
    FileNotFoundError: naming the path, when there is no such checkpoint.
    CheckpointError: checkpoints exist but none can be read (see `latest_checkpoint`).
  """
  if checkpoint:
    if tf.io.gfile.isdir(checkpoint):
      latest = tf.train.latest_checkpoint(checkpoint)
      if latest is None:
        raise FileNotFoundError(f"--checkpoint={checkpoint} is a directory without any "
                                "checkpoint in it.")
      return latest
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise FileNotFoundError(f"--checkpoint={checkpoint} is not a checkpoint: "
                              f"{checkpoint}.index does not exist.")
    return checkpoint
  latest = latest_checkpoint(model_dir)
  if latest is None:
    raise FileNotFoundError(f"No checkpoint in model_dir {model_dir}: train first, or pass "
                            "--checkpoint.")
  return latest


class BestCheckpointKeeper:
  """Keeps the checkpoint with the best validation metric in `model_dir/best/`, with
  `best.json` = {step, metric, value} beside it."""

  def __init__(self, checkpoint, model_dir, metric, higher_is_better=True):
    self._dir = os.path.join(model_dir, BEST_DIR)
    self._manager = tf.train.CheckpointManager(checkpoint, self._dir, max_to_keep=1,
                                               checkpoint_name="best")
    self._metric = metric
    self._higher = higher_is_better
    self.best = self._read()

  @property
  def json_path(self):
    return os.path.join(self._dir, BEST_JSON)

  def _read(self):
    if not tf.io.gfile.exists(self.json_path):
      return None
    with tf.io.gfile.GFile(self.json_path) as f:
      return json.load(f)

  def maybe_save(self, step, value):
    """Saves when `value` beats the best so far; returns whether it did."""
    if self.best is not None and self.best["metric"] == self._metric:
      old = self.best["value"]
      if (value <= old) if self._higher else (value >= old):
        return False
    path = self._manager.save(checkpoint_number=step)
    self.best = {"step": int(step), "metric": self._metric, "value": float(value),
                 "checkpoint": os.path.basename(path)}
    writers.write_json(self.json_path, self.best)
    logging.info("New best %s = %.6f at step %d: %s", self._metric, value, step, path)
    return True
