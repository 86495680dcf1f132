"""Tests of the evaluation views of a video file."""

import fractions
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import video as video_lib
from data_prep import video_test
from official.data import input_pipeline
from official.inference import views


def _protocol(**kwargs):
  defaults = dict(num_frames=4, image_size=32, frame_stride=2, num_clips=2, num_crops=1)
  return views.ViewProtocol(**dict(defaults, **kwargs))


def test_protocol_round_trips_through_json_and_rejects_bad_values():
  protocol = _protocol(num_crops=3, aggregation="mean", fps=12.0, short_side=256)
  assert views.ViewProtocol.from_json(protocol.to_json()) == protocol
  assert protocol.views_per_video == 6
  assert protocol.replace(num_clips=5, fps=None).num_clips == 5
  assert protocol.replace(fps=None).fps == 12.0  # None leaves a field as it is
  with pytest.raises(ValueError, match=r"num_clips must be a positive int. Received: 0"):
    _protocol(num_clips=0)
  with pytest.raises(ValueError, match=r"aggregation must be one of .* Received: 'sum'"):
    _protocol(aggregation="sum")


def test_timeline_windows_and_their_seconds():
  protocol = _protocol()  # span (4 - 1) * 2 + 1 = 7 frames
  indices = views.timeline_indices(20, protocol, step_frames=4)
  np.testing.assert_array_equal(indices[:, 0], [0, 4, 8, 12])
  np.testing.assert_array_equal(indices[1], [4, 6, 8, 10])
  start, end = views.clip_seconds(indices, fps=8.0)
  np.testing.assert_allclose(start, [0.0, 0.5, 1.0, 1.5])
  np.testing.assert_allclose(end, [0.875, 1.375, 1.875, 2.375])
  # A video shorter than a clip gets one looping window.
  np.testing.assert_array_equal(views.timeline_indices(5, protocol, 4), [[0, 2, 4, 1]])
  assert views.half_clip_step(protocol) == 4


def test_model_views_are_the_evaluation_views_in_clip_major_order():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (10, 40, 56, 3), dtype=np.uint8)
  maps = rng.integers(0, 151, (10, 40, 56), dtype=np.uint8)
  protocol = _protocol(num_crops=3)
  indices = views.clip_indices(10, protocol)
  got = views.model_views(frames, maps, indices, protocol)
  assert got["rgb"].shape == (6, 4, 32, 32, 3) and got["objects"].dtype == tf.uint8
  for clip in range(2):
    resized = input_pipeline.short_side_resize(frames[indices[clip]], 32, "bilinear")
    crops = input_pipeline.eval_views(resized, 32, 3)
    map_crops = input_pipeline.eval_views(input_pipeline.short_side_resize(
        maps[indices[clip]][..., None], 32, "nearest"), 32, 3)
    for crop in range(3):
      np.testing.assert_allclose(got["rgb"][clip * 3 + crop], crops[crop] / 127.5 - 1.0,
                                 atol=1e-6)
      np.testing.assert_array_equal(got["objects"][clip * 3 + crop], map_crops[crop][..., 0])


@pytest.mark.parametrize("height,width", [(48, 64), (64, 48)])
def test_serving_crops_cover_the_evaluation_crops(height, width):
  # Pixel values encode the position along the long side, so a crop's values say where it
  # was cut: the full-resolution square the signature resizes must show the same part of
  # the frame as the evaluation crop cut after resizing.
  long_side = max(height, width)
  ramp = np.linspace(0, 250, long_side)
  image = np.broadcast_to(ramp[None, :, None] if width >= height else ramp[:, None, None],
                          (height, width, 3))
  frames = np.repeat(image[None].astype(np.uint8), 4, axis=0)
  protocol = _protocol(num_clips=1, num_crops=3)
  indices = views.clip_indices(4, protocol)
  expected = views.model_views(frames, None, indices, protocol)["rgb"]
  sent = views.serving_views(frames, None, indices, protocol)["frames"]
  assert sent.shape == (3, 4, min(height, width), min(height, width), 3)
  for crop in range(3):
    # What the signature does with it: resize to short side 32, centre crop.
    served = input_pipeline.eval_views(input_pipeline.short_side_resize(
        sent[crop], 32, "bilinear"), 32, 1)[0] / 127.5 - 1.0
    # Within 2 of 255 levels of the ramp (a step is 250 / 63 ~ 4 levels).
    np.testing.assert_allclose(served, expected[crop], atol=2 / 127.5)
  # One crop sends the whole frames: the signature's own centre crop is the evaluation's.
  np.testing.assert_array_equal(
      views.serving_views(frames, None, indices, _protocol(num_clips=1))["frames"],
      frames[indices])


