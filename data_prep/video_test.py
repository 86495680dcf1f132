from fractions import Fraction
import io
import os
import types

import av
import numpy as np
from PIL import Image
import pytest

from data_prep import video


def _gray_frames(values, height=32, width=48):
  # Frame k is uniformly `values[k]`: decoded frames reveal which source frame they are.
  return np.stack([np.full((height, width, 3), v, np.uint8) for v in values])


def _write_timed_video(path, frames, times, end, *, codec="libx264",
                       time_base=Fraction(1, 90000), display_matrix=None, movflags=None,
                       audio_seconds=None, sample_aspect_ratio=None):
  """Writes uint8 [T, H, W, 3] `frames`, frame k on screen from `times[k]` (seconds, exact
  Fractions) until the next time, the last until `end`: variable frame rate as cameras and
  screen recorders write it. No B-frames, so each packet's duration is its frame's."""
  starts = [round(t / time_base) for t in times]
  ends = starts[1:] + [round(end / time_base)]
  duration = dict(zip(starts, np.subtract(ends, starts).tolist()))
  options = {"movflags": movflags} if movflags else {}
  with av.open(os.fspath(path), "w", options=options) as container:
    stream = container.add_stream(codec, rate=24)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = stream.time_base = time_base
    stream.codec_context.max_b_frames = 0
    stream.bit_rate = 4_000_000  # Flat gray frames within 3 levels, with mpeg4 too.
    stream.options = {"threads": "1"}
    if sample_aspect_ratio is not None:
      stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
    if display_matrix is not None:
      # ISO 14496-12 / FFmpeg display matrix: a, b, c, d in 16.16 fixed point, w in 2.30.
      a, b, c, d = display_matrix
      stream.set_display_matrix([a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30])
    if audio_seconds:
      audio = container.add_stream("aac", rate=48000)
      audio.layout = "mono"

    def mux(packets):
      for packet in packets:
        packet.duration = duration[packet.pts]
        container.mux(packet)

    for frame, pts in zip(frames, starts):
      video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
      video_frame.pts, video_frame.time_base = pts, time_base
      mux(stream.encode(video_frame))
    mux(stream.encode())
    for k in range(round(audio_seconds * 48000 / 1024) if audio_seconds else 0):
      silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
      silence.sample_rate, silence.time_base = 48000, Fraction(1, 48000)
      silence.pts = 1024 * k
      container.mux(audio.encode(silence))
    if audio_seconds:
      container.mux(audio.encode())


def _constant_rate(num_frames, fps):
  return [Fraction(k, fps) for k in range(num_frames)], Fraction(num_frames, fps)


def _quadrant_means(frame):
  """Mean of each quadrant of an [H, W, 3] frame: [[top-left, top-right], [bottom-left,
  bottom-right]]."""
  h, w = frame.shape[0] // 2, frame.shape[1] // 2
  return np.array([[frame[:h, :w].mean(), frame[:h, w:].mean()],
                   [frame[h:, :w].mean(), frame[h:, w:].mean()]])


def test_resampled_indices_down_up_and_keep():
  np.testing.assert_array_equal(video.resampled_indices(7, 24.0, 12.0), [0, 2, 4, 6])
  np.testing.assert_array_equal(video.resampled_indices(8, 24.0, 12.0), [0, 2, 4, 6])
  np.testing.assert_array_equal(video.resampled_indices(3, 6.0, 12.0), [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(video.resampled_indices(4, 24.0, None), [0, 1, 2, 3])


def test_resized_shape_scales_short_side():
  assert video.resized_shape(480, 640, 256) == (256, 341)
  assert video.resized_shape(640, 480, 256) == (341, 256)
  assert video.resized_shape(30, 40, None) == (30, 40)


def test_read_video_resamples_and_resizes(tmp_path):
  values = [8 * k for k in range(25)]
  path = tmp_path / "v.mp4"
  video.write_video(path, _gray_frames(values), fps=24)
  decoded = video.read_video(path, fps=12, short_side=16)
  assert (decoded.num_source_frames, decoded.source_fps) == (25, 24.0)
  assert decoded.duration == pytest.approx(25 / 24)
  np.testing.assert_array_equal(decoded.source_indices, np.arange(0, 25, 2))
  assert decoded.frames.shape == (13, 16, 24, 3)
  # Each stored frame shows the source frame it claims (H.264 error on flat gray < 3).
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)),
                             np.asarray(values)[decoded.source_indices], atol=3)


