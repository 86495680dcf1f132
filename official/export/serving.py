"""SavedModel export for TF Serving (Keras 3 `ExportArchive`).

`EXPORT_DIR/<version>/` holds:
  saved_model.pb, variables/          signature `serving_default`:
      frames  uint8 [None, T, H, W, 3]  (any H, W: resized in the graph)
      objects uint8 [None, T, H, W]     object class ids below max(K, 151), K the
                                        model's num_object_classes (ADE-20K: 0..150;
                                        object models only)
    -> logits float32 [None, C], probabilities float32 [None, C]
  assets/class_names.txt               one class name per line, in logit order
                                       (also served by the `class_names` signature)
  assets.extra/tf_serving_warmup_requests   PredictionLog records TF Serving replays at load
  assets.extra/view_protocol.json      the experiment's evaluation views (`official.predict`)

Frames go through the evaluation pipeline's geometry (short side resized to S, centre S x S
crop) and `official.data.preprocessing`, so served clips are treated like evaluation views.

The signature checks its inputs before any computation (TF Serving does not hold requests to
the signature's shapes) and fails with `INVALID_ARGUMENT` naming the input: `frames` must be
rank 5 with T frames, 3 channels, a batch of at least one clip and pictures of at least
1 x 1; `objects` rank 4 with the batch size, T, height and width of `frames` and class ids
below max(K, 151), K the model's num_object_classes (ids in [K, 151) count as no class, as
in training on ADE-20K maps; an id above that is an error, as an ADE-20K id above 150 is in
data preparation, rather than a pixel with no class). `docs/serving.md` shows requests.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from official.data import input_pipeline
from official.data import preprocessing
from official.inference import views

SIGNATURE = "serving_default"
CLASS_NAMES_FILE = "class_names.txt"
WARMUP_FILE = "tf_serving_warmup_requests"


def _resize_and_center_crop(images, image_size, method):
  """`[N, H, W, C]` -> `[N, S, S, C]` float32: the evaluation pipeline's geometry with one
  (centre) crop."""
  resized = input_pipeline.short_side_resize(images, image_size, method)
  return input_pipeline.eval_views(resized, image_size, num_crops=1)[0]


def _input_checks(frames, objects, num_frames, num_object_classes=None):
  """Assert ops on the served inputs, each failing with a message naming the input.

  Each check runs after the previous one, so the first failing check is the one reported
  (an unbatched clip gets the rank message, not the frame-count one it also causes). The
  signature's inputs have no static shape: a static rank or size would let Grappler fold
  the checks away, and TF Serving feeds whatever shape the request has.
  """
  frames_layout = f"[batch, {num_frames}, height, width, 3]"
  frames_shape = tf.shape(frames)
  # Padded so that every axis can be read whatever the rank received.
  frames_dims = tf.pad(frames_shape, [[0, 5]])
  checks = [
      lambda: (tf.equal(tf.size(frames_shape), 5), [
          f"Input `frames` must be a batch of clips {frames_layout} (rank 5) of uint8 RGB; "
          "for one clip add a batch axis of 1. Received shape:", frames_shape]),
      lambda: (tf.equal(frames_dims[1], num_frames), [
          f"Input `frames` must have {num_frames} frames per clip (axis 1): the model takes "
          f"{frames_layout}; cut longer videos into clips of {num_frames} frames "
          "(docs/serving.md). Received shape:", frames_shape]),
      lambda: (tf.equal(frames_dims[4], 3), [
          f"Input `frames` must be RGB with 3 channels (axis 4) in {frames_layout}; "
          "convert grey or RGBA frames to RGB. Received shape:", frames_shape]),
      lambda: (tf.reduce_all(frames_dims[:4] > 0), [
          f"Input `frames` must hold at least one clip of pictures at least 1 x 1 pixels "
          f"in {frames_layout}. Received shape:", frames_shape]),
  ]
  if objects is not None:
    objects_shape = tf.shape(objects)
    objects_dims = tf.pad(objects_shape, [[0, 4]])
    checks += [
        lambda: (tf.equal(tf.size(objects_shape), 4), [
            f"Input `objects` must be a batch of class-id maps [batch, {num_frames}, height, "
            "width] (rank 4) of uint8, one map per frame. Received shape:", objects_shape]),
        lambda: (tf.reduce_all(tf.equal(objects_dims[:2], frames_dims[:2])), [
            "Input `objects` must have the batch size and frame count of `frames` (one "
            "class-id map per frame). Received objects shape:", objects_shape,
            "and frames shape:", frames_shape]),
        # Frames and maps are resized and cropped independently: maps of another shape
        # would put their ids on other pixels than the frames'.
        lambda: (tf.reduce_all(tf.equal(objects_dims[2:4], frames_dims[2:4])), [
            "Input `objects` must have the height and width of `frames` (one class id per "
            "pixel; resize the maps to the frames with nearest-neighbour sampling). "
            "Received objects shape:", objects_shape, "and frames shape:", frames_shape]),
        lambda: (tf.reduce_all(objects < num_object_classes), [
            f"Input `objects` must hold object class ids below {num_object_classes} "
            "(ADE-20K maps: 0 = other, 1..150, or the num_object_classes of the model if "
            "larger); map other label sets to those of the segmenter the model was trained "
            "with. Received a maximum id of", tf.reduce_max(objects)]),
    ]
  ops = []
  for check in checks:
    with tf.control_dependencies(ops[-1:]):
      condition, message = check()
      ops.append(tf.debugging.Assert(condition, message, summarize=8))
  return ops


def serving_fn(model, num_frames, image_size, uses_objects, score_activation=tf.nn.sigmoid):
  """The serving computation: uint8 frames (and object ids) -> logits and probabilities.

  Raises (when run):
    tf.errors.InvalidArgumentError: inputs of the wrong rank, frame count or channel count,
      an empty batch or picture, objects that disagree with the frames (batch, frames,
      height, width), object ids not below max(the model's `num_object_classes`, 151)
      (ADE-20K: 0..150); the message names the input and the expected layout.
  """
  # Ids of the prepared ADE-20K maps (0..150) are what a model is trained on, whatever its
  # num_object_classes K (ids >= K count as no class); an id outside both is an error.
  num_object_classes = max(getattr(model, "num_object_classes", 0),
                           preprocessing.NUM_OBJECT_CLASSES)

  def frames_to_rgb(frames):
    batch = tf.shape(frames)[0]
    # [B, T, H, W, 3] -> [B*T, H, W, 3]
    flat = tf.reshape(frames, tf.concat([[-1], tf.shape(frames)[2:]], axis=0))
    flat = _resize_and_center_crop(flat, image_size, "bilinear")
    # [B*T, S, S, 3] -> [B, T, S, S, 3]
    rgb = tf.reshape(flat, [batch, num_frames, image_size, image_size, 3])
    return preprocessing.normalize_frames(rgb)

  def ids_to_objects(objects):
    batch = tf.shape(objects)[0]
    # [B, T, H, W] -> [B*T, H, W, 1]
    flat = tf.reshape(objects, tf.concat([[-1], tf.shape(objects)[2:], [1]], axis=0))
    flat = _resize_and_center_crop(flat, image_size, "nearest")
    # [B*T, S, S, 1] -> [B, T, S, S]
    ids = tf.reshape(tf.cast(flat, tf.uint8), [batch, num_frames, image_size, image_size])
    return ids

  def outputs(inputs):
    logits = tf.cast(model(inputs, training=False), tf.float32)
    return {"logits": logits, "probabilities": score_activation(logits)}

  def checked(frames, objects=None):
    # Nothing runs before the checks pass, so the first error is one of theirs.
    with tf.control_dependencies(_input_checks(frames, objects, num_frames,
                                               num_object_classes)):
      frames = tf.identity(frames)
      objects = None if objects is None else tf.identity(objects)
    # Checked: from here on the layout is known.
    frames.set_shape([None, num_frames, None, None, 3])
    if objects is not None:
      objects.set_shape([None, num_frames, None, None])
    return frames, objects

  if uses_objects:
    def serve(frames, objects):
      frames, objects = checked(frames, objects)
      return outputs({"rgb": frames_to_rgb(frames), "objects": ids_to_objects(objects)})
  else:
    def serve(frames):
      frames, _ = checked(frames)
      return outputs({"rgb": frames_to_rgb(frames)})
  return serve


def input_signature(num_frames, uses_objects):
  """uint8 inputs of any shape: the layout (frames `[B, T, H, W, 3]`, objects
  `[B, T, H, W]`) is checked in the graph, with messages naming the input (`serving_fn`)."""
  del num_frames  # Checked in the graph, not declared (see `_input_checks`).
  signature = [tf.TensorSpec(None, tf.uint8, name="frames")]
  if uses_objects:
    signature.append(tf.TensorSpec(None, tf.uint8, name="objects"))
  return signature


def warmup_inputs(num_frames, image_size, uses_objects, batch_size=1):
  """A deterministic clip (a grey ramp; all-background object map) for warm-up requests."""
  ramp = np.linspace(0, 255, num_frames * image_size * image_size * 3 * batch_size)
  inputs = {"frames": ramp.astype(np.uint8).reshape(batch_size, num_frames, image_size,
                                                   image_size, 3)}
  if uses_objects:
    inputs["objects"] = np.zeros((batch_size, num_frames, image_size, image_size), np.uint8)
  return inputs


def write_warmup_requests(saved_model_dir, inputs, model_name="assemblenet"):
  """`assets.extra/tf_serving_warmup_requests`: one PredictRequest TF Serving replays when
  it loads the model, so the first real request does not pay for graph warm-up."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  extra = os.path.join(saved_model_dir, "assets.extra")
  tf.io.gfile.makedirs(extra)
  path = os.path.join(extra, WARMUP_FILE)
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(log.SerializeToString())
  return path


def next_version(export_dir):
  """A new integer version (seconds since the epoch, above any existing one): TF Serving
  serves the largest."""
  existing = [int(d) for d in tf.io.gfile.listdir(export_dir) if d.strip("/").isdigit()] \
      if tf.io.gfile.isdir(export_dir) else []
  return max([int(time.time())] + [v + 1 for v in existing])


def export_saved_model(model, export_dir, class_names, *, num_frames, image_size,
                       uses_objects, score_activation=tf.nn.sigmoid, version=None,
                       warmup_batch_size=1, view_protocol=None):
  """Writes the serving SavedModel of `model` to `export_dir/<version>/`.

  Args:
    model: the trained keras.Model (weights as they should be served, e.g. EMA).
    export_dir: the TF Serving model base path.
    class_names: names in logit order; stored as `assets/class_names.txt`.
    num_frames, image_size: the model's clip length T and side S.
    uses_objects: add the `objects` input.
    score_activation: logits -> probabilities (sigmoid for multi-label, softmax otherwise).
    version: integer version; default `next_version(export_dir)`.
    warmup_batch_size: clips in the warm-up request.
    view_protocol: the `official.inference.views.ViewProtocol` of the experiment's
      evaluation views, stored as `assets.extra/view_protocol.json` for
      `python -m official.predict --saved_model`; default: one centre clip at the video's
      own frame rate.

  Returns:
    The versioned SavedModel directory.

  Raises:
    ValueError: bad `class_names` (`check_class_names`).
    FileExistsError: the version exists. A failed export leaves no `.staging_<version>`.
  """
  class_names = check_class_names(class_names, model.output_shape[-1])
  num_classes = len(class_names)
  version = next_version(export_dir) if version is None else int(version)
  path = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(path):
    raise FileExistsError(f"Export version {path} already exists.")

  staging = os.path.join(export_dir, f".staging_{version}")
  tf.io.gfile.makedirs(staging)
  try:
    _write_export(model, staging, path, class_names, num_classes, num_frames, image_size,
                  uses_objects, score_activation, warmup_batch_size, view_protocol)
  finally:
    if tf.io.gfile.exists(staging):  # A failed export leaves nothing half-written.
      tf.io.gfile.rmtree(staging)
  return path


def check_class_names(class_names, num_classes):
  """`class_names` as a list of str, one per logit, checked.

  Names key the scores of `official.predict` and the rows of the export's `class_names`
  table, so a repeated name would put one class's score under another's, and a missing or
  extra one would shift every later name onto another class's score.

  Raises:
    ValueError: not `num_classes` names, or a name that is empty (or blank), repeated, or
      holds a newline.
  """
  class_names = [str(n) for n in class_names]
  if len(class_names) != num_classes:
    raise ValueError(f"Expected {num_classes} class names (the model's outputs). Received: "
                     f"{len(class_names)}")
  blank = [i for i, n in enumerate(class_names) if not n.strip()]
  if blank:
    raise ValueError(f"Class names must not be empty. Received an empty name for class "
                     f"{blank[0]}" + (f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""))
  if any("\n" in n for n in class_names):
    raise ValueError(f"Class names must not contain newlines. Received: {class_names}")
  first = {}
  for i, name in enumerate(class_names):
    if name in first:
      raise ValueError(f"Class names must be unique: {name!r} (classes {first[name]} and {i})")
    first[name] = i
  return class_names


def _write_export(model, staging, path, class_names, num_classes, num_frames, image_size,
                  uses_objects, score_activation, warmup_batch_size, view_protocol):
  """Writes the export into `staging`, then renames its model folder to `path`."""
  names_file = os.path.join(staging, CLASS_NAMES_FILE)
  with tf.io.gfile.GFile(names_file, "w") as f:
    f.write("".join(n + "\n" for n in class_names))
  # A table initialised from the file makes the SavedModel copy it into assets/ and keeps
  # the names reachable from the graph (the `class_names` signature).
  table = tf.lookup.StaticHashTable(
      tf.lookup.TextFileInitializer(names_file, tf.int64,
                                    tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                    tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

  archive = keras.export.ExportArchive()
  # The endpoint's variables are tracked automatically; tracking the model object itself
  # would also serialise its Python attributes, which SavedModel does not need.
  archive.track(table)
  archive.add_endpoint(SIGNATURE,
                       serving_fn(model, num_frames, image_size, uses_objects,
                                  score_activation),
                       input_signature=input_signature(num_frames, uses_objects))
  archive.add_endpoint(
      "class_names",
      lambda: {"class_names": table.lookup(tf.range(num_classes, dtype=tf.int64))},
      input_signature=[])
  # Written aside and renamed, so TF Serving (polling export_dir) never sees half a model.
  staged_model = os.path.join(staging, "model")
  archive.write_out(staged_model, verbose=False)
  write_warmup_requests(staged_model, warmup_inputs(num_frames, image_size, uses_objects,
                                                    warmup_batch_size))
  views.write_protocol(staged_model, view_protocol or views.ViewProtocol(num_frames,
                                                                         image_size))
  tf.io.gfile.rename(staged_model, path)
