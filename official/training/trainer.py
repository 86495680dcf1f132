"""The custom training and evaluation loops.

A `tf.function` train step runs under `strategy.run` on each replica's share of the global
batch; the Python loop around it times data wait vs compute, logs progress, stops on a
non-finite loss, checkpoints (model, optimiser, step, EMA) and resumes.
"""

import math
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from official.evaluation import metrics as metrics_lib
from official.training import checkpointing

# Video ids travel through the distributed evaluation step as int32 code points (strings
# cannot go to accelerators, nor through cross-worker gathers), zero-padded to a fixed
# length: the longest annotated id of the split, or this default.
MAX_VIDEO_ID_LENGTH = 128
_ID_CODES = "video_id_codes"


def encode_video_ids(video_ids, max_length=MAX_VIDEO_ID_LENGTH):
  """string `[B]` -> int32 `[B, max_length]` Unicode code points, zero-padded.

  Raises:
    tf.errors.InvalidArgumentError: when an id is longer than `max_length` code points
      (cutting it would merge the views of different videos that share a prefix).
  """
  codes = tf.strings.unicode_decode(video_ids, "UTF-8")
  longest = tf.reduce_max(codes.row_lengths())
  check = tf.debugging.assert_less_equal(
      longest, tf.cast(max_length, longest.dtype),
      message=f"A video id is longer than {max_length} characters; pass a larger "
              "max_video_id_length to Trainer.evaluate.")
  with tf.control_dependencies([check]):
    return tf.identity(codes.to_tensor(default_value=0, shape=[None, max_length]))


def decode_video_ids(codes):
  """Inverse of `encode_video_ids` on a NumPy `[B, L]` array -> list of str."""
  return ["".join(chr(c) for c in row if c) for row in np.asarray(codes)]


def use_sync_batch_norm(model):
  """Makes every `BatchNormalization` of `model` compute batch statistics over the global
  batch (all replicas). Returns how many were switched.

  Why: the statistics then do not depend on how many replicas share the batch, so one GPU
  and eight see the same normalisation for the same global batch. This is the package's
  choice, not the authors': their released TF1 code normalises with
  `tf.layers.batch_normalization(fused=True)` (`rep_flow_2d_layer.batch_norm_relu`), which
  has no cross-replica mode, so on their TPU v3 each core used its own shard's
  statistics; their training script and per-core batch are not released. Synchronised,
  `batch_norm.FusedBatchNorm` falls back to Keras' layer, which updates the moving
  variance with the biased batch variance (`(n - 1) / n` of the authors' unbiased one,
  over the n values of a channel in the global batch).

  Keras 3's layer reads `synchronized` at call time, so this works on a built model.
  """
  count = 0
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
      layer.synchronized = True
      count += 1
  return count


class NonFiniteLossError(FloatingPointError):
  """Training stopped on a NaN or infinite loss."""