# Display matrices (a, b, c, d) as cameras write them, the rotation PyAV reads back
# (`VideoFrame.rotation`, counter-clockwise degrees) and the quadrant where a player
# (ffplay, `ffmpeg` autorotate) shows the coded picture's top-left corner.
@pytest.mark.parametrize("matrix, rotation, corner", [
    ((0, 1, -1, 0), -90, (0, 1)),  # Phone held upright: turned clockwise, to the top right.
    ((0, -1, 1, 0), 90, (1, 0)),  # Turned counter-clockwise: to the bottom left.
    ((-1, 0, 0, -1), -180, (1, 1)),  # Upside down: to the bottom right.
    ((-1, 0, 0, 1), -180, (0, 1)),  # Mirrored left-right: to the top right.
    ((0, 1, 1, 0), -90, (0, 0)),  # Transposed (transpose=cclock_flip): stays top left.
    ((0, -1, -1, 0), 90, (1, 1)),  # Anti-transposed (transpose=clock_flip): bottom right.
])
def test_read_video_shows_frames_as_a_player_turns_them(tmp_path, matrix, rotation, corner):
  frames = np.full((6, 32, 48, 3), 20, np.uint8)
  frames[:, :16, :24] = 230  # The coded top-left quadrant is bright.
  path = tmp_path / "phone.mp4"
  _write_timed_video(path, frames, *_constant_rate(6, 24), display_matrix=matrix)
  with av.open(os.fspath(path)) as container:
    assert next(container.decode(video=0)).rotation == rotation
  decoded = video.read_video(path, fps=12, short_side=16)
  # The short side of the displayed picture gets `short_side`.
  assert decoded.frames.shape == ((3, 24, 16, 3) if abs(rotation) == 90 else (3, 16, 24, 3))
  for frame in decoded.frames:
    means = _quadrant_means(frame)
    assert means[corner] > 150, means
    assert np.delete(means.ravel(), 2 * corner[0] + corner[1]).max() < 80, means


@pytest.mark.parametrize("matrix, shape, corner", [
    (None, (16, 48), (0, 0)),
    ((0, 1, -1, 0), (48, 16), (0, 1)),  # Turned clockwise after the stretch.
])
def test_read_video_stretches_by_the_sample_aspect_ratio_before_turning(tmp_path, matrix,
                                                                        shape, corner):
  # A 48x32 picture of 2:1 pixels (anamorphic) that a player shows 96x32, and 32x96 with a
  # -90 degree matrix: the stretch applies to the coded picture, before the turn.
  frames = np.full((4, 32, 48, 3), 20, np.uint8)
  frames[:, :16, :24] = 230
  path = tmp_path / "anamorphic.mp4"
  _write_timed_video(path, frames, *_constant_rate(4, 24), display_matrix=matrix,
                     sample_aspect_ratio=Fraction(2, 1))
  decoded = video.read_video(path, fps=12, short_side=16)
  assert decoded.frames.shape == (2, *shape, 3)
  means = _quadrant_means(decoded.frames[0])
  assert means[corner] > 150 and np.sort(means.ravel())[2] < 80, means


# 30 frames in the first second, 6 in the second: frame k is on screen from TIMES[k].
VFR_TIMES = [Fraction(k, 30) for k in range(30)] + [1 + Fraction(k, 6) for k in range(6)]


