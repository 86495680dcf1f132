"""Tests of the evaluation views of a video file."""

import os

import numpy as np
import pytest
import tensorflow as tf

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


def test_protocol_from_gin_is_the_experiments_evaluation():
  import gin  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  gin.clear_config()
  gin.add_config_file_search_path(root)
  try:
    gin_flags.parse_gin([os.path.join(root, "gin/experiments/charades_assemblenet_plus50.gin")],
                        [], finalize=False)
    assert views.protocol_from_gin(32, 224, "max") == views.ViewProtocol(
        32, 224, frame_stride=1, num_clips=10, num_crops=3, aggregation="max", fps=12.0,
        short_side=256)
    gin.clear_config()
    # The evaluation dataset is built in gin scope 'eval': its bindings win.
    gin_flags.parse_gin([os.path.join(root, "gin/experiments/tiny_smoke.gin")],
                        ["eval/build_dataset.num_clips = 5"], finalize=False)
    assert views.protocol_from_gin(4, 32, "mean") == views.ViewProtocol(
        4, 32, frame_stride=2, num_clips=5, num_crops=1, aggregation="mean")
  finally:
    gin.clear_config()
