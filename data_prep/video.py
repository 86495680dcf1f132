"""Video files -> resampled, resized uint8 frames (PyAV; no ffmpeg binary needed).

Frames are resampled to a target frame rate by index: stored frame k shows source frame
`floor(k * source_fps / fps)`, so stored frame k covers time `k / fps` seconds. The same
source indices pick the matching precomputed object maps.
"""

import fractions
import io
import math
import os
import re

import av
import numpy as np
from PIL import Image

JPEG_QUALITY = 90


class VideoReadError(Exception):
  """A video (or frame folder) could not be decoded."""


def resampled_indices(num_source_frames, source_fps, fps):
  """Source frame index of every stored frame when resampling `source_fps` -> `fps`."""
  if fps is None or fps <= 0 or source_fps <= 0:
    return np.arange(num_source_frames)
  ratio = source_fps / fps
  num_out = max(1, math.ceil(num_source_frames / ratio))
  return np.minimum(np.floor(np.arange(num_out) * ratio).astype(np.int64),
                    num_source_frames - 1)


def resized_shape(height, width, short_side):
  """(height, width) with the short side scaled to `short_side` (None keeps the size)."""
  if not short_side:
    return height, width
  scale = short_side / min(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def _source_fps(stream):
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate:
      return float(rate)
  return 0.0


def read_video(path, fps=None, short_side=None):
  """Decodes an mp4 (any container FFmpeg reads).

  Args:
    path: video file.
    fps: frame rate of the returned frames (None keeps every source frame).
    short_side: resize so the short side has this length (None keeps the size).

  Returns:
    (frames uint8 [T, H, W, 3], source_indices int64 [T], num_source_frames, source_fps).

  Raises:
    VideoReadError: the file is missing, corrupt or has no decodable frame.
  """
  try:
    with av.open(os.fspath(path)) as container:
      if not container.streams.video:
        raise VideoReadError(f"no video stream in {path}")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      source_fps = _source_fps(stream)
      ratio = source_fps / fps if fps and source_fps > 0 else 1.0
      frames, indices = [], []
      next_out = 0
      size = None
      for i, frame in enumerate(container.decode(stream)):
        # Stored frame k shows source frame floor(k * ratio); upsampling repeats frames.
        while math.floor(next_out * ratio) <= i:
          if math.floor(next_out * ratio) == i:
            if size is None:
              size = resized_shape(frame.height, frame.width, short_side)
            frames.append(frame.to_ndarray(format="rgb24", height=size[0],
                                           width=size[1]))
            indices.append(i)
          next_out += 1
      num_source = i + 1 if frames else 0
  except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
    raise VideoReadError(f"{type(e).__name__}: {e}") from e
  if not frames:
    raise VideoReadError(f"no decodable frame in {path}")
  return np.stack(frames), np.asarray(indices, np.int64), num_source, source_fps


_FRAME_NUMBER = re.compile(r"(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def numbered_files(directory):
  """Files of a frame folder sorted by their trailing frame number (`<id>-000001.jpg`)."""
  numbered = []
  for name in os.listdir(directory):
    match = _FRAME_NUMBER.search(name)
    if match:
      numbered.append((int(match.group(1)), os.path.join(directory, name)))
  return [path for _, path in sorted(numbered)]


def read_frame_folder(directory, source_fps, fps=None, short_side=None):
  """Like `read_video` for a folder of numbered JPEG frames (Charades_v1_rgb, 24 fps)."""
  try:
    files = numbered_files(directory)
  except OSError as e:
    raise VideoReadError(f"{type(e).__name__}: {e}") from e
  if not files:
    raise VideoReadError(f"no numbered frames in {directory}")
  indices = resampled_indices(len(files), source_fps, fps)
  frames, size = [], None
  for i in indices:
    try:
      with Image.open(files[i]) as image:
        image = image.convert("RGB")
        if size is None:
          size = resized_shape(image.height, image.width, short_side)
        if (image.height, image.width) != size:
          image = image.resize((size[1], size[0]), Image.BILINEAR)
        frames.append(np.asarray(image))
    except OSError as e:
      raise VideoReadError(f"{files[i]}: {e}") from e
  return np.stack(frames), indices, len(files), float(source_fps)


def encode_jpeg(frame, quality=JPEG_QUALITY):
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def encode_png(image):
  """uint8 [H, W] or [H, W, 1] -> PNG bytes (single channel)."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2])).save(
      buffer, format="PNG")
  return buffer.getvalue()


def write_video(path, frames, fps, codec="libx264"):
  """Writes uint8 [T, H, W, 3] frames as an mp4 (H and W must be even for yuv420p)."""
  with av.open(os.fspath(path), mode="w") as container:
    stream = container.add_stream(
        codec, rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    # Deterministic output: one thread, no scene-cut dependence on timing.
    stream.options = {"crf": "18", "threads": "1"}
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