@pytest.mark.parametrize("name, codec, time_base", [
    ("vfr.mp4", "libx264", Fraction(1, 90000)),
    # AVI has no timestamps, only an index: the muxer fills the gaps with empty entries.
    ("vfr.avi", "mpeg4", Fraction(1, 30)),
])
def test_read_video_picks_the_frame_on_screen_at_each_stored_time(tmp_path, name, codec,
                                                                  time_base):
  values = [7 * k for k in range(len(VFR_TIMES))]
  path = tmp_path / name
  _write_timed_video(path, _gray_frames(values), VFR_TIMES, 2, codec=codec,
                     time_base=time_base)
  decoded = video.read_video(path, fps=12)
  # Stored frame k is the last source frame that started at or before k / 12 s.
  expected = [max(i for i, t in enumerate(VFR_TIMES) if t <= Fraction(k, 12))
              for k in range(24)]
  np.testing.assert_array_equal(decoded.source_indices, expected)
  assert decoded.frames.shape == (24, 32, 48, 3)
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)),
                             np.asarray(values)[expected], atol=3)
  assert decoded.num_source_frames == 36 and decoded.duration == pytest.approx(2.0)
  # Without a target rate every source frame is kept, once.
  np.testing.assert_array_equal(video.read_video(path).source_indices, np.arange(36))


@pytest.mark.parametrize("name, codec, start", [
    ("late.mkv", "libx264", Fraction(1, 10)),
    ("late.mkv", "libx264", Fraction(1, 20)),
    ("late.webm", "libvpx-vp9", Fraction(1, 2)),
])
def test_read_video_times_matroska_from_its_first_frame(tmp_path, name, codec, start):
  # FFmpeg's Matroska muxer tags a track with its END timestamp (DURATION 00:00:02.1 for
  # 2 s starting at 0.1 s): a complete file is neither truncated nor extended.
  times, end = _constant_rate(48, 24)
  path = tmp_path / name
  _write_timed_video(path, _gray_frames([5 * k for k in range(48)]),
                     [start + t for t in times], start + end, codec=codec,
                     time_base=Fraction(1, 1000))
  with av.open(os.fspath(path)) as container:
    assert container.streams.video[0].metadata["DURATION"].startswith(
        f"00:00:02.{round(1000 * start):03d}")
  decoded = video.read_video(path, fps=12)
  np.testing.assert_array_equal(decoded.source_indices, np.arange(0, 48, 2))
  assert decoded.duration == pytest.approx(2.0)


@pytest.mark.parametrize("metadata, from_zero", [
    ({"DURATION": "00:00:02.100000000"}, True),  # FFmpeg: the end timestamp.
    ({"DURATION": "00:00:02.000000000", "_STATISTICS_WRITING_APP": "mkvmerge v80"},
     False),  # mkvmerge, mkvpropedit: the track's length.
])
def test_declared_duration_reads_both_matroska_duration_tags(metadata, from_zero):
  stream = types.SimpleNamespace(duration=None, metadata=metadata)
  container = types.SimpleNamespace(duration=None, streams=[stream])
  assert video._declared_duration(container, stream) == (  # pylint: disable=protected-access
      Fraction(21 if from_zero else 20, 10), from_zero, True)


# Variable rate with a frozen middle: 24 fps for 1 s, then one picture until 3 s, then
# 24 fps until 5 s (a screen recording of a pause). A 5 s silent audio track runs beside it.
FROZEN_TIMES = ([Fraction(k, 24) for k in range(24)] + [Fraction(1)] +
                [3 + Fraction(k, 24) for k in range(48)])


def _frozen_with_audio(tmp_path):
  path = tmp_path / "frozen.mp4"
  _write_timed_video(path, _gray_frames([3 * k for k in range(len(FROZEN_TIMES))]),
                     FROZEN_TIMES, 5, movflags="faststart", audio_seconds=5)
  return path


def test_read_video_accepts_a_frozen_stretch_in_the_middle(tmp_path):
  decoded = video.read_video(_frozen_with_audio(tmp_path), fps=12)
  expected = [max(i for i, t in enumerate(FROZEN_TIMES) if t <= Fraction(k, 12))
              for k in range(60)]
  np.testing.assert_array_equal(decoded.source_indices, expected)
  assert decoded.duration == pytest.approx(5.0)


