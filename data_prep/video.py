"""Video files -> uint8 RGB frames as a player shows them (PyAV; no ffmpeg binary needed).

`read_video` returns what ffplay (FFmpeg's player) displays, resampled to a target rate:

- Shape. A stream's sample aspect ratio (anamorphic video: 2:1 pixels) stretches the coded
  picture's width, as ffplay shows it (48x32 coded at 2:1 is shown 96x32). Then a display
  matrix turns it: phones record portrait video as a landscape picture with a -90 degree
  matrix (`VideoFrame.rotation`, counter-clockwise degrees, is -90; the legacy `rotate` tag
  said 90). It is applied as FFmpeg's autorotate applies it: -90 turns the picture 90
  degrees clockwise, 90 counter-clockwise, 180 upside down, and mirrored matrices flip as
  well. `short_side` applies to the displayed picture. Angles that are not a multiple of 90
  degrees raise `VideoReadError`.
- Time. Stored frame k is the source frame on screen at `k / fps` s: the last one whose
  presentation timestamp, counted from the first frame's, is at or before it. This holds
  for variable frame rate video (phones, screen recorders, AVI files with empty index
  entries), where a frame's index is not its time. Timestamps within half a tick of the
  average rate's frame grid count as on it (containers round them, Matroska to 1 ms), so a
  constant-rate video gives source frame `floor(k * source_fps / fps)` exactly, as
  `resampled_indices` does. A frame without a timestamp comes one average-rate frame after
  its predecessor; one timestamped before its predecessor counts as the predecessor's
  time. There are `ceil(duration * fps)` stored frames: `duration` runs from the first
  frame's timestamp to the last frame's plus its duration (else one average-rate frame),
  and on to the end the stream itself declares when that is later (the last picture stays
  on screen, as an AVI's trailing empty entries say). `source_indices` are decode-order
  indices of the source frames shown; object maps are looked up by them.
- Completeness. A download cut short still decodes, partly and, with frame threads,
  without an error. A video is a `TruncatedVideoError` when the file ends inside a packet
  of any stream (the demuxer flags the packet; all streams are demuxed, only the video is
  decoded), or when it decodes to less than its declared duration by more than
  `max(2 * end period, TRUNCATION_TOLERANCE * declared)`, the end period being the longest
  time on screen of the two frames before the last. What may legitimately go undecoded is
  the last frame's time on screen beyond what its packet says (an AVI's trailing empty
  entries), and the frames just before it predict that time: a frozen stretch earlier in
  a variable-rate video does not (the video decodes up to its end), nor does the average
  rate (an AVI whose end is slower than its average). The declared duration is the video
  stream's (Matroska/WebM: its DURATION tag, which FFmpeg writes as the track's end
  timestamp and mkvmerge as its length; a file with only a video stream: the file's end);
  a stream without one is checked by the packet flag alone. A damaged video packet
  elsewhere raises `VideoReadError`. An mp4 that FFmpeg cannot open because the file ends
  inside its media data or index box, or after its media data without the index (written
  last unless `faststart`), is a `TruncatedVideoError` too.
- Still images (FFmpeg's image demuxers: a JPEG or PNG renamed `.mp4`) raise
  `VideoReadError`.

Decoding uses FFmpeg's frame threads (`THREAD_TYPE`): faster on multi-core machines, and the
two checks above catch the truncation that frame threads decode without an error
(benchmarks/decode_speed.py).
"""

import fractions
import io
import math
import os
import re
import typing

from absl import logging
import av
import numpy as np
from PIL import Image
from PIL import ImageOps

JPEG_QUALITY = 90
THREAD_TYPE = "AUTO"
# Declared duration that may go undecoded before a video counts as truncated (see above).
TRUNCATION_TOLERANCE = 0.02


class VideoReadError(Exception):
  """A video (or frame folder) could not be decoded."""


class TruncatedVideoError(VideoReadError):
  """A video decodes to clearly less than its declared duration (a cut-short download)."""


class DecodedVideo(typing.NamedTuple):
  """A decoded video as it is stored.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB, upright as a player shows them.
    source_indices: int64 [T], the decode-order index of the source frame that each stored
      frame shows (object maps are looked up by it).
    num_source_frames: int, frames the source decoded to (files of a frame folder).
    source_fps: float, the source's average frame rate in frames/s (0.0 when unknown).
    duration: float, seconds the source plays (frame folder: files / source_fps).
  """
  frames: np.ndarray
  source_indices: np.ndarray
  num_source_frames: int
  source_fps: float
  duration: float


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