class Trainer:
  """Trains and evaluates one model under one `tf.distribute.Strategy`.

  Create the model, optimiser (and so their variables) under `strategy.scope()` before
  constructing the trainer.

  Args:
    strategy: the distribution strategy.
    model: keras.Model taking a dict of the features named in `input_keys`, returning logits.
    optimizer: keras optimiser (a `LossScaleOptimizer` under mixed_float16).
    loss_fn: `(labels, logits) -> [B]` per-example losses.
    model_dir: where checkpoints and summaries go.
    global_batch_size: training batch summed over replicas (the dataset's batch size).
    train_steps: total optimiser steps.
    input_keys: feature names fed to the model ('rgb', plus 'objects' for object models).
    score_activation: logits -> evaluation scores (sigmoid or softmax), applied in float64
      to the logits gathered from all replicas.
    ema_decay: keep an exponential moving average of the weights (evaluated and exported)
      when set.
    checkpoint_interval: steps between checkpoints.
    max_to_keep: checkpoints kept for resuming.
    log_interval: steps between progress logs and summaries.
    jit_compile: XLA-compile the forward/backward pass.
    skip_consumed_batches: on resume, continue after the batches already trained on, so
      the resumed run sees exactly the batches an uninterrupted one would: a dataset
      callable is asked to start at that batch (cheap with `build_dataset(start_batch=)`),
      a plain dataset is skipped (`dataset.skip`, which produces every skipped batch).
      False restarts the data order.
    is_chief: whether this process writes checkpoints and summaries (multi-worker).
    worker_id: this worker's index (multi-worker), for its scratch checkpoint directory.
  """

  def __init__(self, strategy, model, optimizer, loss_fn, model_dir, *, global_batch_size,
               train_steps, input_keys=("rgb",), score_activation=tf.nn.sigmoid,
               ema_decay=None, checkpoint_interval=1000, max_to_keep=3, log_interval=100,
               jit_compile=False, skip_consumed_batches=True, is_chief=True, worker_id=0):
    if global_batch_size % strategy.num_replicas_in_sync:
      raise ValueError(f"The global batch size must divide evenly over the "
                       f"{strategy.num_replicas_in_sync} replicas. Received: "
                       f"{global_batch_size}")
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.loss_fn = loss_fn
    self.model_dir = model_dir
    self.global_batch_size = global_batch_size
    self.train_steps = train_steps
    self.input_keys = tuple(input_keys)
    self.score_activation = score_activation
    self.checkpoint_interval = checkpoint_interval
    self.max_to_keep = max_to_keep
    self.log_interval = log_interval
    self.jit_compile = jit_compile
    self.skip_consumed_batches = skip_consumed_batches
    self.is_chief = is_chief
    self.worker_id = worker_id
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # Slots exist before any restore, so restoring never depends on deferred creation.
      optimizer.build(model.trainable_variables)
      self.ema = None
      if ema_decay:
        from official.training import ema as ema_lib  # pylint: disable=g-import-not-at-top
        self.ema = ema_lib.ExponentialMovingAverage(model, ema_decay)
    self._train_step_fn = None
    self._eval_step_fn = None
    self._finite_fn = None
    self.last_good_checkpoint = None

  # Checkpoints -------------------------------------------------------------------------

  def checkpoint(self):
    items = {"optimizer": self.optimizer, "step": self.step}
    if self.ema is not None:
      items["ema"] = self.ema
    return checkpointing.model_checkpoint(self.model, **items)

  def _manager(self, checkpoint):
    # Non-chief workers write to a scratch directory they delete: every worker must take
    # part in saving (reading mirrored/synchronised variables), only the chief keeps it.
    directory = self.model_dir if self.is_chief else os.path.join(
        self.model_dir, f".worker_{self.worker_id}_tmp")
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=self.max_to_keep)

  def _save(self, manager):
    """Writes a checkpoint of the current step, after checking every value is finite.

    Raises:
      NonFiniteLossError: a weight, optimiser slot or EMA value is NaN or infinite (the
        loss of a step is computed before its update, so a finite loss does not prove the
        updated weights finite); nothing is written.
      CheckpointError: the write failed (a full disk, permissions), naming the directory
        and the checkpoint a rerun resumes from.
    """
    step = int(self.step.numpy())
    if not bool(self._checkpointed_values_finite()):
      raise NonFiniteLossError(
          f"Weights are not finite after step {step}: training stopped without writing "
          f"that checkpoint. {self._last_good_message()}")
    try:
      path = manager.save(checkpoint_number=step)
      if not self.is_chief:
        tf.io.gfile.rmtree(manager.directory)
    except (OSError, tf.errors.OpError) as e:
      raise checkpointing.CheckpointError(
          f"Could not write checkpoint {checkpointing.CHECKPOINT_NAME}-{step} to "
          f"{manager.directory}: {e}. If the disk is full, free space and rerun the same "
          "command: it resumes from "
          f"{self.last_good_checkpoint or 'the start (no checkpoint was written yet)'}."
      ) from e
    if self.is_chief:
      self.last_good_checkpoint = path
    return path

  def _last_good_message(self):
    return ("The last good checkpoint is "
            f"{self.last_good_checkpoint or 'none (no checkpoint was written yet)'}; lower "
            "the learning rate or check the data before resuming.")

  def _checkpointed_values_finite(self):
    if self._finite_fn is None:
      variables = [v for v in self.model.variables + list(self.optimizer.variables) +
                   ([] if self.ema is None else list(self.ema.shadow))
                   if tf.as_dtype(v.dtype).is_floating]

      @tf.function
      def all_finite():
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
      self._finite_fn = all_finite
    return self._finite_fn()

  def restore(self, checkpoint_path):
    """Restores model, step and EMA (not the optimiser's slots) for evaluation or export.

    Raises:
      CheckpointError: the checkpoint is damaged or does not match the model.
    """
    checkpointing.restore(self.checkpoint(), checkpoint_path,
                          os.path.dirname(checkpoint_path), partial=True)
    logging.info("Restored %s (step %d).", checkpoint_path, int(self.step.numpy()))
    return int(self.step.numpy())

  # Steps ---------------------------------------------------------------------------------

  def _select_inputs(self, features):
    missing = [k for k in self.input_keys if k not in features]
    if missing:
      raise ValueError(f"The model needs features {list(self.input_keys)} but the dataset "
                       f"lacks {missing}. Received features: {sorted(features)}")
    return {k: features[k] for k in self.input_keys}

  def _build_train_step(self):
    model, optimizer = self.model, self.optimizer
    scale_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def loss_and_grads(features, labels):
      with tf.GradientTape() as tape:
        logits = model(features, training=True)
        per_example = self.loss_fn(labels, logits)
        loss = tf.nn.compute_average_loss(per_example,
                                          global_batch_size=self.global_batch_size)
        if model.losses:
          loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        scaled = optimizer.scale_loss(loss) if scale_loss else loss
      return loss, tape.gradient(scaled, model.trainable_variables)

    if self.jit_compile:
      # XLA covers the forward and backward pass; the optimiser update (with its
      # cross-replica all-reduce) stays outside the compiled cluster.
      loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

    def replica_step(features, labels):
      loss, grads = loss_and_grads(features, labels)
      if scale_loss and self.strategy.num_replicas_in_sync > 1:
        grads = _skip_together(grads)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return loss

    @tf.function
    def train_step(features, labels):
      per_replica_loss = self.strategy.run(replica_step, args=(features, labels))
      loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
      if self.ema is not None:
        self.ema.update()
      self.step.assign_add(1)
      return loss

    return train_step

  def _build_eval_step(self):
    model = self.model

    def replica_step(features, labels):
      # A replica's share of a short last batch can be empty, and with oneDNN's kernels
      # (TF's default on AVX-512 CPUs) a conv of an empty batch fails: skip the model then.
      logits = tf.cond(
          tf.shape(labels)[0] > 0,
          lambda: tf.cast(model(self._select_inputs(features), training=False), tf.float32),
          lambda: tf.zeros([0, labels.shape[-1]], tf.float32))
      return logits, tf.cast(labels, tf.float32), features[_ID_CODES]

    @tf.function(reduce_retracing=True)
    def eval_step(features, labels):
      outputs = self.strategy.run(replica_step, args=(features, labels))
      logits, labels, codes = tf.nest.map_structure(
          lambda t: self.strategy.gather(t, axis=0), outputs)
      # Scores in float64, after the gather (outside the replicas: TPUs have no float64).
      # float32's sigmoid is exactly 1 above a logit of about 17.3, so two confident videos
      # would tie and rank in annotation order; float64's only above about 36.7.
      return self.score_activation(tf.cast(logits, tf.float64)), labels, codes

    return eval_step

  # Loops ---------------------------------------------------------------------------------

  def summary_writer(self, name):
    if not self.is_chief:
      return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(os.path.join(self.model_dir, name))

  def train(self, dataset, evaluate_fn=None, eval_interval=None, after_first_step=None,
            is_evaluated=None):
    """Trains to `train_steps`, resuming from the latest checkpoint in `model_dir`.

    Args:
      dataset: `tf.data.Dataset` of `(features, labels)` global batches, repeating; or a
        callable `(start_batch) -> Dataset` that starts the same batch order at batch
        `start_batch` (cheap resume, `build_dataset(start_batch=)`). A plain dataset is
        resumed with `dataset.skip(step)`, which produces (decodes) every skipped batch.
      evaluate_fn: optional `(step) -> {metric: value}` run every `eval_interval` steps and
        at the end (after a checkpoint of that step is written).
      eval_interval: steps between evaluations.
      after_first_step: optional callable run once after the first step of this job.
      is_evaluated: optional `(step) -> bool`, whether the evaluation of `step` has a
        written result. On resume at a step where an evaluation was due (an
        `eval_interval` multiple or the last step) and has none, as after a kill during
        that evaluation, `evaluate_fn` runs before training continues.

    Returns:
      The final step.

    Raises:
      NonFiniteLossError: on a NaN or infinite loss or weights; no checkpoint with
        non-finite values is written, the last good one stays.
      CheckpointError: a checkpoint cannot be read or written (see `checkpointing`).
    """
    checkpoint = self.checkpoint()
    # Recovers a lost, empty or cut state file first: a CheckpointManager reads it when it
    # is built (an unreadable one is an error there; a lost one forgets the old checkpoints
    # it has to prune).
    latest = checkpointing.latest_checkpoint(self.model_dir)
    manager = self._manager(checkpoint)
    if latest:
      checkpointing.restore(checkpoint, latest, self.model_dir)
      if not bool(self._checkpointed_values_finite()):
        raise checkpointing.CheckpointError(
            f"Checkpoint {latest} holds NaN or infinite values (written before the NaN "
            "guard checked weights); move its files out of model_dir to resume from an "
            "older checkpoint.")
      self.last_good_checkpoint = latest
      logging.info("Resuming from %s at step %d.", latest, int(self.step.numpy()))
      if int(self.step.numpy()) > self.train_steps:
        logging.warning("%s is at step %d, beyond train_steps = %d: nothing to train (was "
                        "train_steps lowered?).", latest, int(self.step.numpy()),
                        self.train_steps)
    else:
      logging.info("No checkpoint in %s: training starts at step 0.", self.model_dir)
    step = int(self.step.numpy())
    if (evaluate_fn and step and self._eval_due(step, eval_interval) and
        not (is_evaluated and is_evaluated(step))):
      logging.info("The evaluation at step %d has no written result (interrupted?): "
                   "running it before training continues.", step)
      evaluate_fn(step)
    # Distributed iterators cannot be checkpointed; continuing the batch order after the
    # batches already trained on makes the resumed run see exactly what an uninterrupted
    # run would.
    start_batch = step if self.skip_consumed_batches else 0
    if callable(dataset) and not isinstance(dataset, tf.data.Dataset):
      dataset = dataset(start_batch)
    elif start_batch:
      dataset = dataset.skip(start_batch)
    dataset = dataset.map(lambda f, l: (self._select_inputs(f), l))
    iterator = iter(distribute(self.strategy, dataset))
    if self._train_step_fn is None:
      self._train_step_fn = self._build_train_step()

    writer = self.summary_writer("train")
    start_step = step
    window = _new_window()
    timed_steps, timed_seconds = 0, 0.0
    while step < self.train_steps:
      if (step + 1) % self.log_interval == 0 or step + 1 == self.train_steps:
        # The rate this step trains at: afterwards the optimizer reports the next step's.
        window["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.optimizer.learning_rate))
      t0 = time.perf_counter()
      features, labels = next(iterator)
      t1 = time.perf_counter()
      loss = float(self._train_step_fn(features, labels).numpy())
      t2 = time.perf_counter()
      step = int(self.step.numpy())
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"Loss is {loss} at step {step}: training stopped. {self._last_good_message()}")
      if step == start_step + 1:
        logging.info("First step (with tracing/compilation) took %.1f s.", t2 - t0)
        if after_first_step is not None:
          after_first_step()
      else:  # Rates, ETA and timings exclude the first step's tracing and compilation.
        timed_steps += 1
        timed_seconds += t2 - t0
        window["timed"] += 1
        window["data"] += t1 - t0
        window["compute"] += t2 - t1
      window["steps"] += 1
      window["loss"] += loss
      at_eval = bool(evaluate_fn and eval_interval and step % eval_interval == 0)
      if step % self.log_interval == 0 or step == self.train_steps:
        self._log_progress(writer, step, window, timed_steps, timed_seconds)
        window = _new_window()
      if step % self.checkpoint_interval == 0 or step == self.train_steps or at_eval:
        path = self._save(manager)
        logging.info("Saved checkpoint %s.", path)
      if evaluate_fn and (at_eval or step == self.train_steps):
        evaluate_fn(step)
    writer.flush()
    return step

  def _eval_due(self, step, eval_interval):
    return step == self.train_steps or bool(eval_interval and step % eval_interval == 0)

  def _log_progress(self, writer, step, window, timed_steps, timed_seconds):
    n = window["steps"]
    timed = max(window["timed"], 1)
    steps_per_s = timed_steps / timed_seconds if timed_seconds > 0 else float("nan")
    eta_s = (self.train_steps - step) / steps_per_s if timed_seconds > 0 else float("nan")
    learning_rate = window["learning_rate"]  # The rate `step` trained at.
    values = {
        "loss": window["loss"] / n,
        "learning_rate": learning_rate,
        "steps_per_second": steps_per_s,
        "clips_per_second": steps_per_s * self.global_batch_size,
        "data_wait_seconds_per_step": window["data"] / timed,
        "compute_seconds_per_step": window["compute"] / timed,
    }
    logging.info(
        "step %d/%d loss %.5f lr %.3g | %.2f steps/s %.1f clips/s ETA %s | "
        "data wait %.3f s/step, compute %.3f s/step", step, self.train_steps,
        values["loss"], learning_rate, steps_per_s, values["clips_per_second"],
        _format_eta(eta_s), values["data_wait_seconds_per_step"],
        values["compute_seconds_per_step"])
    with writer.as_default():
      for name, value in values.items():
        if math.isfinite(value):
          write_scalar(name, value, step)

  def evaluate(self, dataset, aggregation="max", views_per_video=None,
               max_video_id_length=None, progress=None):
    """Scores every view of `dataset`, gathers them from all replicas and combines the views
    of each video.

    Args:
      dataset: finite `tf.data.Dataset` of `(features, labels)` with `features['video_id']`.
      aggregation: 'max' or 'mean' over a video's views.
      views_per_video: the views every video must have (None: all the same number).
      max_video_id_length: the longest video id (code points) to carry through the
        evaluation step (default `MAX_VIDEO_ID_LENGTH`); a longer id is an error.
      progress: optional callable taking the number of views scored so far, after each
        batch (`history.Progress` logs them with an ETA); its `done()` is called at the end.

    Returns:
      `official.evaluation.metrics.VideoScores`.
    """
    def keep_inputs_and_ids(features, labels):
      kept = self._select_inputs(features)
      kept[_ID_CODES] = encode_video_ids(features["video_id"],
                                         max_video_id_length or MAX_VIDEO_ID_LENGTH)
      return kept, labels

    dataset = dataset.map(keep_inputs_and_ids)
    if self._eval_step_fn is None:
      self._eval_step_fn = self._build_eval_step()
    if self.ema is not None:
      self.ema.swap()
    try:
      scores, labels, codes = [], [], []
      for features, batch_labels in distribute(self.strategy, dataset):
        s, l, c = self._eval_step_fn(features, batch_labels)
        scores.append(s.numpy())
        labels.append(l.numpy())
        codes.append(c.numpy())
        if progress is not None:
          progress(sum(len(x) for x in scores))
    finally:
      if self.ema is not None:
        self.ema.swap()
    if progress is not None and hasattr(progress, "done"):
      progress.done()
    if not scores:
      raise ValueError("The evaluation dataset is empty.")
    return metrics_lib.aggregate_views(
        decode_video_ids(np.concatenate(codes)), np.concatenate(scores),
        np.concatenate(labels), method=aggregation, views_per_video=views_per_video)