def test_aggregate_groups_consecutive_views():
  scores = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3], [0.7, 0.1]])
  np.testing.assert_allclose(views.aggregate(scores, "max", 2), [[0.5, 0.9], [0.7, 0.3]])
  np.testing.assert_allclose(views.aggregate(scores, "mean", 2), [[0.3, 0.55], [0.5, 0.2]])


def test_protocol_from_input_is_the_experiments_evaluation():
  import gin  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  from official.data import input_pipeline  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  gin.clear_config()
  gin.add_config_file_search_path(root)
  try:
    gin_flags.parse_gin([os.path.join(root, "gin/experiments/charades_assemblenet_plus50.gin")],
                        [], finalize=False)
    video_input = input_pipeline.VideoInput()
    assert views.protocol_from_input(video_input, 32, 224, "max") == views.ViewProtocol(
        32, 224, frame_stride=1, num_clips=10, num_crops=3, aggregation="max", fps=12.0,
        short_side=256)
    gin.clear_config()
    gin_flags.parse_gin([os.path.join(root, "gin/experiments/tiny_smoke.gin")],
                        ["VideoInput.num_clips = 5"], finalize=False)
    config = input_pipeline.load_builder("charades/synthetic").builder_config
    assert views.protocol_from_input(input_pipeline.VideoInput(), 4, 32, "mean") == (
        views.ViewProtocol(4, 32, frame_stride=2, num_clips=5, num_crops=1,
                           aggregation="mean",
                           fps=None if config.fps is None else float(config.fps),
                           short_side=config.short_side))
    # No input (a custom one without these attributes): build_dataset's defaults.
    assert views.protocol_from_input(None, 4, 32, "max") == views.ViewProtocol(
        4, 32, frame_stride=1, num_clips=10, num_crops=3, aggregation="max")
  finally:
    gin.clear_config()


# A variable-rate clip (a phone's): frames 0..11 at 24 fps (0 .. 0.5 s), then frames
# 12..23 at 2 fps (0.5 .. 6.5 s). Frame k is uniformly grey 10 * k.
VFR_TIMES = ([fractions.Fraction(k, 24) for k in range(12)] +
             [fractions.Fraction(1, 2) + fractions.Fraction(k, 2) for k in range(12)])


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
  path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
  # pylint: disable=protected-access
  video_test._write_timed_video(path, video_test._gray_frames([10 * k for k in range(24)]),
                                VFR_TIMES, fractions.Fraction(13, 2))
  # pylint: enable=protected-access
  return str(path)


def test_variable_rate_video_frames_show_the_times_the_timeline_reports(vfr_video):
  # Before: with the protocol's fps None every frame was kept once and frame k was said to
  # show k / average_fps s: the window over frames 12..18 was reported at 3.25 .. 5.15 s
  # while they are on screen from 0.5 s to 3.5 s.
  video = views.decode(vfr_video, _protocol(fps=None))
  assert video.fps == pytest.approx(24 / 6.5, rel=1e-3)  # The stream's average rate.
  assert video.duration == pytest.approx(6.5)
  shown = np.round(video.frames[:, 0, 0, 0] / 10).astype(int)
  np.testing.assert_array_equal(shown, video.source_indices)
  for k, source in enumerate(video.source_indices):
    time = k / video.fps  # What clip_seconds says stored frame k shows...
    assert VFR_TIMES[source] <= time + 1e-6  # ... is the frame on screen at that time.
    assert source == 23 or time < VFR_TIMES[source + 1]
  start_s, end_s = views.clip_seconds(views.timeline_indices(len(video.frames), _protocol(),
                                                             4), video.fps)
  assert end_s[-1] <= 6.5 + 1e-6 and start_s[1] == pytest.approx(4 / video.fps)


def test_constant_rate_video_keeps_every_frame_once(tmp_path):
  # fps None decodes at the average rate: for a constant (NTSC) rate the frames an
  # every-frame decode gives, each once.
  path = str(tmp_path / "ntsc.mp4")
  frames = video_test._gray_frames([20 * k for k in range(10)])  # pylint: disable=protected-access
  video_lib.write_video(path, frames, fractions.Fraction(30000, 1001))
  video = views.decode(path, _protocol())
  np.testing.assert_array_equal(video.source_indices, np.arange(10))
  assert video.fps == pytest.approx(30000 / 1001)


