"""Per-frame object segmentation maps: the AssembleNet++ object modality (paper §3.3).

A map is a uint8 [H, W] array of ADE-20K class ids: 0 = "other", 1..150 = the 150 ADE-20K
classes in the benchmark's published order. Two sources:

* `Segmenter`: a user-supplied ADE-20K semantic segmentation SavedModel, run over the
  stored frames in batches during preparation. Expected interface (either a
  `serving_default` signature or a callable restored object):
      input  uint8 [B, H, W, 3] RGB frames (the stored, resized frames)
      output one tensor (or a dict holding exactly one, or a key `class_ids` / `scores` /
             `logits`), either
             - integer class ids [B, h, w] in 0..150, or
             - float scores [B, h, w, 151] (argmax = id), or
             - float scores [B, h, w, 150] (ADE-20K without "other"; id = argmax + 1).
      Maps of another spatial size are resized (nearest neighbour) to the frame size.
* `load_map_folder`: precomputed maps, one PNG per source frame, numbered like the
  Charades JPEG release: `<object_maps_dir>/<video_id>/<video_id>-000001.png`, ...
  Stored frame k shows source frame i and takes the map numbered i + 1. A folder that does
  not hold exactly one map per source frame, maps in a lossy format or maps of another
  aspect ratio than the upright frames are refused (counted as missing object maps).
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from data_prep import video as video_lib

NUM_OBJECT_CLASSES = 151
_OUTPUT_KEYS = ("class_ids", "scores", "logits")


def ids_from_output(output, height, width):
  """Segmenter output -> uint8 [B, height, width] class ids (see the module docstring)."""
  output = tf.convert_to_tensor(output)
  if output.dtype.is_floating:
    if output.shape.rank != 4 or output.shape[-1] not in (150, 151):
      raise ValueError("Segmenter float output must be scores [B, h, w, 150 or 151]. "
                       f"Received: {output.shape}")
    ids = tf.argmax(output, axis=-1, output_type=tf.int32)
    if output.shape[-1] == 150:
      ids += 1
  elif output.dtype.is_integer:
    if output.shape.rank != 3:
      raise ValueError(f"Segmenter class-id output must be [B, h, w]. Received: {output.shape}")
    ids = tf.cast(output, tf.int32)
  else:
    raise ValueError(f"Segmenter output must be integer ids or float scores. "
                     f"Received dtype: {output.dtype}")
  lo, hi = int(tf.reduce_min(ids)), int(tf.reduce_max(ids))
  if lo < 0 or hi >= NUM_OBJECT_CLASSES:
    raise ValueError(f"Segmenter class ids must lie in 0..150. Received range {lo}..{hi}")
  if ids.shape[1:3] != (height, width):
    ids = tf.image.resize(ids[..., None], (height, width), method="nearest")[..., 0]
  return tf.cast(ids, tf.uint8).numpy()


class Segmenter:
  """Runs an ADE-20K segmentation SavedModel over frames in batches.

  Args:
    path: SavedModel directory with the interface of the module docstring.
    batch_size: frames per call.
  """

  def __init__(self, path, batch_size=16):
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive. Received: {batch_size}")
    self.path = path
    self.batch_size = batch_size
    self._loaded = tf.saved_model.load(path)
    signatures = getattr(self._loaded, "signatures", {})
    if "serving_default" in signatures:
      self._fn = signatures["serving_default"]
      inputs = self._fn.structured_input_signature[1]
      if len(inputs) != 1:
        raise ValueError(f"Segmenter signature must take one input. Received: {inputs}")
      name = next(iter(inputs))
      spec = inputs[name]
      if spec.dtype != tf.uint8:
        raise ValueError(
            f"Segmenter {path}: its signature must take uint8 [B, H, W, 3] RGB frames "
            f"(0..255; the module docstring). Received: {spec.dtype.name} {spec.shape}. "
            "Wrap the model in a function that converts and scales the frames itself.")
      self._call = lambda x: self._fn(**{name: x})
    elif callable(self._loaded):
      self._call = self._loaded
    else:
      raise ValueError(f"{path} has neither a serving_default signature nor __call__.")

  def _output(self, result):
    if isinstance(result, dict):
      for key in _OUTPUT_KEYS:
        if key in result:
          return result[key]
      if len(result) != 1:
        raise ValueError("Segmenter returned several outputs; name one of "
                         f"{_OUTPUT_KEYS}. Received keys: {sorted(result)}")
      return next(iter(result.values()))
    return result

  def __call__(self, frames):
    """uint8 [T, H, W, 3] -> uint8 class ids [T, H, W]."""
    height, width = frames.shape[1:3]
    maps = []
    for start in range(0, len(frames), self.batch_size):
      batch = tf.constant(frames[start:start + self.batch_size], tf.uint8)
      ids = ids_from_output(self._output(self._call(batch)), height, width)
      if len(ids) != len(batch):  # One map per frame, or the maps drift off their frames.
        raise ValueError(f"Segmenter {self.path} returned {len(ids)} maps for a batch of "
                         f"{len(batch)} frames; it must return one map per input frame.")
      maps.append(ids)
    return np.concatenate(maps)


def load_map_folder(directory, source_indices, num_source_frames, height, width):
  """Precomputed maps for the stored frames -> uint8 [T, height, width].

  The folder must hold one map per source frame, numbered like the Charades JPEG release
  from 000001 (000000 also works as the first number): source frame i takes the map
  numbered `first + i`. A folder with another count or a gap is refused rather than
  stretched over the video (a segmenter that stopped early would otherwise give maps from
  the wrong moments without a word).

  Raises:
    FileNotFoundError: no numbered map in `directory`.
    ValueError: the maps do not number the source frames one to one, or a map is not a
      single-channel PNG with ids in 0..150 of the frames' aspect ratio
      (`check_map_shape`).
  """
  numbered = video_lib.numbered_frames(directory) if os.path.isdir(directory) else []
  numbers, files = [n for n, _ in numbered], [f for _, f in numbered]
  if not files:
    raise FileNotFoundError(f"no numbered object maps in {directory}")
  if len(files) != num_source_frames or numbers[-1] - numbers[0] + 1 != len(files):
    raise ValueError(
        f"{directory}: {len(files)} maps numbered {numbers[0]}..{numbers[-1]} for a video "
        f"of {num_source_frames} source frames; object maps need one map per source frame, "
        "numbered without gaps.")
  maps = []
  for i in np.asarray(source_indices):
    path = files[int(i)]
    if not path.lower().endswith(".png"):
      raise ValueError(f"{path}: object maps must be PNG files. A lossy format (JPEG) "
                       "changes class ids at the edges of objects into other classes' ids.")
    with Image.open(path) as image:
      if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{path}: object map must be single-channel. Received mode "
                         f"{image.mode}")
      ids = np.asarray(image)
      if ids.max() >= NUM_OBJECT_CLASSES:
        raise ValueError(f"{path}: class ids must lie in 0..150. Received max {ids.max()}")
      if ids.shape != (height, width):
        check_map_shape(path, ids.shape, height, width)
        ids = np.asarray(Image.fromarray(ids.astype(np.uint8)).resize(
            (width, height), Image.NEAREST))
      maps.append(ids.astype(np.uint8))
  return np.stack(maps)


def check_map_shape(path, map_shape, height, width):
  """Raises ValueError when a map of `map_shape` (height, width) has another aspect ratio
  than the decoded `height` x `width` frames: maps may have another size, not another
  shape.

  Both sizes are roundings of one picture's: the shapes agree when some height / width
  ratio is within one pixel of both, i.e. the ranges `(h - 1) / (w + 1) .. (h + 1) /
  (w - 1)` of the maps and of the frames overlap. Maps in the coded orientation of a
  rotated phone clip (transposed), or of a cropped picture, would otherwise be stretched
  over the upright frames: ids in the wrong places without a word.
  """
  def ratios(rows, cols):
    return (rows - 1) / (cols + 1), (rows + 1) / max(cols - 1, 0.5)
  map_low, map_high = ratios(*map_shape)
  frame_low, frame_high = ratios(height, width)
  if map_high < frame_low or frame_high < map_low:
    map_height, map_width = map_shape
    raise ValueError(
        f"{path}: object maps of {map_height} x {map_width} (height x width) do not have "
        f"the shape of the decoded frames, {height} x {width} (upright, as a player shows "
        "them). Maps must be made from the upright frames (a rotated phone clip's maps in "
        "its coded orientation are transposed); they are not stretched over the frames.")