def _source_rate(stream):
  """The stream's average frame rate as a Fraction (frames/s), or None."""
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate:
      return rate
  return None


def _display_transform(frame, path):
  """How a player turns `frame`'s coded picture, from its display matrix side data.

  Mirrors FFmpeg's autorotate (fftools, ffplay): `theta`, the matrix's clockwise angle, is
  minus `VideoFrame.rotation`; 90 -> transpose=clock, 270 -> cclock (each flipped when the
  matrix mirrors), 180 -> hflip and/or vflip, 0 -> vflip for a vertically mirrored matrix.

  Returns:
    (turn, swaps): `turn` maps uint8 [h, w, 3] coded pixels to the displayed array, `swaps`
    says whether it exchanges height and width.

  Raises:
    VideoReadError: a degenerate matrix, or an angle that is not a multiple of 90 degrees.
  """
  side_data = frame.side_data.get("DISPLAYMATRIX")
  if side_data is None:
    return (lambda x: x), False
  # (a b u; c d v; x y w) in native byte order; a, b, c, d are 16.16 fixed point.
  a, b, _, c, d = np.frombuffer(bytes(side_data), np.int32)[:5].astype(np.float64)
  scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
  if not scale_x or not scale_y:
    raise VideoReadError(f"{path}: degenerate display matrix {(a, b, c, d)}")
  theta = math.degrees(math.atan2(b / scale_y, a / scale_x))
  theta -= 360 * math.floor(theta / 360 + 0.9 / 360)  # -> [-0.9, 359.1)
  if abs(theta - 90) < 1:
    if c > 0:  # transpose=cclock_flip
      return (lambda x: x.transpose(1, 0, 2)), True
    return (lambda x: np.rot90(x, -1)), True  # transpose=clock
  if abs(theta - 270) < 1:
    if c < 0:  # transpose=clock_flip
      return (lambda x: np.rot90(x, -1)[::-1]), True
    return (lambda x: np.rot90(x, 1)), True  # transpose=cclock
  if abs(theta - 180) < 1:
    rows, cols = (-1 if d < 0 else 1), (-1 if a < 0 else 1)
    return (lambda x: x[::rows, ::cols]), False
  if abs(theta) < 1:
    return ((lambda x: x[::-1]) if d < 0 else (lambda x: x)), False
  raise VideoReadError(f"{path}: display rotation of {theta:.1f} degrees is not a multiple "
                       "of 90 (unsupported)")


_DURATION_TAG = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _declared_duration(container, stream):
  """(seconds, from_zero, own): the duration the container declares for the video stream
  (a Fraction), whether it counts from time 0 rather than from the stream's first frame,
  and whether it is the stream's own rather than the file's; (None, False, False) if none.
  """
  if stream.duration:
    return stream.duration * stream.time_base, False, True
  # Matroska/WebM: the per-track tag ("00:00:02.000000000"). FFmpeg writes the track's end
  # timestamp; mkvmerge and mkvpropedit (with their _STATISTICS_ tags) its length.
  match = _DURATION_TAG.match(stream.metadata.get("DURATION", ""))
  if match:
    hours, minutes, seconds = match.groups()
    length = 3600 * int(hours) + 60 * int(minutes) + fractions.Fraction(seconds)
    return length, "_STATISTICS_WRITING_APP" not in stream.metadata, True
  # The file's duration is its longest stream's.
  if container.duration and len(container.streams) == 1:
    return fractions.Fraction(container.duration, av.time_base), True, False
  return None, False, False


def _ends_the_file(packet, path):
  return packet.pos is not None and packet.pos >= 0 and (
      packet.pos + packet.size >= os.path.getsize(path))