def test_full_size_pictures_are_decoded_at_the_views_side(tmp_path):
  # Before: with the protocol's short_side None the whole video was decoded at full size
  # (1.4 GB for 2 s of 1080p) although the views are resized to S.
  rng = np.random.default_rng(0)
  big = str(tmp_path / "big.mp4")
  video_lib.write_video(big, rng.integers(0, 256, (6, 96, 128, 3), np.uint8), 8)
  protocol = _protocol(num_crops=3)
  assert views.decode_settings(big, protocol) == (8.0, 32)
  video = views.decode(big, protocol)
  assert video.frames.shape == (6, 32, 43, 3)  # Short side S, the aspect kept.
  # The evaluation crops of these frames: the resize to S is the identity.
  resized = input_pipeline.short_side_resize(tf.constant(video.frames), 32, "bilinear")
  np.testing.assert_array_equal(resized.numpy(), video.frames.astype(np.float32))
  # A picture up to twice S keeps its size (evaluation's frames exactly); a protocol's
  # short side is kept.
  small = str(tmp_path / "small.mp4")
  video_lib.write_video(small, rng.integers(0, 256, (6, 64, 48, 3), np.uint8), 8)
  assert views.decode_settings(small, protocol) == (8.0, None)
  assert views.decode(small, protocol).frames.shape == (6, 64, 48, 3)
  assert views.decode_settings(big, protocol.replace(fps=4.0, short_side=64)) == (4.0, 64)


def test_protocol_file_with_an_unknown_key_names_the_file_and_the_key(tmp_path):
  # Before: TypeError: ViewProtocol.__init__() got an unexpected keyword argument.
  views.write_protocol(str(tmp_path), _protocol())
  path = tmp_path / "assets.extra" / views.PROTOCOL_FILE
  fields = json.loads(path.read_text())
  path.write_text(json.dumps(dict(fields, temporal_jitter=2)))
  with pytest.raises(ValueError, match=r"view_protocol.json has unknown key\(s\) "
                     r"\['temporal_jitter'\]"):
    views.read_protocol(str(tmp_path))
  path.write_text(json.dumps({"image_size": 32}))
  with pytest.raises(ValueError, match=r"view_protocol.json lacks the key\(s\) "
                     r"\['num_frames'\]"):
    views.read_protocol(str(tmp_path))
  path.write_text("[4, 32")
  with pytest.raises(ValueError, match=r"view_protocol.json is not valid JSON"):
    views.read_protocol(str(tmp_path))


def _write_maps(folder, count, height, width):
  os.makedirs(folder)
  for i in range(count):
    name = f"{os.path.basename(folder)}-{i + 1:06d}.png"
    with open(os.path.join(folder, name), "wb") as f:
      f.write(video_lib.encode_png(np.full((height, width), 3, np.uint8)))


def test_object_maps_of_another_shape_than_the_frames_are_refused(tmp_path):
  # Before: maps of a rotated phone clip in its coded orientation (transposed) were
  # stretched over the upright frames without a word.
  video = views.Video(np.zeros((2, 64, 48, 3), np.uint8), np.arange(2), 2, 8.0, 0.25)
  object_maps = views.ObjectMaps(True, maps_dir=str(tmp_path))
  _write_maps(str(tmp_path / "phone"), 2, 48, 64)  # Transposed.
  with pytest.raises(ValueError, match=r"object maps of 48 x 64 .* do not have the shape of "
                     r"the decoded frames, 64 x 48"):
    object_maps("/videos/phone.mp4", video)
  # Another size of the same shape (within a pixel of rounding) is resized.
  _write_maps(str(tmp_path / "half"), 2, 32, 25)
  assert object_maps("/videos/half.mp4", video).shape == (2, 64, 48)


class _FirstFrameSegmenter(tf.Module):
  """Returns one map whatever the batch: the segmenter contract broken."""

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def __call__(self, frames):
    return tf.cast(frames[:1, ..., 0], tf.int32) // 2


def test_segmenter_returning_another_number_of_maps_is_a_clear_error(tmp_path):
  # Before: IndexError deep in the views (or maps silently off their frames).
  segmenter = _FirstFrameSegmenter()
  tf.saved_model.save(segmenter, str(tmp_path / "seg"), signatures=segmenter.__call__)
  video = views.Video(np.zeros((5, 16, 16, 3), np.uint8), np.arange(5), 5, 8.0, 0.6)
  object_maps = views.ObjectMaps(True, segmenter=str(tmp_path / "seg"))
  with pytest.raises(ValueError, match=r"Segmenter .*seg returned 1 maps for a batch of 5 "
                     r"frames; it must return one map per input frame"):
    object_maps("clip.mp4", video)
