"""The ADE-20K segmenters users can obtain, behind the object-map segmenter contract.

Contract (as `object_maps.Segmenter`): `segmenter(frames)` takes uint8 [T, H, W, 3] RGB
frames and returns uint8 [T, H, W] class ids, 0 = "other", 1..150 = the ADE-20K classes
in the benchmark's order (the AssembleNet++ object modality, paper §3.3).

A segmenter is named by one string (`--segmenter=`, `ObjectMapSource(segmenter=)`):

* `PATH`: a SavedModel with the interface of `data_prep/object_maps.py`.
* `keras_hub:PRESET`: a KerasHub `ImageSegmenter`, by preset name (downloaded by KerasHub,
  e.g. `keras_hub:segformer_b5_ade20k_640`, SegFormer trained on ADE-20K's 150 classes) or
  a local preset directory (`segmenter.save_to_preset(DIR)`). Needs keras-hub
  (requirements-segmenters.txt).
* `deeplab:PATH.pb`: a TF1 frozen inference graph of the DeepLab family, as
  `deeplab/export_model.py` writes it and as the TF DeepLab model zoo publishes its ADE-20K
  checkpoints (`frozen_inference_graph.pb`): input `ImageTensor:0` uint8 [1 or B, H, W, 3],
  output `SemanticPredictions:0` integer ids [B, H', W'] over 151 classes, 0 = other.

A model that predicts 150 classes (ADE-20K without "other", as KerasHub's presets) gets
ids + 1; 151 classes are taken as they are; any other count is refused when the model is
loaded. Maps come back at the frame size (nearest neighbour).
"""

import collections
import os

from google.protobuf import message as protobuf_message
import numpy as np
import tensorflow as tf

from data_prep import object_maps

KERAS_HUB_PREFIX = "keras_hub:"
DEEPLAB_PREFIX = "deeplab:"
ADE20K_CLASS_COUNTS = (150, 151)


def load(spec, batch_size=16):
  """The segmenter named by `spec` (see the module docstring), called on uint8 frames.

  Raises:
    ValueError: `batch_size` < 1; the model is not an ADE-20K segmenter (class count) or
      lacks the expected interface.
    ImportError: `keras_hub:` without keras-hub installed.
  """
  if batch_size < 1:
    raise ValueError(f"segmenter batch_size must be positive. Received: {batch_size}")
  if spec.startswith(KERAS_HUB_PREFIX):
    return KerasHubSegmenter(spec[len(KERAS_HUB_PREFIX):], batch_size)
  if spec.startswith(DEEPLAB_PREFIX):
    return DeepLabFrozenGraph(spec[len(DEEPLAB_PREFIX):], batch_size)
  return object_maps.Segmenter(spec, batch_size)


def record(spec):
  """What the preparation record keeps of a `keras_hub:` or `deeplab:` segmenter (so a
  different model makes prepared data stale): the adapter, the preset name or absolute
  path, and the size of each of its files."""
  if spec.startswith(KERAS_HUB_PREFIX):
    adapter, target = "keras_hub", spec[len(KERAS_HUB_PREFIX):]
  elif spec.startswith(DEEPLAB_PREFIX):
    adapter, target = "deeplab_frozen_graph", spec[len(DEEPLAB_PREFIX):]
  else:
    raise ValueError(f"Not a keras_hub: or deeplab: segmenter. Received: {spec!r}")
  if not os.path.exists(target):  # A KerasHub preset name.
    return {"adapter": adapter, "preset": target}
  path = os.path.abspath(target)
  if os.path.isfile(path):
    return {"adapter": adapter, "path": path, "file_bytes": os.path.getsize(path)}
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                 for name in names)
  return {"adapter": adapter, "path": path,
          "file_bytes": {os.path.relpath(f, path): os.path.getsize(f) for f in files}}


def _check_class_count(num_classes, what):
  if num_classes not in ADE20K_CLASS_COUNTS:
    raise ValueError(
        f"{what} predicts {num_classes} classes; object maps need an ADE-20K segmenter: "
        "150 classes (ADE-20K's, e.g. KerasHub's *_ade20k_* presets; ids are shifted to "
        "1..150) or 151 (0 = other, e.g. TF DeepLab's ADE-20K graphs).")
  return 1 if num_classes == 150 else 0


