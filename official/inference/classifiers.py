"""Video classifiers for `official.predict`: an exported SavedModel, or a training directory
with its gin files (the checkpoint restored as `--mode=export` restores it, EMA weights
included).

Both take the same decoded video and clips and return per-view probabilities, so the two
give the same scores on the same views (up to float rounding between the Keras model and
the saved graph). With more than one crop per clip they differ slightly: the Keras model
gets the evaluation crops of the frames resized to S, the signature the same squares cut
at decoded size and resized by it (`views.serving_views`); up to 3e-3 in probability
measured with a sharpened tiny model, up to 2e-2 per view with tiny_smoke (softmax, 3
crops; docs/serving.md).
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from official.export import serving
from official.inference import views as views_lib


# Where a self-contained experiment's `prepare_data_fn` writes its dataset by default
# (`official/training/synthetic_data.py`).
SELF_CONTAINED_DATA_DIR = "synthetic_data"


def latest_version(export_dir):
  """`export_dir` itself when it holds a SavedModel, else its largest integer version.

  Raises:
    FileNotFoundError: naming `export_dir`, when neither exists.
  """
  if tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    return export_dir
  versions = [int(d.strip("/")) for d in tf.io.gfile.listdir(export_dir)
              if d.strip("/").isdigit()] if tf.io.gfile.isdir(export_dir) else []
  if not versions:
    raise FileNotFoundError(
        f"--saved_model={export_dir} holds no SavedModel (saved_model.pb) and no numbered "
        "version folder; pass the export directory written by `official.train "
        "--mode=export` (MODEL_DIR/export) or one of its versions.")
  return os.path.join(export_dir, str(max(versions)))


def gin_files_of(model_dir, gin_files):
  """`gin_files`, or the `config.gin` training wrote into `model_dir` (the whole config as
  parsed at start) when none is given.

  Raises:
    ValueError: neither exists.
  """
  if gin_files:
    return list(gin_files)
  from official.training import reproducibility  # pylint: disable=g-import-not-at-top
  config = os.path.join(model_dir, reproducibility.CONFIG_FILE)
  if not tf.io.gfile.exists(config):
    raise ValueError(f"--model_dir={model_dir} has no {reproducibility.CONFIG_FILE} (written "
                     "when training starts); pass the experiment's --gin_file.")
  logging.info("Gin configuration: %s", config)
  return [config]


def _warmup_clip_shape(saved_model_dir):
  """(T, S) of the export's warm-up clip."""
  path = os.path.join(saved_model_dir, "assets.extra", serving.WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    raise ValueError(f"{saved_model_dir} has neither {views_lib.PROTOCOL_FILE} nor a warm-up "
                     "request to read the clip length from; re-export it with "
                     "`official.train --mode=export`.")
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  record = next(iter(tf.data.TFRecordDataset(path))).numpy()
  request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
  shape = [d.size for d in request.inputs["frames"].tensor_shape.dim]
  return shape[1], shape[2]


def _clip_batches(indices, batch_size, num_crops):
  """Consecutive groups of clips `[c, T]` with about `batch_size` views (at least one
  clip): views are cut per batch, never for a whole long video at once."""
  step = max(1, batch_size // num_crops)
  for start in range(0, len(indices), step):
    yield indices[start:start + step]


class SavedModelClassifier:
  """Scores views through an export's `serving_default` signature.

  Args:
    export_dir: an export base path (its largest version is used) or a version folder.
    protocol_overrides: `ViewProtocol` fields to change (None values are ignored). Exports
      without `view_protocol.json` (older ones) get one centre clip at the file's frame
      rate unless overridden.
    batch_size: views per signature call.

  Attributes:
    path, class_names (list of str), protocol (`ViewProtocol`), uses_objects (bool).
  """

  def __init__(self, export_dir, protocol_overrides=None, batch_size=8):
    self.path = latest_version(export_dir)
    self.batch_size = batch_size
    loaded = tf.saved_model.load(self.path)
    self._signature = loaded.signatures[serving.SIGNATURE]
    self.uses_objects = "objects" in self._signature.structured_input_signature[1]
    names = loaded.signatures["class_names"]()["class_names"].numpy()
    try:  # Exports written before the names were checked may repeat one.
      self.class_names = serving.check_class_names([n.decode("utf-8") for n in names],
                                                   len(names))
    except ValueError as e:
      raise ValueError(f"{self.path}: {e}. Re-export the model with distinct class names "
                       "(Experiment.class_names).") from e
    protocol = views_lib.read_protocol(self.path)
    if protocol is None:
      # Exported before the protocol file existed: the warm-up request has the model's
      # clip shape [1, T, S, S, 3].
      protocol = views_lib.ViewProtocol(*_warmup_clip_shape(self.path))
      logging.warning("%s has no %s: one centre clip at the file's frame rate unless flags "
                      "say otherwise.", self.path, views_lib.PROTOCOL_FILE)
    self.protocol = protocol.replace(**(protocol_overrides or {}))

  def view_outputs(self, frames, maps, indices):
    """(probabilities, logits), each float32 `[C * num_crops, num_classes]`, of the clips
    `indices` `[C, T]`."""
    probabilities, logits = [], []
    for clips in _clip_batches(indices, self.batch_size, self.protocol.num_crops):
      inputs = views_lib.serving_views(frames, maps, clips, self.protocol)
      batch = {k: tf.constant(v) for k, v in inputs.items()}
      outputs = self._signature(**batch)
      probabilities.append(outputs["probabilities"].numpy())
      logits.append(outputs["logits"].numpy())
    return np.concatenate(probabilities), np.concatenate(logits)

  def view_scores(self, frames, maps, indices):
    """Probabilities `[C * num_crops, num_classes]` of the clips `indices` `[C, T]`."""
    return self.view_outputs(frames, maps, indices)[0]


class CheckpointClassifier:
  """Scores views with the Keras model of a training directory.

  Parses the experiment's gin files and bindings (global gin state), builds the model,
  restores the checkpoint (EMA weights when the experiment keeps them) and reads the view
  protocol from the experiment's evaluation settings.

  Args:
    model_dir: the training directory.
    gin_files, gin_bindings: the experiment's gin configuration.
    checkpoint: a checkpoint prefix or directory (default: the latest in `model_dir`).
    protocol_overrides: `ViewProtocol` fields to change (None values are ignored).
    batch_size: views per model call.

  Attributes:
    model, class_names, protocol, uses_objects, checkpoint, score_activation.

  Raises:
    FileNotFoundError: no checkpoint.
  """

  def __init__(self, model_dir, gin_files, gin_bindings=(), checkpoint=None,
               protocol_overrides=None, batch_size=8):
    # pylint: disable=g-import-not-at-top
    from official import gin_flags
    from official.modeling import assemblenet
    from official.modeling import builders
    from official.training import checkpointing
    from official.training import experiment
    from official.training import losses
    from official.training import reproducibility
    from official.training import strategies
    # pylint: enable=g-import-not-at-top
    self.batch_size = batch_size
    self.checkpoint = checkpointing.resolve_checkpoint(model_dir, checkpoint)
    # Data paths may stay %gin.REQUIRED: classifying files needs no dataset.
    gin_flags.parse_gin(list(gin_files), list(gin_bindings), finalize=False)
    exp = experiment.Experiment()
    # The Runner seeds the process (and may turn op determinism on) for training; a
    # classifier restores its weights, so it leaves the process as it found it.
    with reproducibility.preserved_process_state():
      self._runner = experiment.Runner(exp, model_dir,
                                       strategies.build_strategy("one_device"))
    trainer = self._runner.trainer
    trainer.restore(self.checkpoint)
    if trainer.ema is not None:
      trainer.ema.copy_to_model()
    self.model = self._runner.model
    self.uses_objects = assemblenet.uses_objects(self.model)
    self.score_activation = losses.score_activation(exp.loss_kind)
    self._class_names = None
    spec = builders.model_inputs_spec(self.model)["rgb"][0]
    protocol = views_lib.protocol_from_input(self._video_input(), spec[0], spec[1],
                                             exp.view_aggregation, self._runner.data_dir)
    self.protocol = protocol.replace(**(protocol_overrides or {}))
    self._forward = tf.function(self._logits, reduce_retracing=True)

  @property
  def class_names(self):
    """Names in logit order: `Experiment.class_names`, else the prepared dataset's, else
    codes `class_<i>` (with a warning).

    Never prepares data: a self-contained experiment (`Experiment.prepare_data_fn`, e.g.
    tiny_smoke, demo) has its dataset read where its training run prepared it,
    `model_dir/synthetic_data` unless `VideoInput.data_dir` says otherwise.
    """
    if self._class_names is None:
      self._class_names = self._find_class_names()
    return self._class_names

  def _find_class_names(self):
    from official.data import input_pipeline  # pylint: disable=g-import-not-at-top
    exp = self._runner.exp
    num_classes = int(self.model.output_shape[-1])
    if exp.class_names is not None:
      try:
        return serving.check_class_names(exp.class_names, num_classes)
      except ValueError as e:
        raise ValueError(f"Experiment.class_names: {e}") from e
    cause = "VideoInput.dataset_name is not bound"
    video_input = self._video_input()
    name = getattr(video_input, "dataset_name", None)
    if name is not None:
      data_dir = video_input.resolve_data_dir(self._runner.data_dir)
      if data_dir is None and exp.prepare_data_fn is not None:
        data_dir = os.path.join(self._runner.model_dir, SELF_CONTAINED_DATA_DIR)
      try:
        input_pipeline.check_prepared(name, data_dir)
        names = list(input_pipeline.dataset_info(name, data_dir).class_names)
      except (ValueError, TypeError, OSError, AssertionError) as e:
        cause = f"{type(e).__name__}: {e}"
      else:
        try:
          return serving.check_class_names(names, num_classes)
        except ValueError as e:
          cause = f"{name} under {data_dir}: {e}"
    logging.warning(
        "No class names (%s): scores are named class_0 .. class_%d. Set "
        "Experiment.class_names, or point VideoInput.data_dir at the prepared dataset "
        "(--gin_param=\"VideoInput.data_dir='D'\").", cause, num_classes - 1)
    return [f"class_{i}" for i in range(num_classes)]

  def _video_input(self):
    """The experiment's `VideoInput`, or None when gin does not configure one (classifying
    files needs no dataset; its view settings then take `build_dataset`'s defaults)."""
    try:
      return self._runner.input
    except RuntimeError as e:  # gin: a required VideoInput binding is missing.
      logging.warning("No VideoInput configured (%s): default evaluation views.", e)
      return None

  def evaluation_dataset(self):
    """The experiment's evaluation `tf.data.Dataset` (`Experiment.eval_split`), as
    `--mode=eval` reads it: `(features with 'video_id', labels)` batches of views."""
    return self._runner._dataset(is_training=False)  # pylint: disable=protected-access

  def _logits(self, inputs):
    return tf.cast(self.model(inputs, training=False), tf.float32)

  def model_inputs(self, frames, maps, indices):
    """The model's inputs (see `views.model_views`) of the clips `indices` `[C, T]`, in
    batches of about `batch_size` views (whole clips), in view order."""
    for clips in _clip_batches(indices, self.batch_size, self.protocol.num_crops):
      yield views_lib.model_views(frames, maps, clips, self.protocol)

  def view_outputs(self, frames, maps, indices):
    """(probabilities, logits), each float32 `[C * num_crops, num_classes]`, of the clips
    `indices` `[C, T]`."""
    logits = np.concatenate([self._forward(batch).numpy()
                             for batch in self.model_inputs(frames, maps, indices)])
    return self.score_activation(logits).numpy(), logits

  def view_scores(self, frames, maps, indices):
    """Probabilities `[C * num_crops, num_classes]` of the clips `indices` `[C, T]`."""
    return self.view_outputs(frames, maps, indices)[0]