@pytest.mark.parametrize("cut", ["inside an audio packet", "between packets"])
def test_read_video_rejects_a_cut_after_a_frozen_stretch(tmp_path, cut):
  # Cut at 3.5 s of 5: inside the audio packet after the 3.5 s video packet (only the
  # audio packet is damaged), or exactly after that video packet (nothing is damaged;
  # 1.5 s are missing, less than twice the frozen 2 s but 36 frame periods at the end).
  path = _frozen_with_audio(tmp_path)
  with av.open(os.fspath(path)) as container:
    packets = [(p.stream.type, p.pts * p.time_base, p.pos, p.size)
               for p in container.demux() if p.size]
  _, _, pos, size = max(p for p in packets if p[0] == "video" and p[1] <= 3.5)
  audio_pos, audio_size = min(p[2:] for p in packets if p[0] == "audio" and p[2] > pos)
  assert audio_pos == pos + size  # The next packet in the file is audio.
  size = pos + size + (audio_size // 2 if cut == "inside an audio packet" else 0)
  cut_path = tmp_path / "cut.mp4"
  cut_path.write_bytes(path.read_bytes()[:size])
  with pytest.raises(video.TruncatedVideoError, match=r"decoded 3\.54 s of declared 5\.00"):
    video.read_video(cut_path, fps=12)


def _truncated_copy(tmp_path, cut):
  """A 1 s mp4 with its index in front (`faststart`, as web downloads are) cut at `cut`:
  'half' of its bytes, or 'packet' (the end of the 11th video packet)."""
  noise = np.random.default_rng(0).integers(0, 256, (24, 32, 48, 3), dtype=np.uint8)
  path = tmp_path / "whole.mp4"
  _write_timed_video(path, noise, *_constant_rate(24, 24), movflags="faststart")
  data = path.read_bytes()
  assert data.find(b"moov") < data.find(b"mdat")
  if cut == "half":
    size = len(data) // 2
  else:
    with av.open(os.fspath(path)) as container:
      packets = [p for p in container.demux(video=0) if p.size]
      size = packets[10].pos + packets[10].size
  cut_path = tmp_path / f"cut_{cut}.mp4"
  cut_path.write_bytes(data[:size])
  return cut_path


@pytest.mark.parametrize("cut", ["half", "packet"])
def test_read_video_rejects_truncated_files_with_threaded_decoding(tmp_path, cut):
  path = _truncated_copy(tmp_path, cut)
  # The failure this guards against: frame-threaded decoding stops early without an error.
  with av.open(os.fspath(path)) as container:
    container.streams.video[0].thread_type = "AUTO"
    assert 0 < sum(1 for _ in container.decode(video=0)) < 24
  with pytest.raises(video.TruncatedVideoError, match=r"truncated.* of declared 1\.00 s"):
    video.read_video(path, fps=12)
  assert issubclass(video.TruncatedVideoError, video.VideoReadError)


def test_builders_count_truncated_and_corrupt_videos_apart(tmp_path):
  # pylint: disable=g-import-not-at-top
  from data_prep import features
  from data_prep import skips
  from data_prep import video_builder
  builder = types.SimpleNamespace(  # What `_encode_or_skip` uses of a builder.
      skip_report=skips.SkipReport("test"), builder_config=types.SimpleNamespace(fps=12),
      _object_source=features.ObjectMapSource())
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"not a video" * 50)
  for path in (_truncated_copy(tmp_path, "half"), corrupt):
    assert video_builder.VideoBuilder._encode_or_skip(  # pylint: disable=protected-access
        builder, path, "id", lambda path=path: video.read_video(path, fps=12)) is None
  assert builder.skip_report.as_dict()["by_reason"] == {skips.TRUNCATED_VIDEO: 1,
                                                        skips.CORRUPT_VIDEO: 1}


