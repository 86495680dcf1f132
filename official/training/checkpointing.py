"""Checkpoints: the latest ones (for resuming), the best one by the validation metric, and
clear errors for missing ones."""

import json
import os

from absl import logging
import tensorflow as tf

from official.evaluation import writers

BEST_DIR = "best"
BEST_JSON = "best.json"
# The checkpoint dependency that holds the model's variables, by path.
MODEL_VARIABLES = "model_variables"


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


def resolve_checkpoint(model_dir, checkpoint=None):
  """The checkpoint prefix to restore for eval/export.

  Args:
    model_dir: the training directory (its latest checkpoint is the default).
    checkpoint: None, a checkpoint prefix (`.../ckpt-100`) or a directory holding checkpoints.

  Raises:
    FileNotFoundError: naming the path, when there is no such checkpoint.
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
  latest = tf.train.latest_checkpoint(model_dir)
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
