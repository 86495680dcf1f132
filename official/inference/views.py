"""The evaluation views of a video file, as the data side and the evaluation pipeline make
them, for `official.predict` and `official.tools.extract_features`.

A video file is decoded the way data preparation decodes it for the experiment's dataset
(`data_prep.video.read_video` at the dataset config's frame rate and short side: upright,
frames picked by time), so stored frame k shows time `k / fps` s. Two settings of a
dataset config that keep the source as it is are bounded here (`decode_settings`):

- `fps=None` (keep every frame) decodes at the stream's average frame rate instead. For a
  constant-rate file that is the same frames; for a variable-rate one (phones, screen
  recorders) frames are picked by time, so that frame k does show time `k / fps` s and the
  timeline's seconds are true (every frame once would put frame k at a different time).
- `short_side=None` (keep the size) decodes at short side S, the views' side, when the
  picture's short side is more than `FULL_SIZE_LIMIT` x S: the views are resized to S
  anyway, and a full-size decode holds the whole video at full resolution (1.4 GB for 2 s
  of 1080p). The crops are then the evaluation crops (the resize to S is the identity),
  but the pixels are the decoder's area-weighted downscale instead of the evaluation
  pipeline's bilinear resize of full-size frames: scores differ slightly from what
  evaluation would give on the full-size frames (up to 1e-2 in probability with one crop,
  measured with a sharpened tiny model on 270p to 480p clips). Smaller pictures (a
  dataset stored near the model's size, as the synthetic one) are decoded at full size:
  exactly evaluation.

Views are those of the evaluation pipeline (`official.data.input_pipeline`): `num_clips`
clips of T frames `frame_stride` apart with evenly spaced starts (`eval_clip_indices`,
looping short videos), each resized to short side S and cut into `num_crops` S x S crops
along the long side (`short_side_resize`, `eval_views`); view `c * num_crops + k` is crop k
of clip c. The only difference from evaluation is that frames are not JPEG-compressed in
between.

The protocol travels with an export (`assets.extra/view_protocol.json`), so a SavedModel
predicts with the views its experiment evaluated on.
"""

import dataclasses
import inspect
import json
import math
import os
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from official.data import input_pipeline
from official.data import preprocessing

PROTOCOL_FILE = "view_protocol.json"
# With a protocol's short_side None, pictures whose short side exceeds this many times the
# views' side S are decoded at short side S (see the module docstring).
FULL_SIZE_LIMIT = 2
AGGREGATIONS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class ViewProtocol:
  """How a video file becomes the model's views.

  Attributes:
    num_frames: T, frames per clip.
    image_size: S, the side of a view.
    frame_stride: stored frames between consecutive frames of a clip.
    num_clips: clips per video, evenly spaced in time.
    num_crops: S x S crops per clip, evenly spaced along the long side.
    aggregation: 'max' or 'mean' over a video's views.
    fps: frame rate frames are decoded at (None: the file's own rate, as a dataset config
      with `fps=None` stores them).
    short_side: short side frames are decoded at (None: the file's size), before the
      views' resize to S.
  """
  num_frames: int
  image_size: int
  frame_stride: int = 1
  num_clips: int = 1
  num_crops: int = 1
  aggregation: str = "max"
  fps: Optional[float] = None
  short_side: Optional[int] = None

  def __post_init__(self):
    for name in ("num_frames", "image_size", "frame_stride", "num_clips", "num_crops"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ViewProtocol.{name} must be a positive int. Received: {value!r}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"ViewProtocol.aggregation must be one of {AGGREGATIONS}. "
                       f"Received: {self.aggregation!r}")
    if self.fps is not None and not self.fps > 0:
      raise ValueError(f"ViewProtocol.fps must be positive or None. Received: {self.fps!r}")

  @property
  def views_per_video(self):
    return self.num_clips * self.num_crops

  def replace(self, **changes):
    """A copy with the non-None `changes` applied."""
    return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text):
    return cls(**json.loads(text))


def write_protocol(saved_model_dir, protocol):
  """Writes `saved_model_dir/assets.extra/view_protocol.json`; returns its path."""
  extra = os.path.join(saved_model_dir, "assets.extra")
  tf.io.gfile.makedirs(extra)
  path = os.path.join(extra, PROTOCOL_FILE)
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(protocol.to_json() + "\n")
  return path


