import io
import os

import numpy as np
from PIL import Image
import pytest

from data_prep import video


def _gray_frames(values, height=32, width=48):
  # Frame k is uniformly `values[k]`: decoded frames reveal which source frame they are.
  return np.stack([np.full((height, width, 3), v, np.uint8) for v in values])


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
  frames, indices, num_source, source_fps = video.read_video(path, fps=12, short_side=16)
  assert (num_source, source_fps) == (25, 24.0)
  np.testing.assert_array_equal(indices, np.arange(0, 25, 2))
  assert frames.shape == (13, 16, 24, 3)
  # Each stored frame shows the source frame it claims (H.264 error on flat gray < 3).
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), np.asarray(values)[indices],
                             atol=3)


@pytest.mark.parametrize("content", [b"", b"not a video" * 50])
def test_read_video_rejects_corrupt_and_missing_files(tmp_path, content):
  path = tmp_path / "bad.mp4"
  path.write_bytes(content)
  with pytest.raises(video.VideoReadError):
    video.read_video(path)
  with pytest.raises(video.VideoReadError):
    video.read_video(tmp_path / "missing.mp4")


def test_read_frame_folder_picks_resampled_frames(tmp_path):
  folder = tmp_path / "ABC12"
  folder.mkdir()
  for k in range(6):
    Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(
        folder / f"ABC12-{k + 1:06d}.jpg", quality=95)
  (folder / "notes.txt").write_text("ignored")
  frames, indices, num_source, fps = video.read_frame_folder(folder, 24.0, fps=12.0,
                                                             short_side=10)
  np.testing.assert_array_equal(indices, [0, 2, 4])
  assert (num_source, fps, frames.shape) == (6, 24.0, (3, 10, 15, 3))
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [0, 80, 160], atol=2)


def test_numbered_files_sorts_by_number_not_name(tmp_path):
  for name in ["x-000010.png", "x-000002.png", "x-000001.png", "readme"]:
    (tmp_path / name).write_bytes(b"")
  assert [os.path.basename(p) for p in video.numbered_files(tmp_path)] == [
      "x-000001.png", "x-000002.png", "x-000010.png"]


def test_png_round_trip_is_exact():
  ids = np.random.default_rng(0).integers(0, 151, (9, 7)).astype(np.uint8)
  decoded = np.asarray(Image.open(io.BytesIO(video.encode_png(ids))))
  np.testing.assert_array_equal(decoded, ids)
