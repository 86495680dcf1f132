"""One experiment, as gin describes it, run in one of the command line's modes.

`Experiment` is the gin root of `python -m official.train`: gin files bind its arguments
(model and dataset builders, optimiser, steps, evaluation protocol); `run_mode` executes
train / eval / train_and_eval / export with the flags' paths and strategy.
"""

import os

from absl import logging
import gin
import keras
import tensorflow as tf

from official.evaluation import writers
from official.export import serving
from official.inference import views
from official.training import checkpointing
from official.training import losses
from official.training import optimization
from official.training import reproducibility
from official.training import strategies
from official.training import trainer as trainer_lib

MODES = ("train", "eval", "train_and_eval", "export")
EVAL_METRICS = ("map", "mean_class_accuracy")


@gin.configurable
class Experiment:
  """Everything gin decides about a run.

  Args:
    model_fn: `() -> keras.Model` (`@build_model`).
    dataset_fn: `(split=, is_training=, batch_size=, use_objects=, seed=, deterministic=,
      [data_dir=]) -> tf.data.Dataset` (`@build_dataset`).
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
      its data_dir is then passed to `dataset_fn`.
    skip_consumed_batches: on resume, skip the batches already trained on.
  """

  def __init__(self, model_fn=gin.REQUIRED, dataset_fn=gin.REQUIRED, train_split="train",
               eval_split="test", train_batch_size=gin.REQUIRED,
               eval_batch_size=gin.REQUIRED, train_steps=gin.REQUIRED, eval_interval=0,
               checkpoint_interval=1000, max_to_keep=3, log_interval=100,
               loss_kind="sigmoid_cross_entropy", ema_decay=None, mixed_precision=None,
               jit_compile=False, deterministic=False, eval_metric="map",
               view_aggregation="max", views_per_video=None, class_names=None,
               prepare_data_fn=None, skip_consumed_batches=True):
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
    self.dataset_fn = dataset_fn
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


def uses_object_input(model):
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  return builders.uses_object_input(model)


def _input_keys(model):
  return ("rgb", "objects") if uses_object_input(model) else ("rgb",)