def distribute(strategy, dataset):
  """`strategy.experimental_distribute_dataset` of global batches, shared out by position.

  Every worker reads the whole stream and keeps its part of each global batch (tf.data's
  `AutoShardPolicy.DATA`), so the workers train on exactly the global batches one process
  would, and a resumed run's `start_batch` means the same on every worker. tf.data's
  default (`AUTO`) shards by file when it finds file readers: in `build_dataset` it found
  them under the per-epoch `flat_map` and gave each worker every other epoch, so a resumed
  run skipped clips. The workers' streams must be in the same order (the runner makes
  multi-worker input pipelines deterministic).

  Args:
    strategy: a `tf.distribute.Strategy`.
    dataset: `tf.data.Dataset` of global batches.

  Returns:
    The strategy's distributed dataset.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _skip_together(grads):
  """Per-replica gradients, all made non-finite when any replica's are (replica context).

  Keras' `LossScaleOptimizer` decides whether to skip a step (and lower the loss scale)
  from the gradients it is given, assuming they are already summed over replicas; here each
  replica passes its own, summed later by the inner optimizer. So Keras looked at the first
  replica only (`MirroredStrategy`: another replica's float16 overflow went into the
  weights) or at each worker's own (`MultiWorkerMirroredStrategy`: one worker skipped, the
  other waited in the gradient all-reduce for ever). With every replica non-finite as soon
  as one is, all skip the step together, as one device would.
  """
  present = [g for g in grads if g is not None]
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
  non_finite_replicas = tf.distribute.get_replica_context().all_reduce(
      tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
  agreed = iter(tf.cond(non_finite_replicas > 0,
                        lambda: [g * tf.constant(float("nan"), g.dtype) for g in present],
                        lambda: list(present)))
  return [None if g is None else next(agreed) for g in grads]


def _new_window():
  return {"steps": 0, "timed": 0, "data": 0.0, "compute": 0.0, "loss": 0.0,
          "learning_rate": float("nan")}


def write_scalar(name, value, step):
  """A TensorBoard scalar (a float32 record under `name` at `step`)."""
  return tf.summary.scalar(name, tf.constant(value, tf.float32), step=step)


def _format_eta(seconds):
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
