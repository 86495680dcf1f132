"""One experiment, as gin describes it, run in one of the command line's modes.

`Experiment` is the gin root of `python -m official.train`: gin files bind its arguments
(model and dataset builders, optimiser, steps, evaluation protocol); `run_mode` executes
train / eval / train_and_eval / export with the flags' paths and strategy.
"""

import contextlib
import inspect
import json
import os
import re
import time

from absl import logging
import gin
import keras
import tensorflow as tf

from official import errors
from official.evaluation import history
from official.evaluation import writers
from official.export import serving
from official.inference import views
from official.modeling import assemblenet
from official.training import checkpointing
from official.training import model_dir_lock
from official.training import losses
from official.training import optimization
from official.training import reproducibility
from official.training import strategies
from official.training import trainer as trainer_lib

MODES = ("train", "eval", "train_and_eval", "export", "continuous_eval")
TRAINING_MODES = ("train", "train_and_eval")
FINAL_EVAL_DIR = "final_eval"
EVAL_METRICS = ("map", "mean_class_accuracy")


@gin.configurable
class Experiment:
  """Everything gin decides about a run.

  Args:
    model_fn: `() -> keras.Model` (`@build_model`).
    input_fn: `() -> input_pipeline.VideoInput` (`@VideoInput`), called once when the
      run first needs its data; or any object with the same `dataset(split, is_training,
      batch_size, use_objects, seed, deterministic, start_batch, data_dir)` method (the
      checks of the dataset and classes need `dataset_name` and `info`).
    train_split, eval_split: dataset splits.
    train_batch_size: global training batch (split across replicas).
    eval_batch_size: global evaluation batch, in views.
    train_steps: optimiser steps.
    eval_interval: steps between evaluations in train_and_eval (0: only at the end).
    checkpoint_interval: steps between checkpoints.
    max_to_keep: checkpoints kept for resuming.
    log_interval: steps between progress logs.
    loss_kind: `build_loss` kind; also picks the score activation (sigmoid / softmax).
    ema_decay: keep and evaluate/export an exponential moving average of the weights.
    mixed_precision: None, 'mixed_float16' (with loss scaling) or 'mixed_bfloat16'.
    jit_compile: XLA-compile the forward and backward pass.
    deterministic: deterministic TF ops and input order (reproducible, slower).
    eval_metric: 'map' (Charades) or 'mean_class_accuracy' (Toyota Smarthome; also top-1).
    view_aggregation: 'max' or 'mean' over a video's views.
    views_per_video: views each video must have in evaluation (None: all equal).
    class_names: names for the export; default: the prepared dataset's.
    prepare_data_fn: optional `(model_dir) -> data_dir` run first (self-contained runs);
      its data_dir is then the input's.
    skip_consumed_batches: on resume, continue the training data order where the
      interrupted run stopped (cheaply, before decoding; see `build_dataset(start_batch=)`)
      instead of starting it again.
    init_checkpoint: fine-tuning: a checkpoint prefix or training directory of another
      run whose weights a training run starts from (only when `model_dir` has no
      checkpoint yet; a resumed run continues from its own). See
      `checkpointing.initialize_from_checkpoint`; what was loaded is logged and written to
      `model_dir/init_checkpoint.json`.
    init_checkpoint_modules: 'backbone' (the head starts afresh, e.g. Kinetics -> Charades)
      or 'all' (the head too where its shapes agree).
    final_eval_split: protocol hygiene for datasets with a validation split (Toyota
      Smarthome): `eval_split` ('validation') drives the periodic evaluations and `best/`,
      and after training `train_and_eval` evaluates the best checkpoint once on this split
      ('test'), written apart in `MODEL_DIR/final_eval/` (never used to select anything).
      None: no final evaluation (Charades has no official validation split).

  Raises:
    errors.ConfigError: a value of the wrong type or range, naming its binding.
  """

  def __init__(self, model_fn=gin.REQUIRED, input_fn=gin.REQUIRED, train_split="train",
               eval_split="test", train_batch_size=gin.REQUIRED,
               eval_batch_size=gin.REQUIRED, train_steps=gin.REQUIRED, eval_interval=0,
               checkpoint_interval=1000, max_to_keep=3, log_interval=100,
               loss_kind="sigmoid_cross_entropy", ema_decay=None, mixed_precision=None,
               jit_compile=False, deterministic=False, eval_metric="map",
               view_aggregation="max", views_per_video=None, class_names=None,
               prepare_data_fn=None, skip_consumed_batches=True, init_checkpoint=None,
               init_checkpoint_modules="all", final_eval_split=None):
    for name, value, minimum in (
        ("train_batch_size", train_batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
        ("train_steps", train_steps, 1), ("eval_interval", eval_interval, 0),
        ("checkpoint_interval", checkpoint_interval, 1), ("max_to_keep", max_to_keep, 1),
        ("log_interval", log_interval, 1)):
      errors.check_int(f"Experiment.{name}", value, minimum)
    errors.check_int("Experiment.views_per_video", views_per_video, allow_none=True)
    for name, value in (("jit_compile", jit_compile), ("deterministic", deterministic),
                        ("skip_consumed_batches", skip_consumed_batches)):
      errors.check_bool(f"Experiment.{name}", value)
    if init_checkpoint_modules not in checkpointing.INIT_MODULES:
      raise errors.ConfigError(
          f"Experiment.init_checkpoint_modules must be one of {checkpointing.INIT_MODULES}. "
          f"Received: {init_checkpoint_modules!r}")
    if final_eval_split is not None and (not isinstance(final_eval_split, str) or
                                         not final_eval_split.strip()):
      raise errors.ConfigError(
          "Experiment.final_eval_split must be a split name such as 'test', or None. "
          f"Received: {final_eval_split!r}")
    if init_checkpoint is not None and not isinstance(init_checkpoint, str):
      raise errors.ConfigError(
          "Experiment.init_checkpoint must be a checkpoint path (a string) or None. "
          f"Received: {init_checkpoint!r}")
    if eval_metric not in EVAL_METRICS:
      raise ValueError(f"eval_metric must be one of {EVAL_METRICS}. Received: "
                       f"{eval_metric!r}")
    if mixed_precision not in (None, "mixed_float16", "mixed_bfloat16"):
      raise ValueError("mixed_precision must be None, 'mixed_float16' or 'mixed_bfloat16'. "
                       f"Received: {mixed_precision!r}")
    if jit_compile and deterministic:
      # TF's op determinism has no XLA form of some gradients the networks need
      # (MaxPoolGrad of the fusion's pooling): it would fail at the first training step.
      raise ValueError("Experiment.deterministic = True cannot be combined with "
                       "Experiment.jit_compile = True (XLA has no deterministic MaxPool "
                       "gradient); set one of them to False.")
    self.model_fn = model_fn
    self.input_fn = input_fn
    self.train_split = train_split
    self.eval_split = eval_split
    self.train_batch_size = train_batch_size
    self.eval_batch_size = eval_batch_size
    self.train_steps = train_steps
    self.eval_interval = eval_interval
    self.checkpoint_interval = checkpoint_interval
    self.max_to_keep = max_to_keep
    self.log_interval = log_interval
    self.loss_kind = loss_kind
    self.ema_decay = ema_decay
    self.mixed_precision = mixed_precision
    self.jit_compile = jit_compile
    self.deterministic = deterministic
    self.eval_metric = eval_metric
    self.view_aggregation = view_aggregation
    self.views_per_video = views_per_video
    self.class_names = class_names
    self.prepare_data_fn = prepare_data_fn
    self.skip_consumed_batches = skip_consumed_batches
    self.init_checkpoint = init_checkpoint or None
    self.init_checkpoint_modules = init_checkpoint_modules
    if final_eval_split is not None and final_eval_split == eval_split:
      raise errors.ConfigError(
          f"Experiment.final_eval_split = {final_eval_split!r} is also the eval_split that "
          "selects the best checkpoint; evaluate the test split once, apart: set eval_split "
          "to the validation split.")
    self.final_eval_split = final_eval_split


def _input_keys(model):
  return ("rgb", "objects") if assemblenet.uses_objects(model) else ("rgb",)


class Runner:
  """Builds the strategy, model, optimiser and trainer of an `Experiment` and runs a mode."""

  def __init__(self, experiment, model_dir, strategy, seed=0, flags_text="", data_dir=None,
               initialize=False, video_input=None):
    self.exp = experiment
    self.model_dir = model_dir
    self.strategy = strategy
    self.seed = seed
    self.flags_text = flags_text
    self.is_chief = strategies.is_chief(strategy)
    self.data_dir = data_dir
    self._input = video_input
    reproducibility.set_seed_and_determinism(seed, experiment.deterministic)
    policy = keras.mixed_precision.global_policy()
    if experiment.mixed_precision:
      keras.mixed_precision.set_global_policy(experiment.mixed_precision)
    with strategy.scope():
      try:
        self.model = experiment.model_fn()
      finally:
        # The layers keep their policy; nothing built later may depend on the global one.
        keras.mixed_precision.set_global_policy(policy)
      if strategy.num_replicas_in_sync > 1:
        switched = trainer_lib.use_sync_batch_norm(self.model)
        logging.info("%d replicas: %d batch-norm layers synchronised.",
                     strategy.num_replicas_in_sync, switched)
      num_object_classes = getattr(self.model, "num_object_classes", None)
      if (assemblenet.uses_objects(self.model) and num_object_classes is not None and
          num_object_classes < 151):
        logging.warning(
            "build_model.num_object_classes = %d: ids %d..150 of the prepared ADE-20K "
            "object maps count as no class (the object stem's one-hot has %d channels).",
            num_object_classes, num_object_classes, num_object_classes)
      if initialize:
        self._initialize_from_checkpoint()
      schedule = optimization.build_learning_rate(experiment.train_steps)
      optimizer = optimization.build_optimizer(schedule)
      if experiment.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    replicas = strategy.num_replicas_in_sync
    if (initialize and experiment.jit_compile and replicas > 1 and  # training modes
        not isinstance(strategy, tf.distribute.TPUStrategy)):
      raise errors.ConfigError(
          f"Experiment.jit_compile = True with the {replicas} replicas of --strategy: the "
          "XLA-compiled forward and backward pass would hold the synchronised batch norm's "
          "cross-replica all-reduce, which TensorFlow cannot run there. Set "
          "Experiment.jit_compile = False, or train on one replica.")
    if experiment.train_batch_size % replicas:
      raise errors.ConfigError(
          f"Experiment.train_batch_size = {experiment.train_batch_size} does not divide over "
          f"the {replicas} replicas of --strategy: use a multiple of {replicas} (the "
          "global batch is split evenly).")
    self.trainer = trainer_lib.Trainer(
        strategy, self.model, optimizer, losses.build_loss(experiment.loss_kind), model_dir,
        global_batch_size=experiment.train_batch_size, train_steps=experiment.train_steps,
        input_keys=_input_keys(self.model),
        score_activation=losses.score_activation(experiment.loss_kind),
        ema_decay=experiment.ema_decay, checkpoint_interval=experiment.checkpoint_interval,
        max_to_keep=experiment.max_to_keep, log_interval=experiment.log_interval,
        jit_compile=experiment.jit_compile,
        skip_consumed_batches=experiment.skip_consumed_batches, is_chief=self.is_chief,
        worker_id=strategies.task_id(strategy))

  def check_final_eval_split(self):
    """Raises `errors.ConfigError` when `final_eval_split` names no split of the dataset
    (checked before training, not after it)."""
    split = self.exp.final_eval_split
    if split is None or not hasattr(self.input, "info"):
      return
    splits = self._dataset_info().split_sizes
    if split.split("[", 1)[0] not in splits:
      raise errors.ConfigError(
          f"Experiment.final_eval_split = {split!r} is not a split of "
          f"{self.input.dataset_name} (splits: {sorted(splits)}).")

  def _initialize_from_checkpoint(self):
    """Fine-tuning: `Experiment.init_checkpoint` into a model_dir without checkpoints
    (before the trainer copies the weights into an EMA)."""
    if self.exp.init_checkpoint is None:
      return
    if checkpointing.latest_checkpoint(self.model_dir):
      logging.info("%s has checkpoints: the run resumes from them, and "
                   "Experiment.init_checkpoint (%s) is not loaded.", self.model_dir,
                   self.exp.init_checkpoint)
      return
    try:
      report = checkpointing.initialize_from_checkpoint(
          self.model, self.exp.init_checkpoint, self.exp.init_checkpoint_modules)
    except ValueError as e:  # A checkpoint of another network: say so in one line.
      raise errors.ConfigError(f"Experiment.init_checkpoint: {e}") from e
    logging.info("Initialised %d of %d variables from %s (init_checkpoint_modules=%r); "
                 "not loaded: %s", len(report["loaded"]),
                 len(report["loaded"]) + len(report["not_loaded"]), report["checkpoint"],
                 self.exp.init_checkpoint_modules,
                 "; ".join(f"{p} ({why})" for p, why in report["not_loaded"].items()) or
                 "none")
    if self.is_chief:
      tf.io.gfile.makedirs(self.model_dir)
      writers.write_json(os.path.join(self.model_dir, checkpointing.INIT_REPORT_FILE),
                         report)

  # Data ----------------------------------------------------------------------------------

  def _prepare_data(self):
    if self.exp.prepare_data_fn is not None and self.data_dir is None:
      self.data_dir = _prepare(self.exp, self.model_dir)

  @property
  def input(self):
    """The experiment's input (`VideoInput`), made on first use: its settings are what the
    runner reads, never gin's bindings."""
    if self._input is None:
      self._input = self.exp.input_fn()
    return self._input

  def _dataset(self, is_training, start_batch=0, split=None):
    self._prepare_data()
    kwargs = {} if self.data_dir is None else {"data_dir": self.data_dir}
    skip = 0
    if start_batch:
      if "start_batch" in inspect.signature(self.input.dataset).parameters:
        # The pipeline starts its (seed, epoch)-determined order at this batch, skipping
        # the batches already trained on before decoding anything.
        kwargs["start_batch"] = start_batch
      else:
        logging.warning("The dataset function takes no start_batch: skipping %d batches "
                        "by producing them (slow for long runs).", start_batch)
        skip = start_batch
    deterministic = self.exp.deterministic
    workers = strategies.num_workers(self.strategy)
    if not deterministic and workers > 1:
      # Each worker reads the whole dataset and keeps its share of it by position
      # (tf.data's DATA auto-sharding): the workers' streams must be in the same order, or
      # some clips and views are used twice and others never.
      logging.info("Experiment.deterministic = False, but the %d workers read the data in "
                   "one order: deterministic input pipelines.", workers)
      deterministic = True
    dataset = self.input.dataset(
        split=split or (self.exp.train_split if is_training else self.exp.eval_split),
        is_training=is_training,
        batch_size=self.exp.train_batch_size if is_training else self.exp.eval_batch_size,
        use_objects=assemblenet.uses_objects(self.model), seed=self.seed,
        deterministic=deterministic, **kwargs)
    return dataset.skip(skip) if skip else dataset

  # Modes ---------------------------------------------------------------------------------

  def train(self, with_eval):
    if self.exp.class_names is not None:
      self._class_names()  # Checked now, not at the export after training.
    if self.is_chief:
      self._keep_changed_config(reproducibility.CONFIG_FILE, gin.config_str())
      self._keep_changed_config(reproducibility.FLAGS_FILE, self.flags_text,
                                what="command-line flags")
      reproducibility.write_start_files(self.model_dir, self.flags_text)
    keeper = None
    if with_eval:
      keeper = self._best_keeper()
    eval_writer = self.trainer.summary_writer("eval")

    def evaluate(step):
      record = self._evaluate_and_write(step)
      self._after_evaluation(step, record, eval_writer, keeper)
      return record

    def after_first_step():
      if self.is_chief:
        self._keep_changed_config(reproducibility.OPERATIVE_CONFIG_FILE,
                                  gin.operative_config_str())
        reproducibility.write_operative_config(self.model_dir)

    step = self.trainer.train(
        lambda start_batch: self._dataset(is_training=True, start_batch=start_batch),
        evaluate_fn=evaluate if with_eval else None, eval_interval=self.exp.eval_interval,
        after_first_step=after_first_step, is_evaluated=self._is_evaluated)
    if with_eval:
      self._final_evaluation()
    return step

  def _keep_changed_config(self, name, text, what="gin configuration"):
    """A resumed run whose gin config (or flags) differs from the one saved in model_dir:
    keeps the earlier file as `<stem>-<step><ext>` (the checkpoint step it was used up to)
    instead of overwriting it, with a warning.

    An existing `<stem>-<step><ext>` newer than the checkpoint is not replaced: the file
    saved now was then written by a start that trained no checkpoint past `step` (it
    failed, e.g. on a model that did not match the checkpoint, or was killed first), so the
    kept one is still the record of the run up to `step`. One older than the checkpoint
    records an earlier run whose checkpoints were moved out; it is renamed
    `<stem>-<step>.earlier<ext>`. A changed `--seed` gets its own warning: it changes the
    order of the training data from the resumed step on.
    """
    path = os.path.join(self.model_dir, name)
    if not tf.io.gfile.exists(path):
      return
    with tf.io.gfile.GFile(path) as f:
      saved = f.read()
    if saved == text or not saved.strip():
      return
    latest = checkpointing.latest_checkpoint(self.model_dir)
    if latest is None:
      return  # Nothing trained with it.
    step = os.path.basename(latest).rsplit("-", 1)[1]
    stem, extension = os.path.splitext(name)
    kept = os.path.join(self.model_dir, f"{stem}-{step}{extension}")
    seeds = [re.findall(r"^--seed=(.*)$", t, re.MULTILINE) for t in (saved, text)]
    if seeds[0] != seeds[1]:
      logging.warning(
          "This run's --seed=%s differs from the --seed=%s that %s was trained with up to "
          "step %s: the training data from step %s on come in another order than in an "
          "uninterrupted run.", ",".join(seeds[1]) or "(none)", ",".join(seeds[0]) or "(none)",
          self.model_dir, step, step)
    if tf.io.gfile.exists(kept):
      if (tf.io.gfile.stat(kept).mtime_nsec >=
          tf.io.gfile.stat(latest + ".index").mtime_nsec):
        logging.warning(
            "%s in %s was written by a start that trained no checkpoint past step %s; %s "
            "(the record of the run up to step %s) is kept, and %s now holds this run's.",
            name, self.model_dir, step, kept, step, name)
        return
      # Older than the checkpoint: the record of an earlier run whose checkpoints were
      # moved out before this model_dir was trained again. Kept aside, not replaced.
      earlier = writers.free_name(os.path.join(self.model_dir, f"{stem}-{step}.earlier"),
                                  extension)
      tf.io.gfile.rename(kept, earlier)
      logging.warning("%s is older than %s: it records an earlier run, and is kept as %s.",
                      kept, latest, earlier)
    tf.io.gfile.copy(path, kept)
    changed = sorted(set(saved.splitlines()) ^ set(text.splitlines()))
    changed = [line for line in changed if line.strip() and not line.startswith("#")]
    logging.warning(
        "This run's %s differs from the one %s was trained with up to step %s (%d line(s) "
        "differ, e.g. %s); the earlier %s is kept as %s.", what, self.model_dir, step,
        len(changed), changed[:4], name, kept)

  @property
  def eval_dir(self):
    return os.path.join(self.model_dir, "eval")

  def _best_keeper(self):
    """`best/`, reconciled with the evaluation history (chief only): see
    `checkpointing.BestCheckpointKeeper`."""
    return checkpointing.BestCheckpointKeeper(
        self.trainer.checkpoint(), self.model_dir, self.exp.eval_metric,
        evaluated=history.read_records(self.eval_dir) if self.is_chief else None)

  def _is_evaluated(self, step):
    return step in history.evaluated_steps(self.eval_dir)

  def _after_evaluation(self, step, record, writer, keeper=None, checkpoint=None):
    """TensorBoard scalars, the best checkpoint, then the history record: written last, it
    marks the evaluation of `step` complete (a resumed run redoes one without it)."""
    history.write_scalars(writer, record, step)
    if keeper is not None and self.is_chief:
      keeper.maybe_save(step, record[self.exp.eval_metric])
    if self.is_chief:
      history.write_record(self.eval_dir, record, step, checkpoint)

  def _eval_progress(self, split):
    """Progress of one evaluation, with the total when the split's size is known."""
    views = self.exp.views_per_video
    if views is None:
      views = getattr(self.input, "views_per_video", None)
    total = None
    try:
      videos = self._dataset_info().split_sizes.get(split)
      total = videos * views if videos and views else None
    except (ValueError, KeyError, TypeError, AttributeError):
      pass  # An input without `info`: progress without a total.
    return history.Progress(total, views)

  def _annotated_eval_videos(self, split):
    """The evaluation split's whole annotated list `[(video_id, [class ids])]`, or None when
    the dataset does not record it (a custom input, or older prepared data)."""
    try:
      info = self._dataset_info()
    except (ValueError, KeyError, FileNotFoundError, AttributeError) as e:
      logging.warning("Cannot read the evaluation dataset's annotations: %s", e)
      return None
    return info.annotated_videos.get(split)

  def _evaluate_and_write(self, step, split=None, eval_dir=None):
    split = split or self.exp.eval_split
    annotated = self._annotated_eval_videos(split)
    longest_id = max((len(vid) for vid, _ in annotated), default=0) if annotated else 0
    video_scores = self.trainer.evaluate(
        self._dataset(is_training=False, split=split), self.exp.view_aggregation,
        self.exp.views_per_video,
        max_video_id_length=max(longest_id, trainer_lib.MAX_VIDEO_ID_LENGTH),
        progress=self._eval_progress(split))
    protocol = {"aggregation": self.exp.view_aggregation,
                "views_per_video": video_scores.views_per_video,
                "split": split,
                "weights": "ema" if self.exp.ema_decay else "raw"}
    eval_dir = eval_dir or self.eval_dir
    if self.is_chief:
      record = writers.write_evaluation(eval_dir, self.exp.eval_metric, video_scores, step,
                                        protocol, annotated_videos=annotated)
    else:
      record = writers.compute_metrics(self.exp.eval_metric, video_scores.labels,
                                       video_scores.scores)
    logging.info("Evaluation at step %d: %s (split %r)", step,
                 {k: v for k, v in record.items() if isinstance(v, float)}, split)
    return record

  @property
  def final_eval_dir(self):
    return os.path.join(self.model_dir, FINAL_EVAL_DIR)

  def _final_evaluation(self):
    """The best checkpoint (by `eval_split`) evaluated once on `final_eval_split`, into
    `final_eval/`; a rerun after it is written does not evaluate again. Returns its record,
    or None without a final split."""
    split = self.exp.final_eval_split
    if split is None:
      return None
    best = os.path.join(self.model_dir, checkpointing.BEST_DIR)
    path = checkpointing.latest_checkpoint(best, checkpointing.BEST_NAME)
    path = path or checkpointing.latest_checkpoint(self.model_dir)
    step = int(os.path.basename(path).rsplit("-", 1)[1])
    done = history.read_records(self.final_eval_dir)
    if step in done:
      logging.info("The best checkpoint (step %d) was already evaluated once on the %r "
                   "split (%s): not again.", step, split, self.final_eval_dir)
      return done[step]
    if done:
      # Training was extended and a later checkpoint became the best: its number is the
      # run's result, and the earlier look at the held-out split is said, not hidden.
      logging.warning(
          "The %r split was evaluated before, for the best checkpoint of step(s) %s; the "
          "best is now step %d (training was extended), so it is evaluated on %r too. "
          "The held-out split has now been evaluated %d times for this run: report that "
          "with the number (all of them: %s).", split, sorted(done), step, split,
          len(done) + 1, history.HISTORY_DIR)
    self.trainer.restore(path)
    logging.info("Final evaluation: %s (best on %r) on the %r split, once.", path,
                 self.exp.eval_split, split)
    record = self._evaluate_and_write(step, split=split, eval_dir=self.final_eval_dir)
    record = dict(record, selected_on=self.exp.eval_split,
                  held_out_evaluations=len(done) + 1)
    history.write_scalars(self.trainer.summary_writer(FINAL_EVAL_DIR), record, step)
    if self.is_chief:
      writers.write_json(os.path.join(self.final_eval_dir, writers.METRICS_FILE), record)
      history.write_record(self.final_eval_dir, record, step, path)
    return record

  def evaluate(self, checkpoint=None, writer=None, keeper=None):
    """Evaluates one checkpoint (default: the latest); writes the metrics, TensorBoard
    scalars (`MODEL_DIR/eval`) and the history record of its step."""
    path = checkpointing.resolve_checkpoint(self.model_dir, checkpoint)
    step = self.trainer.restore(path)
    record = self._evaluate_and_write(step)
    self._after_evaluation(step, record, writer or self.trainer.summary_writer("eval"),
                           keeper, checkpoint=path)
    return record

  def continuous_evaluate(self, timeout_s=3600.0, poll_s=10.0):
    """Watches `model_dir` and evaluates each new checkpoint once (oldest first), until the
    one at `train_steps` is evaluated or no new checkpoint came for `timeout_s` seconds.

    Safe beside a `--mode=train` job: it takes no lock, reads only the checkpoints the
    state file lists (complete ones), and skips (counted, logged) a checkpoint that the
    training job deleted (`max_to_keep`) before it was read. A checkpoint written and
    deleted between two polls is never seen: from `checkpoint_interval` it is known to have
    existed, and reported (`missed`, with a warning). Keeps `best/` (run training in
    `--mode=train`, so that only this job writes `eval/` and `best/`). Prepares data (a
    `prepare_data_fn`) only when it first evaluates: by then the training job, which
    prepares it too, has finished its preparation.

    Returns:
      `{"evaluated": [steps], "skipped": [steps], "missed": [steps], "last": metrics of
      the last or None}`.
    """
    writer = self.trainer.summary_writer("eval")
    keeper = self._best_keeper()
    evaluated, skipped, missed, last = [], [], [], None
    seen = set()
    # Checkpoints deleted before the first poll are not this job's to report.
    watched_from = None
    data_checked = False
    waited_since = time.monotonic()
    while True:
      done = set(history.evaluated_steps(self.eval_dir)) | set(skipped)
      listed = _listed_checkpoints(self.model_dir)
      seen.update(step for step, _ in listed)
      if watched_from is None:
        watched_from = min((step for step, _ in listed), default=0)
      unseen = self._unseen_checkpoints(seen, done | set(missed), watched_from)
      if unseen:
        missed.extend(unseen)
        logging.warning(
            "Continuous evaluation: %d checkpoint(s) (steps %s) were written and deleted "
            "(max_to_keep=%d) between two polls: never evaluated. Raise "
            "Experiment.max_to_keep or checkpoint_interval to evaluate every one.",
            len(unseen), steps_text(unseen), self.exp.max_to_keep)
      pending = [(step, path) for step, path in listed if step not in done]
      if not pending:
        if self.exp.train_steps in done:
          logging.info("Continuous evaluation: the final step %d is evaluated; done.",
                       self.exp.train_steps)
          break
        if time.monotonic() - waited_since > timeout_s:
          logging.info("Continuous evaluation: no new checkpoint in %s for %.0f s; "
                       "stopping.", self.model_dir, timeout_s)
          break
        time.sleep(poll_s)
        continue
      step, path = pending[0]
      if not data_checked:
        self.check_num_classes()
        self.check_eval_metric()
        self.check_final_eval_split()
        data_checked = True
      try:
        last = self.evaluate(path, writer, keeper)
        evaluated.append(step)
      except (checkpointing.CheckpointError, FileNotFoundError, tf.errors.NotFoundError):
        # Pruned by the training job since the listing: resolving it raises
        # FileNotFoundError, reading it CheckpointError or NotFoundError.
        if tf.io.gfile.exists(path + ".index"):
          raise  # Damaged, not deleted: the message says what to do.
        skipped.append(step)
        logging.warning("Continuous evaluation: %s was deleted (max_to_keep) before it "
                        "was evaluated; skipped (%d so far).", path, len(skipped))
      waited_since = time.monotonic()
    if self.exp.train_steps in set(history.evaluated_steps(self.eval_dir)):
      self._final_evaluation()  # best/ is this job's: it owns the held-out evaluation.
    return {"evaluated": evaluated, "skipped": skipped, "missed": missed, "last": last}

  def _unseen_checkpoints(self, seen, accounted, watched_from):
    """Steps after `watched_from` and up to the newest seen checkpoint at which training
    wrote one (every `checkpoint_interval` steps, and the last step) that no poll saw."""
    if not seen:
      return []
    newest = max(seen)
    interval = self.exp.checkpoint_interval
    written = set(range((watched_from // interval + 1) * interval, newest + 1, interval))
    if watched_from < self.exp.train_steps <= newest:
      written.add(self.exp.train_steps)
    return sorted(written - seen - accounted)

  def export(self, export_dir, checkpoint=None):
    """Exports the checkpoint for TF Serving; returns the version folder (None on the
    other workers of a cluster: the chief alone writes, so there is one version).

    Raises:
      RuntimeError: on the other workers, when the chief's export failed.
    """
    return strategies.run_on_chief(
        self.strategy, lambda: self._export(export_dir, checkpoint),
        "The chief worker's export failed (its log says why); nothing was exported.")

  def _export(self, export_dir, checkpoint):
    path = checkpointing.resolve_checkpoint(self.model_dir, checkpoint)
    self.trainer.restore(path)
    if self.trainer.ema is not None:
      self.trainer.ema.copy_to_model()
    from official.modeling import builders  # pylint: disable=g-import-not-at-top
    spec = builders.model_inputs_spec(self.model)
    num_frames, image_size = spec["rgb"][0][0], spec["rgb"][0][1]
    class_names = self._class_names()
    export_dir = export_dir or os.path.join(self.model_dir, "export")
    with _exclusive_exports(export_dir):
      export_path = serving.export_saved_model(
          self.model, export_dir, class_names, num_frames=num_frames,
          image_size=image_size, uses_objects=assemblenet.uses_objects(self.model),
          score_activation=losses.score_activation(self.exp.loss_kind),
          view_protocol=views.protocol_from_input(self.input, num_frames, image_size,
                                                  self.exp.view_aggregation, self.data_dir))
    logging.info("Exported %s to %s.", path, export_path)
    return export_path

  def _class_names(self):
    """Names in logit order, checked (`serving.check_class_names`): `Experiment.class_names`,
    else the prepared dataset's (TFDS metadata).

    Raises:
      errors.ConfigError: naming where the names came from.
    """
    num_classes = int(self.model.output_shape[-1])
    if self.exp.class_names is not None:
      source, names = "Experiment.class_names", self.exp.class_names
    else:
      source = f"the class names of the prepared dataset {self.input.dataset_name}"
      names = self._dataset_info().class_names
    try:
      return serving.check_class_names(names, num_classes)
    except ValueError as e:
      raise errors.ConfigError(f"{source}: {e}") from e

  def _dataset_info(self):
    """`input_pipeline.DatasetInfo` of the dataset the input reads.

    Raises:
      AttributeError: an input without `info` (not a `VideoInput`).
    """
    self._prepare_data()
    return self.input.info(self.data_dir)

  def check_eval_metric(self):
    """Raises `errors.ConfigError` when `Experiment.eval_metric` cannot score the dataset's
    labels: accuracy over multi-label data (Charades), which would arg-max each video's
    actions to its lowest class id. Warns when mAP scores single-label data (Toyota
    Smarthome, whose papers' metric is mean per-class accuracy)."""
    if not hasattr(self.input, "info"):
      return  # Not a VideoInput: nothing to compare with.
    info = self._dataset_info()
    name = self.input.dataset_name
    if info.multi_label and self.exp.eval_metric != "map":
      raise errors.ConfigError(
          f"Experiment.eval_metric = {self.exp.eval_metric!r}, but the dataset {name} is "
          "multi-label (several actions per video, or none): accuracy cannot score it. "
          "Set Experiment.eval_metric = 'map' (Charades' metric).")
    if not info.multi_label and self.exp.eval_metric == "map":
      logging.warning(
          "Experiment.eval_metric = 'map' on the single-label dataset %s: the papers report "
          "mean per-class accuracy for it (Experiment.eval_metric = "
          "'mean_class_accuracy', as gin/experiments/smarthome_*.gin set).", name)

  def check_num_classes(self):
    """Raises `errors.ConfigError` when the model's class count is not the dataset's."""
    if not hasattr(self.input, "info"):
      return  # Not a VideoInput: nothing to compare with.
    expected = self._dataset_info().num_classes
    got = int(self.model.outputs[0].shape[-1])
    if got != expected:
      raise errors.ConfigError(
          f"The model has {got} classes (build_model.num_classes, usually NUM_CLASSES in "
          f"the gin file) but the dataset {self.input.dataset_name} has {expected}: set "
          f"NUM_CLASSES = {expected}.")


def _listed_checkpoints(model_dir):
  """[(step, prefix)] of the complete checkpoints the state file lists, oldest first."""
  try:
    state = tf.train.get_checkpoint_state(model_dir)
  except (ValueError, tf.errors.OpError):
    state = None  # Empty or cut short.
  if state is None:
    # Lost or unreadable (the training job rewrites it when it resumes): the files
    # themselves; an index file is written last, so a listed checkpoint is complete.
    files = checkpointing.checkpoint_files(model_dir)
    if files:
      logging.log_first_n(logging.WARNING, "The checkpoint state file of %s is missing or "
                          "unreadable: watching the ckpt-N files themselves.", 1, model_dir)
    return files
  listed = []
  for path in state.all_model_checkpoint_paths:
    path = path if os.path.isabs(path) or "://" in path else os.path.join(model_dir, path)
    name = os.path.basename(path)
    if name.startswith(checkpointing.CHECKPOINT_NAME + "-"):
      listed.append((int(name.rsplit("-", 1)[1]), path))
  return sorted(listed)


def _prepare(experiment, model_dir):
  """Runs `experiment.prepare_data_fn`; returns its data_dir.

  Raises:
    RuntimeError: the preparation failed (another one of the same data_dir is running, ...),
      with its message.
  """
  try:
    return experiment.prepare_data_fn(model_dir=model_dir)
  except ValueError as e:
    raise RuntimeError(f"Preparing the data of model_dir {model_dir} failed: {e}") from e


def _prepare_chief_first(experiment, model_dir, strategy):
  """`_prepare` on the chief, then on the other workers of a multi-worker cluster, which
  find the chief's data prepared (each worker preparing into the shared model_dir at once
  stopped all but one on the preparation lock). Returns the data_dir.

  Raises:
    RuntimeError: this worker's preparation failed, or the chief's did (other workers).
  """
  data_dir = strategies.run_on_chief(
      strategy, lambda: _prepare(experiment, model_dir),
      "The chief worker failed to prepare the data (its log says why); this worker stops "
      "with it. Fix that and rerun every worker.")
  return data_dir if strategies.is_chief(strategy) else _prepare(experiment, model_dir)


def _acquired(lock):
  lock.acquire()
  return lock


@contextlib.contextmanager
def _exclusive_exports(export_dir):
  """One export at a time into `export_dir` (an `flock` of it, local file systems); while it
  is held, a `.staging_<version>` folder there was left by a killed export: removed."""
  if "://" in export_dir:
    yield
    return
  tf.io.gfile.makedirs(export_dir)
  with model_dir_lock.directory_flock(export_dir):
    for name in tf.io.gfile.listdir(export_dir):
      if name.rstrip("/").startswith(".staging_"):
        logging.warning("Removing %s, left by an interrupted export.",
                        os.path.join(export_dir, name))
        tf.io.gfile.rmtree(os.path.join(export_dir, name.rstrip("/")))
    yield


def steps_text(steps, most=10):
  """`[5, 10]`, or `25 steps: [5, 10, 15, ..., 125]` for long lists."""
  steps = list(steps)
  if len(steps) <= most:
    return str(steps)
  return f"{len(steps)} steps: [{', '.join(map(str, steps[:3]))}, ..., {steps[-1]}]"


def _check_data(video_input, experiment, data_dir, mode):
  """Checks that the dataset the input will read is prepared (unless not needed, or the
  input is not a `VideoInput`)."""
  if mode == "export" and experiment.class_names is not None:
    return
  if hasattr(video_input, "check_prepared"):
    video_input.check_prepared(data_dir)


def run_mode(mode, model_dir, strategy_name="one_device", tpu=None, seed=0,
             checkpoint=None, export_dir=None, flags_text="", eval_timeout_s=3600.0):
  """Runs one mode of the experiment gin has configured; returns its result (final step,
  metrics dict, export path, or the continuous evaluation's summary).

  Training modes hold the model_dir's lock (`model_dir_lock`) for the whole run. The
  process-wide settings the run makes (seeds, op determinism, the dtype policy) are undone
  when it returns or raises (`reproducibility.preserved_process_state`).

  Raises:
    errors.ConfigError: a gin value of the wrong type, or classes that disagree.
    input_pipeline.DataNotPreparedError: the dataset is not prepared (checked first).
    checkpointing.CheckpointError, model_dir_lock.ModelDirLockedError, FileNotFoundError,
    trainer.NonFiniteLossError: see those.
  """
  with reproducibility.preserved_process_state():
    return _run_mode(mode, model_dir, strategy_name, tpu, seed, checkpoint, export_dir,
                     flags_text, eval_timeout_s)


def _run_mode(mode, model_dir, strategy_name, tpu, seed, checkpoint, export_dir,
              flags_text, eval_timeout_s):
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
  experiment = Experiment()
  video_input = experiment.input_fn()
  if mode in ("eval", "export"):  # A bad path fails before any model is built.
    checkpoint = checkpointing.resolve_checkpoint(model_dir, checkpoint)
  if experiment.prepare_data_fn is None:  # Unprepared data fails before anything is built.
    _check_data(video_input, experiment, None, mode)
  strategy = strategies.build_strategy(strategy_name, tpu=tpu)
  logging.info("Strategy %s with %d replica(s).", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  workers = strategies.num_workers(strategy)
  if mode == "continuous_eval" and workers > 1:
    # Each worker would poll for checkpoints on its own and pick its own next step: one
    # all-gather would join the scores of two checkpoints, recorded as one step's mAP.
    raise errors.ConfigError(
        f"--mode=continuous_eval runs on one worker; this cluster has {workers}. Run the "
        "evaluating job with --strategy=one_device or --strategy=mirrored.")
  lock = None
  if mode in TRAINING_MODES:
    # The chief holds the lock before anyone goes on; if it cannot, every worker stops
    # with a message (not later, in a collective the chief never joins).
    lock = strategies.run_on_chief(
        strategy, lambda: _acquired(model_dir_lock.ModelDirLock(model_dir, mode)),
        "The chief worker could not start training (its log says why, e.g. the model_dir "
        "is in use by another run); this worker stops with it.")
  try:
    data_dir = None
    # Under the lock: it writes into model_dir. Continuous evaluation prepares when it first
    # evaluates (after the training job beside it has prepared the same data).
    if experiment.prepare_data_fn is not None and mode != "continuous_eval":
      data_dir = _prepare_chief_first(experiment, model_dir, strategy)
      _check_data(video_input, experiment, data_dir, mode)
    runner = Runner(experiment, model_dir, strategy, seed=seed, flags_text=flags_text,
                    data_dir=data_dir, initialize=mode in TRAINING_MODES,
                    video_input=video_input)
    if mode not in ("continuous_eval", "export") or (
        mode == "export" and experiment.class_names is None):
      runner.check_num_classes()
    if mode not in ("continuous_eval", "export"):
      # Continuous evaluation checks at its first checkpoint, once the data is prepared.
      runner.check_eval_metric()
    if mode == "train_and_eval":  # continuous_eval: at its first checkpoint, as above
      runner.check_final_eval_split()
    elif mode == "train" and experiment.final_eval_split is not None:
      logging.warning(
          "Experiment.final_eval_split = %r: the held-out evaluation of the best checkpoint "
          "is run by the evaluating job (--mode=continuous_eval beside this one, or "
          "--mode=train_and_eval), not by --mode=train.", experiment.final_eval_split)
    if mode in TRAINING_MODES:
      return runner.train(with_eval=mode == "train_and_eval")
    if mode == "eval":
      return runner.evaluate(checkpoint)
    if mode == "continuous_eval":
      return runner.continuous_evaluate(eval_timeout_s)
    return runner.export(export_dir, checkpoint)
  finally:
    if lock is not None:
      lock.release()


def output_summary(mode, model_dir, result, export_dir=None):
  """Lines saying where a finished mode's outputs are (printed by `official.train`)."""
  eval_dir = os.path.join(model_dir, "eval")
  lines = []
  if mode in TRAINING_MODES:
    latest = checkpointing.latest_checkpoint(model_dir)
    lines.append(f"Checkpoints: {latest} (latest); TensorBoard: {model_dir}")
  if mode in ("train_and_eval", "eval", "continuous_eval"):
    lines.append(f"Metrics: {os.path.join(eval_dir, writers.METRICS_FILE)} (latest), "
                 f"{os.path.join(eval_dir, history.HISTORY_DIR)}/ (every evaluated step)")
    submission = os.path.join(eval_dir, writers.SUBMISSION_FILE)
    if tf.io.gfile.exists(submission):
      lines.append(f"Charades submission file: {submission}")
    lines.append(f"Per-video scores: {os.path.join(eval_dir, writers.PER_VIDEO_FILE)}")
  if mode in ("train_and_eval", "continuous_eval"):
    best = os.path.join(model_dir, checkpointing.BEST_DIR, checkpointing.BEST_JSON)
    if tf.io.gfile.exists(best):
      lines.append(f"Best checkpoint: {best}")
  final = os.path.join(model_dir, FINAL_EVAL_DIR, writers.METRICS_FILE)
  if mode in ("train_and_eval", "continuous_eval") and tf.io.gfile.exists(final):
    with tf.io.gfile.GFile(final) as f:
      record = json.load(f)
    split = record.get("view_protocol", {}).get("split")
    lines.append(f"Final evaluation (best checkpoint of step {record.get('step')}, chosen "
                 f"on {record.get('selected_on')!r}, evaluated on {split!r} "
                 f"{record.get('held_out_evaluations', 1)} time(s)): {final}")
  if mode == "continuous_eval":
    lines.append(f"Evaluated steps: {result['evaluated']}; skipped (deleted before "
                 f"evaluation): {result['skipped']}; missed (written and deleted between "
                 f"polls): {steps_text(result.get('missed', []))}")
  if mode == "export":
    lines.append(f"SavedModel: {result or 'written by the chief worker'}")
  return lines
