import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import skips
from data_prep import toyota_smarthome as smarthome
from data_prep import video

# name -> (red value of its frames, folder); the segmenter labels a pixel 2 if red > 128.
CLIPS = {
    "Drink.Fromcup_p17_r02_v09_c01.mp4": (200, "mp4"),  # CS train, CV train.
    "Walk_p03_r00_v01_c05.mp4": (40, "mp4"),  # CS train, CV validation.
    "Cook.Cut_p19_r01_v02_c01.mp4": (200, "mp4/more"),  # CS validation; not a CV class.
    "Enter_p02_r00_v03_c02.mp4": (40, "mp4"),  # CS test, CV test.
    "Sitdown_p10_r00_v04_c03.mp4": (200, "mp4"),  # CS test; CV2 train, not in CV1.
    "Pour.Fromcup_p03_r00_v05_c01.mp4": (40, "mp4"),  # Dropped: not a class.
    "Dance_p03_r00_v06_c01.mp4": (40, "mp4"),  # Unknown activity.
    "Walk_p05_r00_v07_c01.mp4": (40, "mp4"),  # p05 is in no CS split.
    "walk-clip-03.mp4": (40, "mp4"),  # Name does not parse.
}
CORRUPT = "Readbook_p04_r00_v08_c01.mp4"