def test_read_video_accepts_audio_longer_than_video(tmp_path):
  path = tmp_path / "av.mp4"
  _write_timed_video(path, _gray_frames([100] * 24), *_constant_rate(24, 24),
                     audio_seconds=1.5)
  decoded = video.read_video(path, fps=12)
  assert decoded.frames.shape[0] == 12 and decoded.duration == pytest.approx(1.0)


@pytest.mark.parametrize("content", [b"", b"not a video" * 50])
def test_read_video_rejects_corrupt_and_missing_files(tmp_path, content):
  path = tmp_path / "bad.mp4"
  path.write_bytes(content)
  with pytest.raises(video.VideoReadError):
    video.read_video(path)
  with pytest.raises(video.VideoReadError):
    video.read_video(tmp_path / "missing.mp4")


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_read_video_rejects_a_still_image_named_mp4(tmp_path, image_format):
  path = tmp_path / "still.mp4"
  Image.fromarray(np.full((32, 48, 3), 100, np.uint8)).save(path, format=image_format)
  with pytest.raises(video.VideoReadError, match="still image"):
    video.read_video(path, fps=12)


def test_read_video_tells_a_cut_mp4_with_its_index_at_the_end(tmp_path):
  # Without faststart the index (moov) comes after the pictures (mdat): a download cut
  # short has no index and FFmpeg cannot open it at all.
  path = tmp_path / "slow.mp4"
  _write_timed_video(path, _gray_frames(range(0, 240, 10)), *_constant_rate(24, 24))
  data = path.read_bytes()
  assert data.find(b"mdat") < data.find(b"moov")
  for size in (len(data) // 2, data.find(b"moov") - 4):  # Inside mdat; before moov.
    cut_path = tmp_path / f"cut{size}.mp4"
    cut_path.write_bytes(data[:size])
    with pytest.raises(video.TruncatedVideoError, match="truncated mp4"):
      video.read_video(cut_path, fps=12)
  # A file that is no mp4 at all stays corrupt.
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"not a video" * 50)
  with pytest.raises(video.VideoReadError) as error:
    video.read_video(corrupt)
  assert not isinstance(error.value, video.TruncatedVideoError)


def test_read_video_tells_an_mp4_cut_inside_its_index(tmp_path):
  # Before: a download that stopped inside the index box (moov, last without faststart)
  # opened with no video stream, or none that decoded, and was reported as corrupt, not
  # truncated, so preparation counted it as corrupt_video.
  path = tmp_path / "slow.mp4"
  _write_timed_video(path, _gray_frames(range(0, 240, 10)), *_constant_rate(24, 24))
  data = path.read_bytes()
  moov, udta = data.find(b"moov") - 4, data.find(b"udta") - 4
  # Up to the index's last box, the encoder's tag (udta): a cut inside it loses no frame.
  cuts = range(moov + 8, udta, 40)
  assert moov < udta and len(cuts) >= 5
  for size in cuts:
    cut_path = tmp_path / f"cut{size}.mp4"
    cut_path.write_bytes(data[:size])
    with pytest.raises(video.TruncatedVideoError, match="truncated"):
      video.read_video(cut_path, fps=12)


def test_read_frame_folder_picks_resampled_frames(tmp_path):
  folder = tmp_path / "ABC12"
  folder.mkdir()
  for k in range(6):
    Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(
        folder / f"ABC12-{k + 1:06d}.jpg", quality=95)
  (folder / "notes.txt").write_text("ignored")
  decoded = video.read_frame_folder(folder, 24.0, fps=12.0, short_side=10)
  np.testing.assert_array_equal(decoded.source_indices, [0, 2, 4])
  assert (decoded.num_source_frames, decoded.source_fps, decoded.duration,
          decoded.frames.shape) == (6, 24.0, 0.25, (3, 10, 15, 3))
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)), [0, 80, 160], atol=2)


def _gray_jpegs(folder, values):
  """Writes `{number: gray value}` as 8x8 frames `<folder name>-NNNNNN.jpg`; returns folder."""
  folder.mkdir()
  for number, value in values.items():
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(
        folder / f"{folder.name}-{number:06d}.jpg", quality=95)
  return folder


