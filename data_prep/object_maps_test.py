import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from data_prep import object_maps


def _expected_ids(frames):
  # The toy segmenter's rule: class id = red // 2 (0..127), on 2x2-downsampled frames.
  return (frames[:, ::2, ::2, 0] // 2).astype(np.uint8)


class _ScoresSegmenter(tf.Module):
  """uint8 [B, H, W, 3] -> scores [B, H/2, W/2, 151] peaking at red // 2."""

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def __call__(self, frames):
    ids = tf.cast(frames[:, ::2, ::2, 0], tf.int32) // 2
    return {"scores": tf.one_hot(ids, 151) * 5.0 - 1.0}


class _IdsSegmenter(tf.Module):
  """Plain callable returning integer ids at full resolution (no signature)."""

  def __init__(self, offset):
    super().__init__()
    self.offset = offset

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def __call__(self, frames):
    return tf.cast(frames[..., 1], tf.int64) + self.offset


def _frames(num=7, height=8, width=12, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num, height, width, 3)).astype(np.uint8)


def test_segmenter_signature_scores_are_argmaxed_upsampled_and_batched(tmp_path):
  module = _ScoresSegmenter()
  tf.saved_model.save(module, str(tmp_path), signatures=module.__call__)
  frames = _frames()
  low_res = _expected_ids(frames)
  expected = np.repeat(np.repeat(low_res, 2, axis=1), 2, axis=2)  # Nearest upsampling.
  for batch_size in (1, 3, 16):
    maps = object_maps.Segmenter(str(tmp_path), batch_size=batch_size)(frames)
    assert maps.dtype == np.uint8
    np.testing.assert_array_equal(maps, expected)


def test_segmenter_plain_callable_returning_ids(tmp_path):
  tf.saved_model.save(_IdsSegmenter(offset=0), str(tmp_path / "ok"))
  frames = _frames() // 2  # Green channel < 128, a valid id.
  np.testing.assert_array_equal(object_maps.Segmenter(str(tmp_path / "ok"), 4)(frames),
                                frames[..., 1])
  tf.saved_model.save(_IdsSegmenter(offset=100), str(tmp_path / "bad"))
  with pytest.raises(ValueError, match="0..150"):
    object_maps.Segmenter(str(tmp_path / "bad"), 4)(frames)


def test_ids_from_output_150_way_scores_shift_by_one():
  scores = tf.one_hot([[[0, 149], [3, 7]]], 150)
  np.testing.assert_array_equal(object_maps.ids_from_output(scores, 2, 2),
                                [[[1, 150], [4, 8]]])
  with pytest.raises(ValueError, match="scores"):
    object_maps.ids_from_output(tf.zeros([1, 2, 2, 10]), 2, 2)


def _map_folder(folder, numbers):
  for n in numbers:
    Image.fromarray(np.full((4, 6), 10 + n, np.uint8)).save(folder / f"v-{n:06d}.png")


def test_load_map_folder_takes_the_map_numbered_like_each_source_frame(tmp_path):
  _map_folder(tmp_path, range(1, 9))  # One map per source frame, 000001 = source frame 0.
  maps = object_maps.load_map_folder(tmp_path, [0, 3, 3, 7], 8, height=8, width=12)
  assert maps.shape == (4, 8, 12)
  np.testing.assert_array_equal(maps[:, 0, 0], [11, 14, 14, 18])
  with pytest.raises(FileNotFoundError):
    object_maps.load_map_folder(tmp_path / "absent", [0], 1, 8, 12)
  Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "v-000009.png")
  with pytest.raises(ValueError, match="0..150"):
    object_maps.load_map_folder(tmp_path, [8], 9, 4, 6)


@pytest.mark.parametrize("numbers, message", [
    (range(1, 4), "3 maps numbered 1..3 for a video of 10 source frames"),  # Segmenter died.
    ([1, 2, 3, 5, 6, 7, 8, 9, 10, 11], "10 maps numbered 1..11"),  # A gap.
])
def test_load_map_folder_refuses_a_partial_folder_instead_of_stretching_it(
    tmp_path, numbers, message):
  _map_folder(tmp_path, numbers)
  with pytest.raises(ValueError, match=message):
    object_maps.load_map_folder(tmp_path, [0, 5, 9], 10, 4, 6)


