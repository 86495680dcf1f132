"""Checkpoints: the latest ones (for resuming), the best one by the validation metric, and
clear errors for missing, damaged or non-finite ones.

The small `checkpoint` state file is a convenience, not the record: when it is missing or
cut short, the latest intact `ckpt-N` is found from the files themselves (and the state file
rewritten), so a training job never restarts from scratch over existing checkpoints.
"""

import json
import math
import os
import re

from absl import logging
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management

from official.evaluation import writers

BEST_DIR = "best"
BEST_JSON = "best.json"
# The checkpoint dependency that holds the model's variables, by path.
MODEL_VARIABLES = "model_variables"
CHECKPOINT_NAME = "ckpt"
STATE_FILE = "checkpoint"
BEST_NAME = "best"
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


def _index_re(name):
  return re.compile(r"^" + re.escape(name) + r"-(\d+)\.index$")


def checkpoint_files(model_dir, name=CHECKPOINT_NAME):
  """`[(step, prefix)]` of every `<name>-N` with an index file in `model_dir`, by step."""
  if not tf.io.gfile.isdir(model_dir):
    return []
  found = []
  index_re = _index_re(name)
  for entry in tf.io.gfile.listdir(model_dir):
    match = index_re.match(entry)
    if match:
      found.append((int(match.group(1)), os.path.join(model_dir, entry[:-len(".index")])))
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


def _state_step(model_dir, name=CHECKPOINT_NAME):
  """The step the state file names as latest (None: no usable state file)."""
  try:
    latest = tf.train.latest_checkpoint(model_dir)
  except (ValueError, tf.errors.OpError) as e:  # An empty or cut state file.
    logging.warning("Checkpoint state file %s is unreadable (%s).",
                    os.path.join(model_dir, STATE_FILE), e)
    return None
  if latest is None:
    return None
  match = _index_re(name).match(os.path.basename(latest) + ".index")
  return int(match.group(1)) if match else None


def _rewrite_state_file(model_dir, files, latest):
  # Written by TensorFlow's own writer, with the files' times, so that a
  # tf.train.CheckpointManager reads the list back and keeps pruning old checkpoints; with
  # paths relative to model_dir, as a CheckpointManager writes them: absolute ones would make
  # a copy of model_dir (`cp -a`, to fork an experiment) prune the original's checkpoints.
  # (The public tf.compat.v1.train.update_checkpoint_state cannot write relative paths.)
  times = [tf.io.gfile.stat(prefix + ".index").mtime_nsec / 1e9 for _, prefix in files]
  checkpoint_management.update_checkpoint_state_internal(
      model_dir, latest, all_model_checkpoint_paths=[prefix for _, prefix in files],
      save_relative_paths=True, all_model_checkpoint_timestamps=times,
      last_preserved_timestamp=min(times) - 1.0)