class _RedSegmenter(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def __call__(self, frames):
    return {"class_ids": tf.where(frames[..., 0] > 128, 2, 1)}


def make_release(root, model):
  """The miniature release under `root` (pathlib) and the red segmenter SavedModel in
  `model`; returns both as strings."""
  for name, (red, folder) in CLIPS.items():
    os.makedirs(root / folder, exist_ok=True)
    frames = np.zeros((10, 16, 20, 3), np.uint8)
    frames[..., 0] = red
    video.write_video(root / folder / name, frames, fps=20)
  (root / "mp4" / CORRUPT).write_bytes(b"\x00" * 100)
  module = _RedSegmenter()
  tf.saved_model.save(module, str(model), signatures=module.__call__)
  return str(root), str(model)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  return make_release(tmp_path_factory.mktemp("smarthome"),
                      tmp_path_factory.mktemp("segmenter"))


def _prepare(config_name, release, tmp_path, segmenter=None, download_config=None):
  root, _ = release
  config = dataclasses.replace(
      next(c for c in smarthome.ToyotaSmarthome.BUILDER_CONFIGS if c.name == config_name),
      name=f"{config_name}_small", short_side=8)
  builder = smarthome.ToyotaSmarthome(config=config, data_dir=str(tmp_path),
                                      segmenter=segmenter, segmenter_batch_size=4)
  builder.download_and_prepare(
      download_config=download_config or tfds.download.DownloadConfig(manual_dir=root))
  examples = {split: {ex["video_id"].decode(): ex
                      for ex in tfds.as_numpy(builder.as_dataset(split=split))}
              for split in ("train", "validation", "test")}
  return builder, examples


def test_parse_file_name():
  assert smarthome.parse_file_name("Drink.Fromcup_p17_r02_v09_c01.mp4") == (
      "Drink.Fromcup", 17, 1)
  assert smarthome.parse_file_name("Drink.Fromcup_p17_r02_v09.mp4") is None
  assert smarthome.parse_file_name("x.mp4") is None


def test_class_lists_match_the_published_protocols():
  assert len(smarthome.CS_CLASSES) == 31 and len(smarthome.CV_CLASSES) == 19
  assert set(smarthome.CV_CLASSES) < set(smarthome.CS_CLASSES)
  assert list(smarthome.CS_CLASSES) == sorted(smarthome.CS_CLASSES, key=str.lower)


@pytest.mark.slow
def test_cross_subject_splits_labels_frames_objects_and_skips(release, tmp_path):
  builder, examples = _prepare("cs", release, tmp_path, segmenter=release[1])
  assert {s: sorted(e) for s, e in examples.items()} == {
      "train": ["Drink.Fromcup_p17_r02_v09_c01", "Walk_p03_r00_v01_c05"],
      "validation": ["Cook.Cut_p19_r01_v02_c01"],
      "test": ["Enter_p02_r00_v03_c02", "Sitdown_p10_r00_v04_c03"]}
  drink = examples["train"]["Drink.Fromcup_p17_r02_v09_c01"]
  assert drink["label"] == smarthome.CS_CLASSES.index("Drink.Fromcup") == 8
  assert (drink["subject"], drink["camera"]) == (17, 1)
  assert examples["test"]["Sitdown_p10_r00_v04_c03"]["label"] == 24
  # 10 frames at 20 fps -> 6 at 12 fps (source frames 0, 1, 3, 5, 6, 8), short side 8.
  assert drink["num_frames"] == 6 and drink["frames"].shape == (6, 8, 10, 3)
  for split in examples.values():
    for ex in split.values():
      red = ex["frames"][..., 0].mean()
      expected_id = 2 if red > 128 else 1
      np.testing.assert_array_equal(ex["object_maps"],
                                    np.full((6, 8, 10, 1), expected_id, np.uint8))
  summary = skips.read_summary(builder.data_path)
  assert summary["by_reason"] == {"corrupt_video": 1, "excluded_class": 1,
                                  "not_in_split": 1, "unknown_class": 1,
                                  "unparsable_name": 1}
  assert summary["files"]["excluded_class"][0]["path"].endswith(
      "Pour.Fromcup_p03_r00_v05_c01.mp4")
  assert summary["files"]["corrupt_video"][0]["path"].endswith(CORRUPT)
  assert builder.info.metadata["object_maps"] == "segmenter"


@pytest.mark.slow
def test_cross_view_1_uses_cameras_and_19_classes(release, tmp_path):
  builder, examples = _prepare("cv1", release, tmp_path)
  assert {s: sorted(e) for s, e in examples.items()} == {
      "train": ["Drink.Fromcup_p17_r02_v09_c01", "Walk_p05_r00_v07_c01"],
      "validation": ["Walk_p03_r00_v01_c05"],
      "test": ["Enter_p02_r00_v03_c02"]}
  assert examples["train"]["Drink.Fromcup_p17_r02_v09_c01"]["label"] == 3
  assert builder.info.features["label"].num_classes == 19
  assert len(examples["test"]["Enter_p02_r00_v03_c02"]["object_maps"]) == 0
  summary = skips.read_summary(builder.data_path)
  # Cook.Cut is no CV class (like Pour.Fromcup); Sitdown's camera c03 is unused by CV1.
  assert summary["by_reason"] == {"corrupt_video": 1, "excluded_class": 2,
                                  "not_in_split": 1, "unknown_class": 1,
                                  "unparsable_name": 1}


def _one_clip_per_split(root, names):
  for name in names:
    frames = np.zeros((6, 16, 20, 3), np.uint8)
    video.write_video(root / name, frames, fps=12)


def test_upper_case_extension_is_found(tmp_path):
  root = tmp_path / "release"
  root.mkdir()
  _one_clip_per_split(root, ["Walk_p03_r00_v01_c01.MP4", "Enter_p19_r00_v03_c02.mp4",
                             "Sitdown_p02_r00_v04_c03.Mp4"])
  builder = smarthome.ToyotaSmarthome(config="cs", data_dir=str(tmp_path / "data"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  ids = {split: [ex["video_id"].decode() for ex in tfds.as_numpy(builder.as_dataset(split))]
         for split in ("train", "validation", "test")}
  assert ids == {"train": ["Walk_p03_r00_v01_c01"], "validation": ["Enter_p19_r00_v03_c02"],
                 "test": ["Sitdown_p02_r00_v04_c03"]}
  assert skips.read_summary(builder.data_path)["total_skipped"] == 0


def test_a_protocol_split_without_clips_fails_before_encoding(tmp_path, monkeypatch):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  root = tmp_path / "release"
  root.mkdir()
  _one_clip_per_split(root, ["Walk_p03_r00_v01_c01.mp4", "Sitdown_p02_r00_v04_c03.mp4"])
  calls = []
  monkeypatch.setattr(video, "read_video", lambda *a, **k: calls.append(a))
  with pytest.raises(ValueError) as error:
    prepare.prepare("toyota_smarthome/cs", str(root), str(tmp_path / "data"))
  message = str(error.value)
  assert "split 'validation'" in message and "p19, p25" in message
  assert calls == []