class Runner:
  """Builds the strategy, model, optimiser and trainer of an `Experiment` and runs a mode."""

  def __init__(self, experiment, model_dir, strategy, seed=0, flags_text=""):
    self.exp = experiment
    self.model_dir = model_dir
    self.strategy = strategy
    self.seed = seed
    self.flags_text = flags_text
    self.is_chief = strategies.is_chief(strategy)
    self.data_dir = None
    reproducibility.set_seed_and_determinism(seed, experiment.deterministic)
    if experiment.mixed_precision:
      keras.mixed_precision.set_global_policy(experiment.mixed_precision)
    with strategy.scope():
      self.model = experiment.model_fn()
      if strategy.num_replicas_in_sync > 1:
        switched = trainer_lib.use_sync_batch_norm(self.model)
        logging.info("%d replicas: %d batch-norm layers synchronised.",
                     strategy.num_replicas_in_sync, switched)
      schedule = optimization.build_learning_rate(experiment.train_steps)
      optimizer = optimization.build_optimizer(schedule)
      if experiment.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
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

  # Data ----------------------------------------------------------------------------------

  def _prepare_data(self):
    if self.exp.prepare_data_fn is not None and self.data_dir is None:
      self.data_dir = self.exp.prepare_data_fn(model_dir=self.model_dir)

  def _dataset(self, is_training):
    self._prepare_data()
    kwargs = {} if self.data_dir is None else {"data_dir": self.data_dir}
    if uses_object_input(self.model):
      kwargs["objects_format"] = "ids"  # one-hot on the device (Trainer._model_inputs)
    scope = "train" if is_training else "eval"
    with gin.config_scope(scope):
      return self.exp.dataset_fn(
          split=self.exp.train_split if is_training else self.exp.eval_split,
          is_training=is_training,
          batch_size=self.exp.train_batch_size if is_training else self.exp.eval_batch_size,
          use_objects=uses_object_input(self.model), seed=self.seed,
          deterministic=self.exp.deterministic, **kwargs)

  # Modes ---------------------------------------------------------------------------------

  def train(self, with_eval):
    if self.is_chief:
      reproducibility.write_start_files(self.model_dir, self.flags_text)
    keeper = None
    if with_eval:
      keeper = checkpointing.BestCheckpointKeeper(
          self.trainer.checkpoint(), self.model_dir, self.exp.eval_metric)
    eval_writer = self.trainer.summary_writer("eval")

    def evaluate(step):
      record = self._evaluate_and_write(step)
      with eval_writer.as_default():
        for name in ("map", "mean_class_accuracy", "top1"):
          if name in record:
            trainer_lib.write_scalar(name, record[name], step)
      eval_writer.flush()
      if keeper is not None and self.is_chief:
        keeper.maybe_save(step, record[self.exp.eval_metric])
      return record

    def after_first_step():
      if self.is_chief:
        reproducibility.write_operative_config(self.model_dir)

    return self.trainer.train(self._dataset(is_training=True),
                              evaluate_fn=evaluate if with_eval else None,
                              eval_interval=self.exp.eval_interval,
                              after_first_step=after_first_step)

  def _annotated_eval_videos(self):
    """The evaluation split's whole annotated list `[(video_id, [class ids])]`, or None when
    the dataset does not record it (a custom `dataset_fn`, or older prepared data)."""
    try:
      info = self._dataset_info()
    except (ValueError, KeyError, FileNotFoundError) as e:
      logging.warning("Cannot read the evaluation dataset's annotations: %s", e)
      return None
    return info.annotated_videos.get(self.exp.eval_split)

  def _evaluate_and_write(self, step):
    annotated = self._annotated_eval_videos()
    longest_id = max((len(vid) for vid, _ in annotated), default=0) if annotated else 0
    video_scores = self.trainer.evaluate(
        self._dataset(is_training=False), self.exp.view_aggregation,
        self.exp.views_per_video,
        max_video_id_length=max(longest_id, trainer_lib.MAX_VIDEO_ID_LENGTH))
    protocol = {"aggregation": self.exp.view_aggregation,
                "views_per_video": video_scores.views_per_video,
                "split": self.exp.eval_split,
                "weights": "ema" if self.exp.ema_decay else "raw"}
    eval_dir = os.path.join(self.model_dir, "eval")
    if self.is_chief:
      record = writers.write_evaluation(eval_dir, self.exp.eval_metric, video_scores, step,
                                        protocol, annotated_videos=annotated)
    else:
      record = writers.compute_metrics(self.exp.eval_metric, video_scores.labels,
                                       video_scores.scores)
    logging.info("Evaluation at step %d: %s", step, {k: v for k, v in record.items()
                                                     if isinstance(v, float)})
    return record

  def evaluate(self, checkpoint=None):
    path = checkpointing.resolve_checkpoint(self.model_dir, checkpoint)
    step = self.trainer.restore(path)
    return self._evaluate_and_write(step)

  def export(self, export_dir, checkpoint=None):
    path = checkpointing.resolve_checkpoint(self.model_dir, checkpoint)
    self.trainer.restore(path)
    if self.trainer.ema is not None:
      self.trainer.ema.copy_to_model()
    from official.modeling import builders  # pylint: disable=g-import-not-at-top
    spec = builders.model_inputs_spec(self.model)
    num_frames, image_size = spec["rgb"][0][0], spec["rgb"][0][1]
    class_names = self._class_names()
    export_path = serving.export_saved_model(
        self.model, export_dir or os.path.join(self.model_dir, "export"),
        class_names, num_frames=num_frames, image_size=image_size,
        uses_objects=uses_object_input(self.model),
        score_activation=losses.score_activation(self.exp.loss_kind),
        view_protocol=views.protocol_from_gin(num_frames, image_size,
                                              self.exp.view_aggregation, self.data_dir))
    logging.info("Exported %s to %s.", path, export_path)
    return export_path

  def _class_names(self):
    if self.exp.class_names is not None:
      return list(self.exp.class_names)
    # The prepared dataset knows its class names (TFDS metadata).
    return list(self._dataset_info().class_names)

  def _dataset_info(self):
    """`input_pipeline.DatasetInfo` of the dataset `build_dataset` reads."""
    from official.data import input_pipeline  # pylint: disable=g-import-not-at-top
    self._prepare_data()
    name = gin.query_parameter("build_dataset.dataset_name")
    data_dir = self.data_dir
    if data_dir is None:
      try:
        data_dir = gin.query_parameter("build_dataset.data_dir")
      except ValueError:
        data_dir = None
    return input_pipeline.dataset_info(name, data_dir)


def run_mode(mode, model_dir, strategy_name="one_device", tpu=None, seed=0,
             checkpoint=None, export_dir=None, flags_text=""):
  """Runs one mode of the experiment gin has configured; returns its result (final step,
  metrics dict or export path)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
  if mode in ("eval", "export"):  # A bad path fails before any model is built.
    checkpoint = checkpointing.resolve_checkpoint(model_dir, checkpoint)
  strategy = strategies.build_strategy(strategy_name, tpu=tpu)
  logging.info("Strategy %s with %d replica(s).", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  runner = Runner(Experiment(), model_dir, strategy, seed=seed, flags_text=flags_text)
  if mode in ("train", "train_and_eval"):
    return runner.train(with_eval=mode == "train_and_eval")
  if mode == "eval":
    return runner.evaluate(checkpoint)
  return runner.export(export_dir, checkpoint)