def read_protocol(saved_model_dir):
  """The export's `ViewProtocol`, or None when it has none (exported before it existed).

  Raises:
    ValueError: naming the file, when it is not a JSON object of `ViewProtocol` fields. A key
      this version does not know is an error rather than ignored: it may change how views
      are cut (an export written by a newer version), and ignoring it would score other
      views without a word.
  """
  path = os.path.join(saved_model_dir, "assets.extra", PROTOCOL_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  known = [field.name for field in dataclasses.fields(ViewProtocol)]
  try:
    fields = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from e
  if not isinstance(fields, dict):
    raise ValueError(f"{path} must hold a JSON object of view settings {known}. Received: "
                     f"{text.strip()[:200]!r}")
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"{path} has unknown key(s) {unknown}; this version knows {known}. The "
                     "export may come from a newer version of the package: predict with "
                     "that version, or pass the views yourself (--fps, --num_clips, ...) "
                     "after removing the key(s).")
  missing = sorted(name for name in ("num_frames", "image_size") if name not in fields)
  if missing:
    raise ValueError(f"{path} lacks the key(s) {missing}.")
  try:
    return ViewProtocol(**fields)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


def protocol_from_input(video_input, num_frames, image_size, aggregation, data_dir=None):
  """The evaluation views of an experiment's input.

  Args:
    video_input: the experiment's `input_pipeline.VideoInput` (None, or an input without
      its attributes: `build_dataset`'s defaults).
    num_frames, image_size: the model's T and S.
    aggregation: the experiment's `view_aggregation`.
    data_dir: TFDS data_dir of the experiment's dataset (only its config is read).

  Returns:
    A `ViewProtocol` with the input's `frame_stride`, `num_clips`, `num_crops` and the
    dataset config's `fps` and `short_side`.
  """
  defaults = {name: parameter.default for name, parameter in
              inspect.signature(input_pipeline.build_dataset).parameters.items()}
  value = lambda name: int(getattr(video_input, name, defaults[name]))
  dataset_name = getattr(video_input, "dataset_name", None)
  fps = short_side = None
  if dataset_name:
    if data_dir is None:
      data_dir = getattr(video_input, "data_dir", None)
    config = input_pipeline.load_builder(dataset_name, data_dir).builder_config
    fps, short_side = getattr(config, "fps", None), getattr(config, "short_side", None)
  return ViewProtocol(num_frames=int(num_frames), image_size=int(image_size),
                      frame_stride=value("frame_stride"), num_clips=value("num_clips"),
                      num_crops=value("num_crops"), aggregation=aggregation,
                      fps=None if fps is None else float(fps), short_side=short_side)


@dataclasses.dataclass
class Video:
  """A decoded video file.

  Attributes:
    frames: uint8 `[N, H, W, 3]`, upright, stored frame k shows time `k / fps` s.
    source_indices: int64 `[N]`, the source frame each stored frame shows.
    num_source_frames: frames in the file.
    fps: frame rate of `frames` (frames per second).
    duration: seconds the video lasts.
  """
  frames: np.ndarray
  source_indices: np.ndarray
  num_source_frames: int
  fps: float
  duration: float


def _stream_rate_and_short_side(path):
  """(average frame rate, displayed short side) of `path`'s video stream from its header,
  or (None, None) when it cannot be read (`read_video` then says why)."""
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(os.fspath(path)) as container:
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      height, width = stream.codec_context.height, stream.codec_context.width
      sar = stream.sample_aspect_ratio
  except (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError):
    return None, None
  if sar and sar > 0:  # The decoder stretches the width by it; a rotation keeps the sides.
    width = round(width * sar)
  short = min(height, width)
  # The rate stays an exact Fraction (30000/1001): frame k of a constant-rate file is then
  # on screen at exactly the stored time k / rate, not a float's rounding away from it.
  return (rate or None), (short if short > 0 else None)


def decode_settings(path, protocol):
  """(fps, short_side) `decode` passes to `read_video`: the protocol's, with `fps=None` ->
  the stream's average rate and `short_side=None` -> S for a picture whose short side is
  more than `FULL_SIZE_LIMIT` x S (see the module docstring)."""
  fps, short_side = protocol.fps, protocol.short_side
  if fps is None or short_side is None:
    rate, source_short = _stream_rate_and_short_side(path)
    if fps is None:
      fps = rate
    if short_side is None and source_short is not None and (
        source_short > FULL_SIZE_LIMIT * protocol.image_size):
      short_side = protocol.image_size
  return fps, short_side