class _Clock:
  """Presentation times of the decoded frames: seconds after the first frame (Fractions).

  A timestamp within half a tick of a multiple of the average frame period is taken as
  exactly that multiple: containers round timestamps to their time base (1 ms in
  Matroska), which would otherwise move a constant-rate frame across a stored time that it
  starts exactly at (for other frames this moves a time by less than its rounding). A frame
  without a timestamp comes one average-rate frame after its predecessor; a timestamp
  before the predecessor's counts as the predecessor's.

  Args:
    time_base: the stream's time base (a Fraction of a second).
    rate: the stream's average frame rate (a Fraction), or None.
    path: the video, for errors.
  """

  def __init__(self, time_base, rate, path):
    self._tick = time_base
    self._rate = rate
    self._step = 1 / rate if rate else None  # Seconds.
    self._path = path
    self.origin = None  # Timestamp of the first frame, seconds.
    self.count = 0
    self.last = None  # Time of the last frame.
    self._recent = []  # How long the (up to) two frames before the last stayed on screen.

  def time(self, frame):
    """Time of the next decoded frame (frames arrive in presentation order)."""
    if frame.pts is not None:
      time = frame.pts * self._tick
      if self.origin is None:  # Frames before it without a timestamp keep their places.
        self.origin = time - (0 if self.last is None else self.last + (self._step or 0))
      time -= self.origin
    elif self.last is None:
      time = fractions.Fraction(0)
    elif self._step is None:
      raise VideoReadError(f"{self._path}: frame {self.count} has no timestamp and the "
                           "stream no frame rate")
    else:
      time = self.last + self._step
    time = self.snap(time, self._tick / 2)
    if self.last is not None:
      time = max(time, self.last)
      self._recent = self._recent[-1:] + [time - self.last]
    self.count += 1
    self.last = time
    return time

  def end(self, frame):
    """When the last frame, `frame`, leaves the screen: its time plus its duration (else one
    average-rate frame), seconds."""
    duration = frame.duration * self._tick if frame.duration else self._step or 0
    return self.snap(self.last + duration, self._tick)

  @property
  def end_period(self):
    """The frame period where the decoded frames end: the longest time on screen of the two
    frames before the last (one average-rate frame for a single frame), seconds."""
    return max(self._recent) if self._recent else self._step or 0

  def snap(self, time, radius):
    """`time`, or the multiple of the average frame period within `radius` of it."""
    if self._rate:
      grid = round(time * self._rate) / self._rate
      if abs(time - grid) <= radius:
        return grid
    return time


class _FrameSampler:
  """Picks the source frames on screen at the stored times 0, 1/fps, 2/fps, ... from frames
  that arrive in presentation order (every frame once when `fps` is None), converting only
  the frames it keeps.

  Args:
    fps: stored frame rate, or None.
    convert: VideoFrame -> uint8 [H, W, 3].
  """

  def __init__(self, fps, convert):
    self._period = 1 / fractions.Fraction(fps) if fps else None
    self._convert = convert
    self._pending = None  # (source index, VideoFrame) on screen since the last `add`.
    self._pending_rgb = None
    self.frames, self.indices = [], []

  def add(self, index, frame, time):
    """Source frame `index` is on screen from `time` (seconds after the first frame)."""
    self._show_pending_until(time)
    self._pending, self._pending_rgb = (index, frame), None

  def finish(self, end):
    """The last frame stays on screen until `end` (seconds); it is stored at least once."""
    self._show_pending_until(end)
    if not self.frames:
      self._store()

  def _show_pending_until(self, time):
    """Stores the pending frame at every stored time before `time` (once if fps is None)."""
    if self._pending is None:
      return
    if self._period is None:
      self._store()
      return
    while len(self.frames) * self._period < time:
      self._store()

  def _store(self):
    if self._pending_rgb is None:
      self._pending_rgb = self._convert(self._pending[1])
    self.frames.append(self._pending_rgb)
    self.indices.append(self._pending[0])


