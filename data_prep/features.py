"""Feature schema and example encoding shared by the Charades and Smarthome builders.

See docs/architecture.md ("TFDS datasets") for the schema the input pipeline relies on.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from data_prep import object_maps as object_maps_lib
from data_prep import segmenters
from data_prep import video as video_lib

OBJECT_MAPS_NONE = "none"
OBJECT_MAPS_SEGMENTER = "segmenter"
OBJECT_MAPS_DIRECTORY = "directory"


def video_features():
  """The per-video features common to both datasets."""
  return {
      "video_id": tfds.features.Text(),
      "frames": tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")),
      # One PNG class-id map per stored frame; an empty sequence when not prepared.
      "object_maps": tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 1), encoding_format="png")),
      "fps": np.float32,
      "num_frames": np.int32,
  }


class MissingObjectMaps(Exception):
  """Object maps were requested but none exist for a video."""


class ObjectMapSource:
  """Where a builder gets object maps from: a segmenter, a folder of maps, or nowhere.

  Args:
    segmenter: a SavedModel path (see `object_maps.Segmenter`), `keras_hub:PRESET` or
      `deeplab:GRAPH.pb` (see `data_prep/segmenters.py`), or None.
    object_maps_dir: folder of precomputed maps (`<dir>/<video_id>/<video_id>-NNNNNN.png`).
    batch_size: segmenter batch size.
  """

  def __init__(self, segmenter=None, object_maps_dir=None, batch_size=16):
    if segmenter and object_maps_dir:
      raise ValueError("Give either a segmenter or an object_maps_dir, not both. "
                       f"Received: {segmenter!r}, {object_maps_dir!r}")
    if object_maps_dir and not os.path.isdir(object_maps_dir):
      raise ValueError(f"object_maps_dir is not a directory. Received: {object_maps_dir}")
    self.object_maps_dir = object_maps_dir
    self._segmenter_path = segmenter
    self._segmenter = None
    self._batch_size = batch_size

  @property
  def kind(self):
    if self._segmenter_path:
      return OBJECT_MAPS_SEGMENTER
    if self.object_maps_dir:
      return OBJECT_MAPS_DIRECTORY
    return OBJECT_MAPS_NONE

  def record(self):
    """JSON description of the source, for the dataset's preparation record: the kind, and
    the absolute path with a fingerprint of the maps' listing (paths and sizes) or the
    segmenter graph's size."""
    if self.kind == OBJECT_MAPS_SEGMENTER and self._segmenter_path.startswith(
        (segmenters.KERAS_HUB_PREFIX, segmenters.DEEPLAB_PREFIX)):
      return {"kind": self.kind, **segmenters.record(self._segmenter_path)}
    if self.kind == OBJECT_MAPS_SEGMENTER:
      path = os.path.abspath(self._segmenter_path)
      graph = os.path.join(path, "saved_model.pb")
      return {"kind": self.kind, "path": path,
              "graph_bytes": os.path.getsize(graph) if os.path.exists(graph) else None}
    if self.kind == OBJECT_MAPS_DIRECTORY:
      from data_prep import video_builder  # pylint: disable=g-import-not-at-top  (cycle)
      path = os.path.abspath(self.object_maps_dir)
      maps = [(f, False) for f in video_builder.files_under(path)]
      return {"kind": self.kind, "path": path,
              "listing": video_builder.files_fingerprint(path, maps)}
    return {"kind": self.kind}

  def maps(self, video_id, frames, source_indices, num_source_frames):
    """uint8 [T, H, W] maps for the stored frames, or None when no source is set."""
    if self.kind == OBJECT_MAPS_SEGMENTER:
      if self._segmenter is None:  # Loaded on first use: reading a dataset needs no model.
        self._segmenter = segmenters.load(self._segmenter_path, self._batch_size)
      return self._segmenter(frames)
    if self.kind == OBJECT_MAPS_DIRECTORY:
      folder = os.path.join(self.object_maps_dir, video_id)
      try:
        return object_maps_lib.load_map_folder(folder, source_indices, num_source_frames,
                                               *frames.shape[1:3])
      except (FileNotFoundError, ValueError, OSError) as e:
        raise MissingObjectMaps(str(e)) from e
    return None


def encode_video(frames, source_indices, num_source_frames, fps, video_id, object_source):
  """Decoded frames -> the `video_features()` values of one example."""
  maps = object_source.maps(video_id, frames, source_indices, num_source_frames)
  return {
      "video_id": video_id,
      "frames": [video_lib.encode_jpeg(f) for f in frames],
      "object_maps": [] if maps is None else [video_lib.encode_png(m) for m in maps],
      "fps": np.float32(fps),
      "num_frames": np.int32(len(frames)),
  }


def stored_fps(config_fps, source_fps):
  """Frame rate of the stored frames: the config's, or the source's when it keeps all."""
  return float(config_fps) if config_fps else float(source_fps)