def test_read_frame_folder_times_frames_by_their_numbers_not_positions(tmp_path):
  # Frames 3 and 4 of a 24 fps folder are missing: frame number n shows time (n - 1) / 24,
  # so the stored frame at 1/12 s is frame 2, still on screen (as in a variable-rate video).
  folder = _gray_jpegs(tmp_path / "GAP01", {n: 20 * n for n in (1, 2, 5, 6, 7, 8)})
  decoded = video.read_frame_folder(folder, 24.0, fps=12.0)
  np.testing.assert_array_equal(decoded.source_indices, [0, 1, 4, 6])
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)), [20, 40, 100, 140], atol=2)
  assert (decoded.num_source_frames, decoded.duration) == (8, 8 / 24)


def test_read_frame_folder_ignores_stray_numbered_files(tmp_path):
  # `thumb-000001.jpg` (a thumbnail) beside the frames must not replace frame 1.
  folder = _gray_jpegs(tmp_path / "ABC12", {k: 40 * k for k in range(1, 5)})
  Image.fromarray(np.full((8, 8, 3), 250, np.uint8)).save(folder / "thumb-000001.jpg")
  decoded = video.read_frame_folder(folder, 24.0)
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)), [40, 80, 120, 160],
                             atol=2)
  assert decoded.num_source_frames == 4
  assert [os.path.basename(p) for p in video.numbered_files(folder)] == [
      f"ABC12-{k:06d}.jpg" for k in range(1, 5)]


def test_read_frame_folder_rejects_two_frames_with_one_number(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for name in ("a-000001.jpg", "a-000002.jpg", "b-000002.jpg"):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
  with pytest.raises(video.VideoReadError, match=r"numbered 2: .*a-000002.jpg and "
                     r".*b-000002.jpg"):
    video.read_frame_folder(folder, 24.0)


def test_read_frame_folder_keeps_time_when_the_first_frames_are_missing(tmp_path, caplog):
  # Frames 1 and 2 of a 24 fps folder are missing: frame n still shows (n - 1) / 24 s, and
  # frame 3 stands in for the missing ones before it.
  folder = _gray_jpegs(tmp_path / "LATE1", {n: 20 * n for n in range(3, 9)})
  decoded = video.read_frame_folder(folder, 24.0, fps=12.0)
  np.testing.assert_array_equal(decoded.source_indices, [2, 2, 4, 6])
  np.testing.assert_allclose(decoded.frames.mean(axis=(1, 2, 3)), [60, 60, 100, 140], atol=2)
  assert (decoded.num_source_frames, decoded.duration) == (8, 8 / 24)
  assert "2 of 8 numbered frames are missing" in caplog.text


def test_read_frame_folder_applies_exif_orientation(tmp_path):
  # A phone JPEG: coded landscape 8x16 (bright left half) with EXIF orientation 6 (shown
  # turned 90 degrees clockwise), so the player shows a 16x8 picture, bright at the top.
  folder = tmp_path / "EXIF1"
  folder.mkdir()
  coded = np.zeros((8, 16, 3), np.uint8)
  coded[:, :8] = 255
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(coded).save(folder / "EXIF1-000001.jpg", quality=95, exif=exif)
  frames = video.read_frame_folder(folder, 24.0).frames
  assert frames.shape == (1, 16, 8, 3)
  assert frames[0, :8].mean() > 200 and frames[0, 8:].mean() < 50


def test_numbered_files_sorts_by_number_not_name(tmp_path):
  for name in ["x-000010.png", "x-000002.png", "x-000001.png", "readme"]:
    (tmp_path / name).write_bytes(b"")
  assert [os.path.basename(p) for p in video.numbered_files(tmp_path)] == [
      "x-000001.png", "x-000002.png", "x-000010.png"]


def test_png_round_trip_is_exact():
  ids = np.random.default_rng(0).integers(0, 151, (9, 7)).astype(np.uint8)
  decoded = np.asarray(Image.open(io.BytesIO(video.encode_png(ids))))
  np.testing.assert_array_equal(decoded, ids)