def read_video(path, fps=None, short_side=None):
  """Decodes a video file (any container FFmpeg reads) as a player shows it; see the module
  docstring for orientation, timing and truncation.

  Args:
    path: video file.
    fps: frame rate of the returned frames (None keeps every decoded frame, once; for a
      variable-rate source their times are then not `k / source_fps`).
    short_side: resize so the displayed picture's short side has this length in pixels
      (None keeps the size).

  Returns:
    `DecodedVideo`: frames uint8 [T, H, W, 3], source_indices int64 [T], num_source_frames,
    source_fps (average, frames/s) and duration (s).

  Raises:
    TruncatedVideoError: the file ends inside a packet of any stream, or decodes to clearly
      less than its declared duration, or is an mp4 cut before its index.
    VideoReadError: the file is missing, corrupt (a damaged video packet included) or a
      still image, has no decodable frame, an unsupported display matrix, or frames
      without timestamps and no frame rate.
  """
  path = os.fspath(path)
  try:
    with av.open(path) as container:
      if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
        raise VideoReadError(f"{path} is a still image ({container.format.name}), not a "
                             "video")
      if not container.streams.video:
        raise VideoReadError(f"no video stream in {path}")
      stream = container.streams.video[0]
      stream.thread_type = THREAD_TYPE
      return _decode_stream(container, stream, path, fps, short_side)
  except TruncatedVideoError:
    raise
  except (VideoReadError, av.FFmpegError, OSError, ValueError, RuntimeError) as e:
    # A cut file can fail in any of these ways: FFmpeg cannot open it, or opens it and
    # finds no video stream or no decodable frame (a cut inside the index box).
    if _is_cut_mp4(path):
      raise TruncatedVideoError(f"{path}: truncated mp4: it ends inside its media data or "
                                f"index, or without an index ({type(e).__name__}: {e})") from e
    if isinstance(e, VideoReadError):
      raise
    raise VideoReadError(f"{type(e).__name__}: {e}") from e


# FFmpeg's still-image demuxers (besides these, every `<codec>_pipe`).
_IMAGE_FORMATS = ("image2", "image2pipe")


def _is_cut_mp4(path):
  """Whether `path` is an ISO media file (mp4, mov) cut short: its media data (`mdat`) or
  index (`moov`) box runs past the end of the file, or the media data ends the file without
  the index that a muxer writes last when not asked for `faststart`."""
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      position, types = 0, []
      while position + 8 <= size:
        f.seek(position)
        header = f.read(16)
        box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
        if box_size == 1 and len(header) == 16:  # A 64-bit size follows the type.
          box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # The box runs to the end of the file.
          box_size = size - position
        if (box_size < 8 or not re.fullmatch(rb"[A-Za-z0-9 ]{4}", box_type) or
            (not types and box_type != b"ftyp")):
          return False  # Not a sequence of boxes: corrupt rather than cut.
        types.append(box_type)
        if position + box_size > size:
          return box_type in (b"mdat", b"moov")
        position += box_size
      return b"mdat" in types and b"moov" not in types
  except OSError:
    return False


def _decode_stream(container, stream, path, fps, short_side):
  rate = _source_rate(stream)
  clock = _Clock(stream.time_base, rate, path)
  sampler = last_frame = None
  ends_inside_packet = False

  def decoded_frames():
    nonlocal ends_inside_packet
    # All streams: a file cut inside an audio packet is as truncated as one cut inside a
    # video packet (the demuxer reads the other streams' packets anyway).
    for packet in container.demux():
      is_video = packet.stream.index == stream.index  # Flush packets have no stream_index.
      if packet.is_corrupt:  # A frame-threaded decoder would not say so.
        if _ends_the_file(packet, path):
          ends_inside_packet = True
          yield from stream.decode(None)  # Flush what decoded before it.
          return
        if is_video:  # A damaged packet of another stream is not decoded.
          raise VideoReadError(f"{path}: damaged video packet at byte {packet.pos}")
      if is_video:
        yield from stream.decode(packet)

  for index, frame in enumerate(decoded_frames()):
    time = clock.time(frame)
    if sampler is None:
      turn, swaps = _display_transform(frame, path)
      # The sample aspect ratio (the container's, else the codec's, as ffplay guesses it)
      # stretches the coded picture before the display matrix turns it; ffplay keeps the
      # height and scales the width.
      height, width = frame.height, frame.width
      sar = stream.sample_aspect_ratio
      if sar and sar > 0:
        width = max(1, round(width * sar))
      height, width = (width, height) if swaps else (height, width)
      height, width = resized_shape(height, width, short_side)
      coded_height, coded_width = (width, height) if swaps else (height, width)
      sampler = _FrameSampler(fps, lambda f: turn(f.to_ndarray(
          format="rgb24", height=coded_height, width=coded_width)))
    sampler.add(index, frame, time)
    last_frame = frame

  duration = clock.end(last_frame) if last_frame else fractions.Fraction(0)
  declared, from_zero, own = _declared_duration(container, stream)
  if declared is not None and from_zero:  # -> seconds from the first frame, as `duration`.
    declared -= clock.origin or 0
  if ends_inside_packet or (declared is not None and declared - duration > max(
      2 * clock.end_period, TRUNCATION_TOLERANCE * declared)):
    raise TruncatedVideoError(
        f"{path}: truncated video: decoded {float(duration):.2f} s" +
        (f" of declared {float(declared):.2f} s" if declared is not None else "") +
        (" (the file ends inside a packet)" if ends_inside_packet else ""))
  if own:  # The last picture stays on screen until the stream's declared end.
    duration = max(duration, clock.snap(declared, stream.time_base))
  if sampler is None:
    raise VideoReadError(f"no decodable frame in {path}")
  sampler.finish(duration)
  return DecodedVideo(np.stack(sampler.frames), np.asarray(sampler.indices, np.int64),
                      clock.count, float(rate) if rate else 0.0, float(duration))