def latest_checkpoint(model_dir, name=CHECKPOINT_NAME):
  """The prefix of the newest checkpoint in `model_dir`, or None when it holds none.

  Normally the state file's latest. When the state file is missing, unreadable or behind
  the `ckpt-N` files (a crash between writing a checkpoint and the state file), the newest
  `ckpt-N` whose every tensor reads back is taken, and the state file rewritten to list
  the intact checkpoints (a warning says so).

  Raises:
    CheckpointError: `ckpt-N` files exist but none of them can be read, naming them. A
      fresh start would overwrite them.
  """
  files = checkpoint_files(model_dir, name)
  if not files:
    return None
  state_step = _state_step(model_dir, name)
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
      # A training directory (ckpt-N) or its best/ (best-N); a lost, empty or cut state
      # file is recovered from the files, as in model_dir.
      name = (BEST_NAME if checkpoint_files(checkpoint, BEST_NAME) and
              not checkpoint_files(checkpoint) else CHECKPOINT_NAME)
      latest = latest_checkpoint(checkpoint, name)
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
  `best.json` = {step, metric, value, checkpoint} beside it.

  `best/` reflects every evaluated step of the run: built with the evaluation history
  (`evaluated`), it first takes in a step that the history holds and `best/` lacks — one
  evaluated by another job (`--mode=eval` on the training directory, whose record makes a
  resumed training skip that evaluation) — by copying its `ckpt-N` when it still exists
  (a warning says so either way). A lost or empty `best/checkpoint` state file is recovered
  from the `best-N` files, and a missing or cut `best.json` rebuilt from the history.

  Args:
    checkpoint: the training `tf.train.Checkpoint` (`best-N` has the layout of `ckpt-N`).
    model_dir: the training directory.
    metric: the history records' key to compare.
    higher_is_better: direction of `metric`.
    evaluated: optional `{step: history record}` (`history.read_records`) to reconcile
      `best/` with; None (non-chief workers) touches nothing.
  """

  def __init__(self, checkpoint, model_dir, metric, higher_is_better=True, evaluated=None):
    self._model_dir = model_dir
    self._dir = os.path.join(model_dir, BEST_DIR)
    self._metric = metric
    self._higher = higher_is_better
    # Before the CheckpointManager is built: it fails on an unreadable state file.
    latest = self._recover_state_file() if evaluated is not None else None
    self.best = self._read(latest, evaluated or {})
    if evaluated:
      self._reconcile(evaluated)
    self._manager = tf.train.CheckpointManager(checkpoint, self._dir, max_to_keep=1,
                                               checkpoint_name=BEST_NAME)

  @property
  def json_path(self):
    return os.path.join(self._dir, BEST_JSON)

  def _recover_state_file(self):
    try:
      return latest_checkpoint(self._dir, BEST_NAME)
    except CheckpointError as e:
      logging.warning("%s holds no readable best checkpoint (%s); the next better "
                      "evaluation replaces it.", self._dir, e)
      state = os.path.join(self._dir, STATE_FILE)
      if _state_step(self._dir, BEST_NAME) is None and tf.io.gfile.exists(state):
        tf.io.gfile.remove(state)
      return None

  def _read(self, latest, evaluated):
    best = None
    if tf.io.gfile.exists(self.json_path):
      try:
        with tf.io.gfile.GFile(self.json_path) as f:
          best = json.load(f)
        if not isinstance(best, dict) or not {"step", "metric", "value"} <= set(best):
          raise ValueError(f"not a {{step, metric, value}} object: {best!r}")
        return best
      except ValueError as e:  # Cut short by a crash or a full disk.
        logging.warning("%s is unreadable (%s): rebuilding it from the evaluation history.",
                        self.json_path, e)
        best = None
    if latest is None:
      return None
    # The best-N files exist without (readable) best.json: a crash between the two writes.
    step = int(os.path.basename(latest).rsplit("-", 1)[1])
    value = evaluated.get(step, {}).get(self._metric)
    if not isinstance(value, (int, float)):
      logging.warning("No evaluation record of step %d (%s) to rebuild %s from; the next "
                      "evaluation decides the best again.", step, latest, self.json_path)
      return None
    best = {"step": step, "metric": self._metric, "value": float(value),
            "checkpoint": os.path.basename(latest)}
    writers.write_json(self.json_path, best)
    return best

  def _better(self, value, best):
    if best is None or best.get("metric") != self._metric:
      return True
    return value > best["value"] if self._higher else value < best["value"]

  def _reconcile(self, evaluated):
    """Copies `ckpt-N` of the history's best step into `best/` when `best/` lacks it."""
    candidates = []
    for step, record in evaluated.items():
      value = record.get(self._metric)
      source = record.get("checkpoint")
      # Only this run's own checkpoints (`--mode=eval --checkpoint=` may name others).
      if not isinstance(value, (int, float)) or not math.isfinite(value) or (
          source is not None and os.path.abspath(source) != os.path.abspath(
              os.path.join(self._model_dir, f"{CHECKPOINT_NAME}-{step}"))):
        continue
      candidates.append((-value if self._higher else value, step))
    if not candidates:
      return
    key, step = min(candidates)  # The best value; the earliest step among equals.
    value = -key if self._higher else key
    if not self._better(value, self.best):
      return
    current = ("none" if self.best is None else
               f"step {self.best['step']}, {self.best['metric']} {self.best['value']:.6f}")
    source = os.path.join(self._model_dir, f"{CHECKPOINT_NAME}-{step}")
    if not tf.io.gfile.exists(source + ".index") or read_failure(source) is not None:
      logging.warning(
          "The evaluation history's best %s = %.6f is at step %d, better than best/ (%s), "
          "but %s is gone or unreadable (max_to_keep): best/ keeps what it has. (Was step "
          "%d evaluated by another job, such as --mode=eval?)", self._metric, value, step,
          current, source, step)
      return
    tf.io.gfile.makedirs(self._dir)
    target = os.path.join(self._dir, f"{BEST_NAME}-{step}")
    for path in tf.io.gfile.glob(source + ".*"):
      tf.io.gfile.copy(path, target + path[len(source):], overwrite=True)
    _rewrite_state_file(self._dir, [(step, target)], target)
    self.best = {"step": int(step), "metric": self._metric, "value": float(value),
                 "checkpoint": os.path.basename(target)}
    writers.write_json(self.json_path, self.best)
    for _, old in checkpoint_files(self._dir, BEST_NAME):
      if old != target:
        for path in tf.io.gfile.glob(old + ".*"):
          tf.io.gfile.remove(path)
    logging.warning("best/ (%s) did not hold the evaluation history's best step %d (%s = "
                    "%.6f; evaluated by another job, such as --mode=eval): copied %s into "
                    "it.", current, step, self._metric, value, source)

  def maybe_save(self, step, value):
    """Saves when `value` beats the best so far; returns whether it did."""
    if not self._better(value, self.best):
      return False
    path = self._manager.save(checkpoint_number=step)
    self.best = {"step": int(step), "metric": self._metric, "value": float(value),
                 "checkpoint": os.path.basename(path)}
    writers.write_json(self.json_path, self.best)
    logging.info("New best %s = %.6f at step %d: %s", self._metric, value, step, path)
    return True