def decode(path, protocol):
  """Decodes `path` as data preparation would for the protocol's dataset (with the bounds
  of `decode_settings`): frame k shows time `k / fps` s.

  Raises:
    data_prep.video.VideoReadError: the file is missing, truncated, corrupt or holds no
      decodable frame.
  """
  from data_prep import video as video_lib  # pylint: disable=g-import-not-at-top
  decode_fps, short_side = decode_settings(path, protocol)
  decoded = video_lib.read_video(path, decode_fps, short_side)
  # (frames, source_indices, num_source_frames, source_fps[, duration]): a tuple or the
  # NamedTuple `DecodedVideo` with the same leading fields.
  frames, source_indices, num_source, source_fps = decoded[:4]
  fps = float(decode_fps or source_fps or 0.0)
  if not fps > 0:
    raise video_lib.VideoReadError(f"{path}: the file gives no frame rate; pass --fps.")
  duration = getattr(decoded, "duration", None)
  if duration is None:
    duration = num_source / source_fps if source_fps else len(frames) / fps
  return Video(frames, np.asarray(source_indices), int(num_source), fps, float(duration))


class ObjectMaps:
  """The object maps of decoded files, from a folder or a segmenter (or none).

  Args:
    uses_objects: whether the model takes object maps.
    maps_dir: folder `maps_dir/<name>/<name>-000001.png ...` (one uint8 ADE-20K id map per
      source frame, `<name>` the file name without extension: the layout data preparation
      reads).
    segmenter: an ADE-20K segmentation SavedModel (`data_prep.object_maps.Segmenter`).

  Raises:
    ValueError: the model takes maps and neither source is given, or both are.
  """

  def __init__(self, uses_objects, maps_dir=None, segmenter=None):
    if uses_objects and not (maps_dir or segmenter):
      raise ValueError("The model takes object maps: pass --object_maps=DIR (per-frame PNG "
                       "ids, DIR/<name>/<name>-000001.png) or --segmenter=SAVEDMODEL.")
    if maps_dir and segmenter:
      raise ValueError("Pass --object_maps or --segmenter, not both. Received: "
                       f"{maps_dir!r}, {segmenter!r}")
    if not uses_objects and (maps_dir or segmenter):
      logging.warning("The model takes no object maps: --object_maps / --segmenter ignored.")
    self.uses_objects = uses_objects
    self.maps_dir = maps_dir
    self._segmenter = None
    if uses_objects and segmenter:
      from data_prep import object_maps  # pylint: disable=g-import-not-at-top
      self._segmenter = object_maps.Segmenter(segmenter)

  def __call__(self, path, video):
    """uint8 `[N, H, W]` ids for the decoded `video` of `path`, or None.

    Raises:
      FileNotFoundError, ValueError: no (valid) maps for this file.
    """
    if not self.uses_objects:
      return None
    if self._segmenter is not None:
      return self._segmenter(video.frames)
    from data_prep import object_maps  # pylint: disable=g-import-not-at-top
    name = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.join(self.maps_dir, name)
    return object_maps.load_map_folder(folder, video.source_indices,
                                       video.num_source_frames, *video.frames.shape[1:3])


def clip_indices(num_video_frames, protocol):
  """The evaluation clips -> int32 `[num_clips, T]` stored-frame indices."""
  return input_pipeline.eval_clip_indices(num_video_frames, protocol.num_frames,
                                          protocol.frame_stride, protocol.num_clips).numpy()


def timeline_indices(num_video_frames, protocol, step_frames):
  """Sliding clips, one starting every `step_frames` stored frames while the clip fits (at
  least one, looping a video shorter than a clip) -> int32 `[W, T]`."""
  if step_frames < 1:
    raise ValueError(f"step_frames must be positive. Received: {step_frames}")
  span = input_pipeline.clip_span(protocol.num_frames, protocol.frame_stride)
  starts = np.arange(0, max(num_video_frames - span, 0) + 1, step_frames)
  offsets = np.arange(protocol.num_frames) * protocol.frame_stride
  return ((starts[:, None] + offsets[None, :]) % num_video_frames).astype(np.int32)


def clip_seconds(indices, fps):
  """(start_s, end_s) of each clip `[W, T]`: stored frame k covers [k, k + 1) / fps."""
  indices = np.asarray(indices)
  return indices.min(axis=1) / fps, (indices.max(axis=1) + 1) / fps