_FRAME_NUMBER = re.compile(r"(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def numbered_files(directory):
  """Files of a frame folder sorted by their trailing frame number (`<id>-000001.jpg`); when
  some are named `<folder name>-<number>`, only those."""
  return [path for _, path in numbered_frames(directory)]


def numbered_frames(directory):
  """[(number, path)] sorted by number, of the files `numbered_files` takes."""
  prefix = os.path.basename(os.path.normpath(directory)) + "-"
  numbered, own = [], []
  for name in os.listdir(directory):
    match = _FRAME_NUMBER.search(name)
    if match:
      entry = (int(match.group(1)), os.path.join(directory, name))
      numbered.append(entry)
      if name[:match.start()] == prefix:
        own.append(entry)
  return sorted(own or numbered)


def read_frame_folder(directory, source_fps, fps=None, short_side=None):
  """Like `read_video` for a folder of numbered JPEG frames (Charades_v1_rgb, 24 fps).

  Files named `<folder name>-<number>.jpg` are the frames when there are any (a stray
  `thumb-000001.jpg` is then ignored); otherwise every file with a trailing number. A frame's
  number, not its position in the folder, gives its time: numbering starts at 1 (Charades;
  at 0 when a file 0 exists), so frame n shows time `(n - origin) / source_fps` s, origin
  being min(first number, 1). A folder with missing frames is timed like a variable-rate
  video: the previous frame stays on screen, the first existing frame stands in for the
  missing ones before it, and a warning counts them. EXIF orientation (phone JPEGs) is
  applied as a viewer shows the picture.

  Returns:
    `DecodedVideo`: source_indices are `n - origin`; num_source_frames and the duration
    (`num_source_frames / source_fps` s) run from the origin to the last number.

  Raises:
    VideoReadError: no numbered frame, two frames with the same number, or one that cannot
      be read.
  """
  try:
    numbered = numbered_frames(directory)
  except OSError as e:
    raise VideoReadError(f"{type(e).__name__}: {e}") from e
  if not numbered:
    raise VideoReadError(f"no numbered frames in {directory}")
  for (number, path), (next_number, next_path) in zip(numbered, numbered[1:]):
    if number == next_number:
      raise VideoReadError(f"{directory}: two frames numbered {number}: {path} and "
                           f"{next_path}")
  origin = min(numbered[0][0], 1)
  numbers = np.array([n for n, _ in numbered], np.int64) - origin
  num_source = int(numbers[-1]) + 1
  if num_source != len(numbers):
    logging.warning("%s: %d of %d numbered frames are missing; the frame before each gap "
                    "stays on screen.", directory, num_source - len(numbers), num_source)
  # Stored frame k shows the last frame whose number is at or before source frame
  # floor(k * source_fps / fps) (exactly `resampled_indices` when no number is missing),
  # the first frame before it.
  wanted = resampled_indices(num_source, source_fps, fps)
  positions = np.maximum(np.searchsorted(numbers, wanted, side="right") - 1, 0)
  frames, size, cache = [], None, {}
  for position in positions:
    if position not in cache:
      path = numbered[position][1]
      try:
        with Image.open(path) as image:
          image = ImageOps.exif_transpose(image).convert("RGB")
          if size is None:
            size = resized_shape(image.height, image.width, short_side)
          if (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.BILINEAR)
          cache = {position: np.asarray(image)}  # Only the latest is shown again.
      except OSError as e:
        raise VideoReadError(f"{path}: {e}") from e
    frames.append(cache[position])
  return DecodedVideo(np.stack(frames), numbers[positions], num_source, float(source_fps),
                      num_source / source_fps if source_fps > 0 else 0.0)


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