INIT_MODULES = ("backbone", "all")
INIT_REPORT_FILE = "init_checkpoint.json"
_HEAD_PREFIX = "head/"


def _checkpoint_key(path):
  """The key of the model variable at Keras `path` in a checkpoint of `model_checkpoint`
  (tf.train escapes '.' as '..' and '/' as '.S' in dict keys)."""
  escaped = path.replace(".", "..").replace("/", ".S")
  return f"{MODEL_VARIABLES}/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def _model_variable_paths(reader):
  """{Keras path: checkpoint key} of the model variables a checkpoint holds."""
  prefix, suffix = f"{MODEL_VARIABLES}/", "/.ATTRIBUTES/VARIABLE_VALUE"
  paths = {}
  for key in reader.get_variable_to_shape_map():
    if key.startswith(prefix) and key.endswith(suffix):
      escaped = key[len(prefix):-len(suffix)]
      path = re.sub(r"\.(.)", lambda m: "." if m.group(1) == "." else "/", escaped)
      paths[path] = key
  return paths


def initialize_from_checkpoint(model, checkpoint, modules="all"):
  """Loads `model`'s weights from another run's checkpoint, as fine-tuning starts.

  Variables are matched by their Keras paths (the backbone's `node_<k>_...` paths are the
  same for any head; `assemblenet.AssembleNet`). The backbone must match exactly; the
  head (`head/...`) is loaded with `modules='all'` only where its shapes agree, so a
  checkpoint trained with another number of classes (600 Kinetics classes -> 157 Charades
  classes) leaves the head freshly initialised. Model Garden's `init_checkpoint` /
  `init_checkpoint_modules`. Only the raw weights are read (not an EMA, the optimiser's
  slots or the step).

  Args:
    model: the built model (under the strategy's scope when there is one).
    checkpoint: a checkpoint prefix (`.../ckpt-N`, `.../best/best-N`) or a directory
      holding checkpoints (its latest).
    modules: 'backbone' (everything but the head) or 'all'.

  Returns:
    A report: {'checkpoint': prefix, 'modules', 'loaded': [paths], 'not_loaded':
    {path: reason}, 'unused': [the checkpoint's model variables that were not loaded]}.

  Raises:
    FileNotFoundError: no such checkpoint.
    ValueError: `modules` unknown; a backbone variable missing from the checkpoint, of
      another shape or dtype, or a backbone variable of the checkpoint that the model lacks
      (another structure or depth); the message names the variable.
  """
  if modules not in INIT_MODULES:
    raise ValueError(f"init_checkpoint_modules must be one of {INIT_MODULES}. Received: "
                     f"{modules!r}")
  if "://" not in checkpoint:
    checkpoint = os.path.abspath(checkpoint)
  if checkpoint.endswith(".index"):  # The file a user sees beside the data shards.
    checkpoint = checkpoint[:-len(".index")]
  if tf.io.gfile.isdir(checkpoint):
    name = (BEST_NAME if checkpoint_files(checkpoint, BEST_NAME) and
            not checkpoint_files(checkpoint) else CHECKPOINT_NAME)
    prefix = latest_checkpoint(checkpoint, name)
    if prefix is None:
      raise FileNotFoundError(
          f"init_checkpoint {checkpoint} is a directory without any checkpoint in it; "
          "point it at a ckpt-N prefix or a training directory.")
  elif tf.io.gfile.exists(checkpoint + ".index"):
    prefix = checkpoint
  else:
    raise FileNotFoundError(
        f"init_checkpoint {checkpoint} is not a checkpoint ({checkpoint}.index does not "
        "exist); point it at a ckpt-N prefix or a training directory.")
  try:
    reader = tf.train.load_checkpoint(prefix)
  except _READ_ERRORS as e:
    raise CheckpointError(f"init_checkpoint {prefix} cannot be read ({e}).") from e
  stored = _model_variable_paths(reader)
  if not stored:
    raise ValueError(
        f"init_checkpoint {prefix} holds no model variables of this package's checkpoints "
        f"(no '{MODEL_VARIABLES}/...' keys): it was not written by official.train.")
  shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
  variables = model_variables(model)
  extra = sorted(path for path in stored
                 if path not in variables and not path.startswith(_HEAD_PREFIX))
  if extra:
    raise ValueError(
        f"init_checkpoint {prefix} has {len(extra)} backbone variable(s) that the model "
        f"lacks, e.g. {extra[:3]}: it comes from another structure, depth or number of "
        "object classes. Build the model it was trained with (build_model.structure / "
        "depth / num_object_classes).")
  report = {"checkpoint": prefix, "modules": modules, "loaded": [], "not_loaded": {}}
  values = {}
  for path, variable in variables.items():
    is_head = path.startswith(_HEAD_PREFIX)
    if is_head and modules == "backbone":
      report["not_loaded"][path] = "head: not in init_checkpoint_modules='backbone'"
      continue
    key = stored.get(path)
    problem = None
    if key is None:
      problem = "is not in the checkpoint"
    elif tuple(shapes[key]) != tuple(variable.shape):
      problem = (f"has shape {tuple(shapes[key])} in the checkpoint, "
                 f"{tuple(variable.shape)} in the model")
    elif dtypes[key] != tf.as_dtype(variable.dtype):
      problem = (f"has dtype {dtypes[key].name} in the checkpoint, {variable.dtype} in "
                 "the model")
    if problem is None:
      values[path] = reader.get_tensor(key)
    elif is_head:
      report["not_loaded"][path] = f"head re-initialised: {problem}"
    else:
      raise ValueError(
          f"init_checkpoint {prefix} does not fit the model's backbone: variable {path} "
          f"{problem}. Build the model the checkpoint was trained with "
          "(build_model.structure / depth / num_object_classes), or start from scratch.")
  for path, value in values.items():
    variables[path].assign(value)
    report["loaded"].append(path)
  report["unused"] = sorted(set(stored) - set(values))
  if any(key.startswith("ema/") for key in shapes):
    report["note"] = ("the source run kept an exponential moving average (its evaluations "
                      "and exports used it); its raw weights were loaded")
    logging.warning("init_checkpoint %s: %s.", prefix, report["note"])
  return report