def _crops(images, protocol, method):
  """`[C, T, H, W, ch]` -> `[C * num_crops, T, S, S, ch]` (clip-major), float32."""
  clips, frames = images.shape[:2]
  s = protocol.image_size
  # [C, T, H, W, ch] -> [C*T, H, W, ch]
  flat = tf.reshape(images, (-1,) + tuple(images.shape[2:]))
  flat = input_pipeline.short_side_resize(flat, s, method)
  crops = input_pipeline.eval_views(flat, s, protocol.num_crops)
  # [crops, C*T, S, S, ch] -> [crops, C, T, S, S, ch] -> [C, crops, T, S, S, ch]
  crops = tf.reshape(crops, [protocol.num_crops, clips, frames, s, s, -1])
  crops = tf.transpose(crops, [1, 0, 2, 3, 4, 5])
  return tf.reshape(crops, [clips * protocol.num_crops, frames, s, s, -1])


def model_views(frames, maps, indices, protocol):
  """The Keras model's views of the clips `indices`.

  Args:
    frames: uint8 `[N, H, W, 3]` decoded frames.
    maps: uint8 `[N, H, W]` object class ids or None.
    indices: int `[C, T]` clips.

  Returns:
    {'rgb': float32 `[C * num_crops, T, S, S, 3]` normalised, 'objects': uint8 ids
    `[C * num_crops, T, S, S]` (when `maps` is given)}.
  """
  views = {"rgb": preprocessing.normalize_frames(
      _crops(tf.constant(frames[indices]), protocol, "bilinear"))}
  if maps is not None:
    ids = _crops(tf.constant(maps[indices][..., None]), protocol, "nearest")[..., 0]
    views["objects"] = tf.cast(ids, tf.uint8)
  return views


def _square_offsets(height, width, protocol):
  """Top-left corners of the `num_crops` squares of side min(H, W) at full resolution
  that the evaluation crops cut after the resize to short side S."""
  s = protocol.image_size
  short, long_side = min(height, width), max(height, width)
  resized_long = max(int(round(long_side * s / short)), s)
  if protocol.num_crops == 1:
    offsets = [(resized_long - s) // 2]
  else:
    offsets = np.round(np.linspace(0.0, resized_long - s, protocol.num_crops))
  starts = [min(int(round(o * short / s)), long_side - short) for o in offsets]
  if width >= height:
    return [((height - short) // 2, start) for start in starts]
  return [(start, (width - short) // 2) for start in starts]


def serving_views(frames, maps, indices, protocol):
  """The SavedModel signature's inputs for the clips `indices` (uint8, as a client sends).

  The signature resizes a clip to short side S and takes the centre S x S crop, so with one
  crop the whole frames go in (exactly the evaluation view); with `num_crops` > 1 crop k is
  cut here at full resolution, a square of the short side where the evaluation crop k lies,
  and the signature resizes it (the same region; resampled once instead of cut after
  resampling).

  Returns:
    {'frames': uint8 `[C * num_crops, T, h, w, 3]`, 'objects': uint8 `[..., h, w]`}.
  """
  clips = frames[indices]  # [C, T, H, W, 3]
  clip_maps = None if maps is None else maps[indices]
  if protocol.num_crops == 1:
    views = {"frames": clips}
    if clip_maps is not None:
      views["objects"] = clip_maps
    return views
  height, width = frames.shape[1:3]
  side = min(height, width)
  corners = _square_offsets(height, width, protocol)
  cut = lambda x: np.stack([x[:, :, top:top + side, left:left + side]
                            for top, left in corners], axis=1)
  # [C, crops, T, side, side, ...] -> [C*crops, T, side, side, ...]
  views = {"frames": cut(clips).reshape((-1,) + clips.shape[1:2] + (side, side, 3))}
  if clip_maps is not None:
    views["objects"] = cut(clip_maps).reshape((-1,) + clips.shape[1:2] + (side, side))
  return views


def aggregate(view_scores, method, views_per_group):
  """`[G * views_per_group, C]` scores of consecutive groups -> `[G, C]` by max or mean."""
  scores = np.asarray(view_scores).reshape(-1, views_per_group, view_scores.shape[-1])
  return scores.max(axis=1) if method == "max" else scores.mean(axis=1)


def half_clip_step(protocol):
  """Default timeline step: half a clip's span, in stored frames (at least 1)."""
  return max(1, math.ceil(input_pipeline.clip_span(protocol.num_frames,
                                                   protocol.frame_stride) / 2))