class KerasHubSegmenter:
  """A KerasHub semantic segmenter (`keras_hub.models.ImageSegmenter`) trained on ADE-20K.

  Each batch of frames is resized (bilinear, whole frame, no crop) to the model's input
  size, passed through the preset's preprocessor (its image converter: scale and offset),
  then the model; the per-pixel argmax of its scores [B, h, w, 150 or 151] is the class id
  (+1 for 150 classes), resized back to the frame size (nearest neighbour).

  Args:
    preset: KerasHub preset name (downloaded by KerasHub) or local preset directory.
    batch_size: frames per model call.

  Raises:
    ImportError: keras-hub is not installed (pip install -r requirements-segmenters.txt).
    ValueError: the model predicts neither 150 nor 151 classes, or the preset has no image
      converter (the input scale is then unknown).
  """

  def __init__(self, preset, batch_size=16):
    try:
      import keras_hub  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("--segmenter=keras_hub:... needs KerasHub: pip install -r "
                        "requirements-segmenters.txt") from e
    self.preset = preset
    self.batch_size = batch_size
    self.model = keras_hub.models.ImageSegmenter.from_preset(preset)
    self._offset = _check_class_count(self.model.outputs[0].shape[-1],
                                      f"KerasHub segmenter {preset!r}")
    preprocessor = getattr(self.model, "preprocessor", None)
    self._converter = getattr(preprocessor, "image_converter", None)
    if self._converter is None:
      # ADE-20K weights expect 0..1 or ImageNet-normalised input; raw 0..255 frames give
      # plausible but wrong maps.
      raise ValueError(
          f"KerasHub segmenter {preset!r} has no image converter (preprocessor), so the "
          "input scale its weights expect is unknown. Save the preset with its "
          "preprocessor (e.g. SegFormerImageSegmenterPreprocessor with the image converter "
          "it was trained with).")
    size = tuple(self.model.inputs[0].shape[1:3])
    if None in size and self._converter.image_size:
      size = tuple(self._converter.image_size)
    # The converter's own resize would crop to its aspect ratio: the maps would then cover
    # the middle of the frame only. Resizing the whole frame first makes it a no-op.
    self._size = None if None in size else size
    self._forward = tf.function(self._scores, reduce_retracing=True)

  def _scores(self, frames):
    x = tf.cast(frames, tf.float32)
    if self._size is not None:
      x = tf.image.resize(x, self._size, method="bilinear")
    x = self._converter(x)
    return self.model(x, training=False)

  def __call__(self, frames):
    """uint8 [T, H, W, 3] -> uint8 class ids [T, H, W]."""
    height, width = frames.shape[1:3]
    maps = []
    for start in range(0, len(frames), self.batch_size):
      scores = self._forward(tf.constant(frames[start:start + self.batch_size], tf.uint8))
      ids = tf.argmax(scores, axis=-1, output_type=tf.int32) + self._offset
      maps.append(object_maps.ids_from_output(ids, height, width))
    return np.concatenate(maps)


class DeepLabFrozenGraph:
  """A TF1 frozen DeepLab inference graph (`deeplab/export_model.py`), run through
  `tf.compat.v1.wrap_function`.

  Input `ImageTensor:0` takes uint8 [B, H, W, 3] (DeepLab's exports fix B = 1: frames then
  go one at a time); output `SemanticPredictions:0` gives integer ids [B, H', W'],
  resized back to the frame size (nearest neighbour). The class count is read from the
  graph (the last dimension of the scores its `ArgMax` reduces) and must be 151 (0 =
  other, the TF DeepLab ADE-20K checkpoints) or 150 (ids + 1).

  Args:
    path: the frozen `GraphDef` file (binary protobuf, usually
      `frozen_inference_graph.pb`).
    batch_size: frames per call when the graph's batch dimension is not fixed.

  Raises:
    ValueError: the file is not a binary GraphDef, lacks DeepLab's tensor names, or its
      scores have neither 150 nor 151 classes, or a count the graph does not say.
  """

  INPUT = "ImageTensor:0"
  OUTPUT = "SemanticPredictions:0"

  def __init__(self, path, batch_size=16):
    self.path = path
    graph_def = tf.compat.v1.GraphDef()
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    except (protobuf_message.DecodeError, tf.errors.NotFoundError) as e:
      raise ValueError(f"deeplab:{path} is not a readable frozen GraphDef (.pb): {e}") from e

    def import_graph():
      tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    try:
      inputs = wrapped.graph.get_tensor_by_name(self.INPUT)
      outputs = wrapped.graph.get_tensor_by_name(self.OUTPUT)
    except KeyError as e:
      raise ValueError(
          f"deeplab:{path} has no tensor {e}; a DeepLab frozen graph takes {self.INPUT} "
          f"(uint8 images) and gives {self.OUTPUT} (class ids).") from e
    self._run = wrapped.prune(inputs, outputs)
    num_classes = _argmax_depth(outputs.op)
    if num_classes is None:
      # 150 and 151 classes need different ids (+1 or not): never guessed.
      raise ValueError(
          f"The class count of DeepLab graph {path} cannot be read (no ArgMax above "
          f"{self.OUTPUT}, or scores without a static last dimension), so 150 classes "
          "(ids + 1) cannot be told from 151 (0 = other). Export the graph with static "
          "shapes, as DeepLab's export_model.py does.")
    self._offset = _check_class_count(num_classes, f"DeepLab graph {path}")
    fixed_batch = inputs.shape[0] if inputs.shape.rank else None
    self.batch_size = min(batch_size, fixed_batch or batch_size)

  def __call__(self, frames):
    """uint8 [T, H, W, 3] -> uint8 class ids [T, H, W]."""
    height, width = frames.shape[1:3]
    maps = []
    for start in range(0, len(frames), self.batch_size):
      ids = tf.cast(self._run(tf.constant(frames[start:start + self.batch_size], tf.uint8)),
                    tf.int32) + self._offset
      maps.append(object_maps.ids_from_output(ids, height, width))
    return np.concatenate(maps)


def _argmax_depth(op):
  """The class count of the scores the nearest `ArgMax` above `op` reduces (its input's
  last static dimension), or None when the graph has none or it is unknown."""
  queue, seen = collections.deque([op]), {op.name}
  while queue:
    op = queue.popleft()
    if op.type == "ArgMax":
      return op.inputs[0].shape[-1] if op.inputs[0].shape.rank else None
    for tensor in op.inputs:
      if tensor.op.name not in seen:
        seen.add(tensor.op.name)
        queue.append(tensor.op)
  return None