def test_load_map_folder_refuses_maps_of_another_shape_than_the_frames(tmp_path):
  # Before: preparation resized any map to the frame size, so maps of a rotated phone
  # clip made in its coded orientation (transposed) were stretched over the upright
  # frames: ids in the wrong places, no skip, no warning. Prediction refused them.
  for n in range(1, 4):
    ids = np.ones((16, 24), np.uint8)
    ids[:, 12:] = 2  # Landscape: id 1 left, id 2 right.
    Image.fromarray(ids).save(tmp_path / f"v-{n:06d}.png")
  with pytest.raises(ValueError, match=r"object maps of 16 x 24 .* do not have the shape of "
                     r"the decoded frames, 24 x 16"):
    object_maps.load_map_folder(tmp_path, [0, 2], 3, height=24, width=16)
  # The same shape at another size (within a pixel of rounding) is resized.
  maps = object_maps.load_map_folder(tmp_path, [0, 2], 3, height=33, width=48)
  assert maps.shape == (2, 33, 48)
  np.testing.assert_array_equal(maps[:, :, :24], 1)
  np.testing.assert_array_equal(maps[:, :, 24:], 2)


@pytest.mark.parametrize("extension", ["jpg", "JPEG"])
def test_load_map_folder_refuses_lossy_maps(tmp_path, extension):
  # Before: grayscale JPEG maps passed the single-channel and range checks, and the
  # compression turned some ids into others (e.g. 22 where only 0, 12 and 20 were).
  for n in range(1, 3):
    ids = np.zeros((32, 48), np.uint8)
    ids[8:24, 8:40] = 12
    ids[12:20, 16:32] = 20
    Image.fromarray(ids).save(tmp_path / f"v-{n:06d}.{extension}", quality=90)
  with pytest.raises(ValueError, match=r"v-000001\.%s: object maps must be PNG" % extension):
    object_maps.load_map_folder(tmp_path, [0, 1], 2, height=32, width=48)


@pytest.mark.parametrize("map_shape, frame_shape", [
    ((2160, 4096), (256, 485)),  # DCI 4K maps of frames at short side 256.
    ((3024, 4032), (224, 299)),  # A phone photo-size map.
    ((1080, 1920), (128, 228)),  # 1080p maps of frames at short side 128.
])
def test_maps_much_larger_than_the_frames_keep_their_shape_within_rounding(map_shape,
                                                                          frame_shape):
  # Before: one pixel of rounding was allowed on the maps' sides only, not the frames' own
  # rounding, which scaled up to the maps' size exceeds it: correctly shaped maps of about
  # 5.5x the frames' size or more were refused (485 of 11,025 source sizes x short sides).
  object_maps.check_map_shape("m.png", map_shape, *frame_shape)
  with pytest.raises(ValueError, match="do not have the shape"):
    object_maps.check_map_shape("m.png", map_shape[::-1], *frame_shape)  # Transposed.
  with pytest.raises(ValueError, match="do not have the shape"):  # A 10% narrower crop.
    object_maps.check_map_shape("m.png", (map_shape[0], map_shape[1] * 9 // 10), *frame_shape)


def test_a_segmenter_signature_that_does_not_take_uint8_frames_is_refused_at_load(tmp_path):
  # Before: a float32 signature (what Keras' model.export() writes) loaded, then stopped at
  # the first video with TF's "expected to be a float tensor but is a uint8 tensor".
  class FloatSegmenter(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, frames):
      return tf.cast(frames[..., 0] > 0.5, tf.int32)
  module = FloatSegmenter()
  tf.saved_model.save(module, str(tmp_path / "seg"), signatures=module.__call__)
  with pytest.raises(ValueError, match=r"uint8 \[B, H, W, 3\].*Received: float32"):
    object_maps.Segmenter(str(tmp_path / "seg"))
