import csv
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_prep import charades
from data_prep import skips
from data_prep import video

HEADER = ("id,subject,scene,quality,relevance,verified,script,objects,descriptions,"
          "actions,length")


def _write_csv(path, lines):
  with open(path, "w", newline="") as f:
    f.write(HEADER + "\n")
    f.writelines(line + "\n" for line in lines)


def _flat_video(path, value, num_frames, fps=24):
  video.write_video(path, np.full((num_frames, 16, 24, 3), value, np.uint8), fps)


def _maps_folder(root, video_id, num_frames):
  # Map k holds the value k: stored maps reveal which source frame they came from.
  folder = os.path.join(root, video_id)
  os.makedirs(folder)
  for k in range(num_frames):
    Image.fromarray(np.full((8, 12), k, np.uint8)).save(
        os.path.join(folder, f"{video_id}-{k + 1:06d}.png"))


def make_release(root):
  """A small Charades release with every kind of bad input the builder must survive."""
  meta = os.path.join(root, "Charades")
  videos = os.path.join(root, "Charades_v1_480")
  frames = os.path.join(root, "Charades_v1_rgb", "T0001")
  maps = os.path.join(root, "objects")
  for d in (meta, videos, frames, maps):
    os.makedirs(d)
  with open(os.path.join(meta, "Charades_v1_classes.txt"), "w") as f:
    f.writelines(f"c{i:03d} Class number {i}\n" for i in range(157))
    f.write("c999 Not a class\n")
  _write_csv(os.path.join(meta, "Charades_v1_train.csv"), [
      'V0001,S1,Kitchen,6,7,Yes,"Holding a cup, then walking",cup;door,"A, B",'
      '"c001 0.00 1.00;c005 0.50 2.00",2.50',
      "V0002,S2,Hall,6,7,Yes,Short video,,,,1.25",  # Empty actions, 6 source frames.
      "V0003,S3,Hall,6,7,Yes,Corrupt,,,c002 0.0 1.0,3.0",
      "V0004,S4,Hall,6,7,Yes,No video,,,c003 0.0 1.0,3.0",
      "V0005,S5,Hall,6,7,Yes,Unknown class,,,c157 0.0 1.0,3.0",  # Kept, action dropped.
      "V0006,S6,Hall,6,7,Yes,Bad length,,,c001 0.0 1.0,abc",
      "V0007,S7",  # Too few fields.
  ])
  _write_csv(os.path.join(meta, "Charades_v1_test.csv"), [
      "T0001,S8,Bedroom,6,7,Yes,JPEG frames,,,c156 0.10 0.20,0.33",
      "V0001,S1,Kitchen,6,7,Yes,Duplicate,,,c001 0.0 1.0,2.5",
      "T0002,S9,Bedroom,6,7,Yes,No object maps,,,c010 0.0 1.0,1.0",
  ])
  _flat_video(os.path.join(videos, "V0001.mp4"), 50, 30)
  _flat_video(os.path.join(videos, "V0002.mp4"), 200, 6)
  _flat_video(os.path.join(videos, "T0002.mp4"), 90, 12)
  with open(os.path.join(videos, "V0003.mp4"), "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42 truncated garbage")
  for k in range(8):
    Image.fromarray(np.full((16, 24, 3), 120, np.uint8)).save(
        os.path.join(frames, f"T0001-{k + 1:06d}.jpg"), quality=95)
  _maps_folder(maps, "V0001", 30)
  _maps_folder(maps, "V0003", 30)  # Maps present: the video itself is corrupt.
  _maps_folder(maps, "V0002", 6)
  _maps_folder(maps, "T0001", 8)
  return maps


def _small_config():
  return charades.CharadesConfig(name="small", fps=12.0, short_side=8,
                                 description="157 classes, tiny frames")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("release"))
  maps = make_release(root)
  builder = charades.Charades(config=_small_config(), object_maps_dir=maps,
                              data_dir=str(tmp_path_factory.mktemp("data")))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=root))
  examples = {split: {ex["video_id"].decode(): ex
                      for ex in tfds.as_numpy(builder.as_dataset(split=split))}
              for split in ("train", "test")}
  return builder, examples


@pytest.mark.slow
def test_split_membership(prepared):
  _, examples = prepared
  assert sorted(examples["train"]) == ["V0001", "V0002"]
  assert sorted(examples["test"]) == ["T0001"]


@pytest.mark.slow
def test_labels_segments_and_lengths(prepared):
  _, examples = prepared
  v1, v2, t1 = examples["train"]["V0001"], examples["train"]["V0002"], examples["test"]["T0001"]
  np.testing.assert_array_equal(v1["labels"], [1, 5])
  np.testing.assert_array_equal(v1["segments"]["label"], [1, 5])
  np.testing.assert_allclose(v1["segments"]["start"], [0.0, 0.5])
  np.testing.assert_allclose(v1["segments"]["end"], [1.0, 2.0])
  assert v1["length"] == pytest.approx(2.5)
  assert len(v2["labels"]) == 0 and len(v2["segments"]["label"]) == 0
  assert v2["length"] == pytest.approx(1.25)
  np.testing.assert_array_equal(t1["labels"], [156])


@pytest.mark.slow
def test_frames_resampled_resized_and_maps_follow_source_frames(prepared):
  _, examples = prepared
  v1, v2, t1 = examples["train"]["V0001"], examples["train"]["V0002"], examples["test"]["T0001"]
  # 30 source frames at 24 fps -> 15 at 12 fps; 6 -> 3 (short, kept); 8 JPEGs -> 4.
  assert (v1["num_frames"], v2["num_frames"], t1["num_frames"]) == (15, 3, 4)
  assert v1["fps"] == 12.0 and t1["fps"] == 12.0
  assert v1["frames"].shape == (15, 8, 12, 3) and t1["frames"].shape == (4, 8, 12, 3)
  np.testing.assert_allclose(v1["frames"].mean(axis=(1, 2, 3)), 50, atol=3)
  np.testing.assert_allclose(t1["frames"].mean(axis=(1, 2, 3)), 120, atol=3)
  # Stored frame k is source frame 2k, whose map holds the value 2k (resized to 8x12).
  assert v1["object_maps"].shape == (15, 8, 12, 1)
  np.testing.assert_array_equal(v1["object_maps"][:, 3, 5, 0], np.arange(0, 30, 2))
  np.testing.assert_array_equal(t1["object_maps"][:, 0, 0, 0], [0, 2, 4, 6])


@pytest.mark.slow
def test_skip_summary_counts_and_json(prepared):
  builder, _ = prepared
  summary = skips.read_summary(builder.data_path)
  assert summary["by_reason"] == {
      "bad_length": 1, "corrupt_video": 1, "duplicate_id": 1, "malformed_row": 1,
      "missing_object_maps": 1, "missing_video": 3, "unknown_class": 2}
  assert (summary["total_skipped"], summary["total_repaired"]) == (9, 1)  # bad_length repaired
  files = {r: [f["path"] for f in v] for r, v in summary["files"].items()}
  assert files["corrupt_video"][0].endswith("V0003.mp4")
  assert files["missing_object_maps"][0].endswith("T0002.mp4")
  assert files["unknown_class"][1].endswith("Charades_v1_train.csv:6")
  assert builder.info.metadata["class_names"][156] == "Class number 156"
  assert builder.info.metadata["object_maps"] == "directory"
  # Every annotated video, prepared or not, in file order: evaluation scores the missing
  # ones as the official scorer does.
  assert builder.info.metadata["annotations"] == {
      "train": [["V0001", [1, 5]], ["V0002", []], ["V0003", [2]], ["V0004", [3]],
                ["V0005", []], ["V0006", [1]]],
      "test": [["T0001", [156]], ["T0002", [10]]]}
  with open(os.path.join(builder.data_dir, "skip_summary.json")) as f:
    assert json.load(f) == summary


def test_read_split_csv_parses_by_header_with_quoted_commas(tmp_path):
  path = tmp_path / "split.csv"
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["length", "id", "actions", "script"])  # Columns in another order.
    writer.writerow(["3.5", "AB12C", "c003 0.5 1.5; c001 1.0 9.0", "a, b, and c"])
    writer.writerow(["", "XY", "", "no length"])
    writer.writerow(["2", "", "c001 0 1", "no id"])
    writer.writerow(["2", "Z2", "c001 0 1", "extra", "field"])
    writer.writerow(["x", "Z3", "c001 0 1", "bad length"])
  report = skips.SkipReport("test")
  rows = charades.read_split_csv(str(path), {"c001": 1, "c003": 3}, report)
  # A bad length loses only the length (the video's duration is used instead).
  assert [(r["id"], r["segments"], r["length"]) for r in rows] == [
      ("AB12C", [(3, 0.5, 1.5), (1, 1.0, 9.0)], 3.5), ("XY", [], None),
      ("Z3", [(1, 0.0, 1.0)], None)]
  assert report.as_dict()["by_reason"] == {"bad_length": 1, "malformed_row": 2}


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
  # Excel saves CSVs with a UTF-8 BOM before "id".
  path = tmp_path / "split.csv"
  path.write_bytes(("\ufeff" + HEADER + "\r\nA1,S,K,6,7,Yes,x,,,c001 0 1,2.0\r\n")
                   .encode("utf-8"))
  report = skips.SkipReport("test")
  rows = charades.read_split_csv(str(path), {"c001": 1}, report)
  assert [(r["id"], r["labels"]) for r in rows] == [("A1", [1])] and report.total == 0
  classes = tmp_path / "classes.txt"
  classes.write_bytes("\ufeffc001 Holding a cup \r\n".encode("utf-8"))
  assert charades.read_classes_file(str(classes), {"c001"}, report) == {
      "c001": "Holding a cup"}


def test_a_class_line_without_a_description_keeps_the_code_as_its_name(tmp_path):
  # Before: `c002` alone gave the class an empty name, which the export's class-name table
  # cannot hold (it failed with a raw TF error after training).
  report = skips.SkipReport("test")
  classes = tmp_path / "classes.txt"
  classes.write_text("c001 Holding a cup\nc002\nc003   \n")
  assert charades.read_classes_file(str(classes), {"c001", "c002", "c003"}, report) == {
      "c001": "Holding a cup"}


def test_a_bad_action_is_dropped_alone_and_a_reversed_one_kept(tmp_path):
  # The official train CSV has videos with an action whose start is after its end; the
  # official scorer counts such a class like any other (docs/facts.md §6).
  path = tmp_path / "split.csv"
  _write_csv(path, [
      'R1,S,K,6,7,Yes,x,,,"c001 5.0 2.0;c003 0.5 1.5",6.0',
      'R2,S,K,6,7,Yes,x,,,"c003 0 1;c157 0.0 1.0;c001 abc 1.0;c00x 1 2",6.0',
  ])
  report = skips.SkipReport("test")
  rows = charades.read_split_csv(str(path), {"c001": 1, "c003": 3}, report)
  assert [r["id"] for r in rows] == ["R1", "R2"]
  assert rows[0]["segments"] == [(1, 2.0, 5.0), (3, 0.5, 1.5)]
  assert rows[0]["labels"] == [1, 3]
  # c001 with an unreadable time still names a class the video shows (the scorer counts
  # it); it has no interval, so it is a video label but not a segment.
  assert rows[1]["segments"] == [(3, 0.0, 1.0)]
  assert rows[1]["labels"] == [1, 3]
  assert report.as_dict()["by_reason"] == {"malformed_action": 2, "reversed_action": 1,
                                           "unknown_class": 1}
  assert "R1" in report.as_dict()["files"]["reversed_action"][0]["detail"]


def test_nothing_usable_is_a_clear_error(tmp_path):
  meta = tmp_path / "Charades"
  meta.mkdir()
  for split in ("train", "test"):
    _write_csv(meta / f"Charades_v1_{split}.csv", [f"{split}1,S,K,6,7,Yes,x,,,,1.0"])
  builder = charades.Charades(config=_small_config(), data_dir=str(tmp_path / "data"))
  with pytest.raises(ValueError, match="Nothing usable"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))
  assert not list((tmp_path / "data").glob("charades/small/1.0.0/*.tfrecord*"))


def _tiny_release(root, test_videos=True):
  """One train and two test videos (optionally without the test mp4s), with object maps."""
  meta, videos, maps = (os.path.join(root, d) for d in ("Charades", "Charades_v1_480", "maps"))
  for d in (meta, videos, maps):
    os.makedirs(d)
  _write_csv(os.path.join(meta, "Charades_v1_train.csv"),
             ["A1,S,K,6,7,Yes,x,,,c001 0.0 0.5,0.5"])
  _write_csv(os.path.join(meta, "Charades_v1_test.csv"),
             ["B1,S,K,6,7,Yes,x,,,c002 0.0 0.5,0.5", "B2,S,K,6,7,Yes,x,,,c003 0.0 0.5,0.5"])
  for vid in ("A1", "B1", "B2") if test_videos else ("A1",):
    _flat_video(os.path.join(videos, vid + ".mp4"), 80, 6)
    _maps_folder(maps, vid, 6)
  return maps


def _count_decodes(monkeypatch):
  calls = []
  real = video.read_video

  def counting(*args, **kwargs):
    calls.append(args[0])
    return real(*args, **kwargs)
  monkeypatch.setattr(video, "read_video", counting)
  return calls


def test_a_split_without_any_video_fails_before_encoding(tmp_path, monkeypatch):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  _tiny_release(str(tmp_path / "release"), test_videos=False)
  calls = _count_decodes(monkeypatch)
  data_dir = tmp_path / "data"
  with pytest.raises(ValueError) as error:
    prepare.prepare("charades", str(tmp_path / "release"), str(data_dir))
  message = str(error.value)
  assert "split 'test'" in message and "0 of 2 videos found, 2 missing" in message
  assert "missing_video: 2" in message
  assert calls == []  # Nothing was decoded, so no hours of work were thrown away.
  summary = data_dir / "charades" / "full" / skips.FAILED_SUMMARY_FILENAME
  assert str(summary) in message
  assert json.loads(summary.read_text())["by_reason"] == {"missing_video": 2}


def test_rerun_with_other_inputs_rebuilds_only_with_overwrite(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release = str(tmp_path / "release")
  maps = _tiny_release(release)
  data_dir = str(tmp_path / "data")
  builder = prepare.prepare("charades", release, data_dir)
  assert builder.info.metadata["object_maps"] == "none"
  recorded = builder.info.metadata["preparation"]
  assert recorded["fps"] == 12.0 and recorded["short_side"] == 256
  assert recorded["object_maps"] == {"kind": "none"}
  # Same inputs: the prepared data is reused.
  assert prepare.prepare("charades", release, data_dir).info.metadata["preparation"] == (
      recorded)
  with pytest.raises(ValueError,
                     match=r"(?s)object maps: prepared with .*none.*directory.*--overwrite"):
    prepare.prepare("charades", release, data_dir, object_maps_dir=maps)
  # A changed release (a video added to the listing) is noticed too.
  _flat_video(os.path.join(release, "Charades_v1_480", "extra.mp4"), 10, 4)
  with pytest.raises(ValueError, match=r"(?s)source listing.*--overwrite"):
    prepare.prepare("charades", release, data_dir)
  rebuilt = prepare.prepare("charades", release, data_dir, object_maps_dir=maps,
                            overwrite=True)
  assert rebuilt.info.metadata["object_maps"] == "directory"
  example = next(iter(tfds.as_numpy(rebuilt.as_dataset(split="train"))))
  assert len(example["object_maps"]) == example["num_frames"] == 3


def test_missing_object_maps_of_a_whole_split_stop_before_decoding(tmp_path, monkeypatch):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  maps = _tiny_release(str(tmp_path / "release"))
  for vid in ("B1", "B2"):
    shutil.rmtree(os.path.join(maps, vid))
  calls = _count_decodes(monkeypatch)
  with pytest.raises(ValueError, match=r"(?s)split 'test'.*missing_object_maps: 2"):
    prepare.prepare("charades", str(tmp_path / "release"), str(tmp_path / "data"),
                    object_maps_dir=maps)
  assert calls == []


def test_overwrite_keeps_the_prepared_data_when_the_rebuild_fails(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  _tiny_release(release)
  prepare.prepare("charades", release, data_dir)
  for vid in ("B1", "B2"):  # The user now has only part of the release.
    os.remove(os.path.join(release, "Charades_v1_480", vid + ".mp4"))
  with pytest.raises(ValueError, match="split 'test'"):
    prepare.prepare("charades", release, data_dir, overwrite=True)
  kept = tfds.builder("charades", data_dir=data_dir)
  assert kept.info.splits["test"].num_examples == 2
  assert len(list(tfds.as_numpy(kept.as_dataset(split="test")))) == 2
  assert sorted(f for f in os.listdir(os.path.join(data_dir, "charades", "full"))
                if not f.startswith(".")) == ["1.0.0", skips.FAILED_SUMMARY_FILENAME]
  # A mistyped manual_dir is named as such, and never wipes the data either.
  with pytest.raises(ValueError, match="manual_dir .*typo.* does not exist"):
    prepare.prepare("charades", release + "_typo", data_dir, overwrite=True)
  assert tfds.builder("charades", data_dir=data_dir).info.splits["test"].num_examples == 2


def test_same_size_edits_and_maps_outside_the_release_are_noticed(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  maps = _tiny_release(release)
  prepare.prepare("charades", release, data_dir, object_maps_dir=maps)
  csv_path = os.path.join(release, "Charades", "Charades_v1_test.csv")
  with open(csv_path) as f:
    text = f.read()
  with open(csv_path, "w") as f:
    f.write(text.replace("c003", "c004"))  # Same size, other label.
  with pytest.raises(ValueError, match=r"(?s)source listing.*--overwrite"):
    prepare.prepare("charades", release, data_dir, object_maps_dir=maps)
  with open(csv_path, "w") as f:
    f.write(text)
  prepare.prepare("charades", release, data_dir, object_maps_dir=maps)  # Reused again.
  # Maps rewritten in place (same files, other sizes) are noticed too.
  Image.fromarray(np.full((30, 40), 99, np.uint8)).save(os.path.join(maps, "B1",
                                                                     "B1-000001.png"))
  with pytest.raises(ValueError, match=r"(?s)object maps.*--overwrite"):
    prepare.prepare("charades", release, data_dir, object_maps_dir=maps)


def test_a_data_dir_inside_the_release_can_be_reused(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release = str(tmp_path / "release")
  _tiny_release(release)
  data_dir = os.path.join(release, "tfds")
  prepare.prepare("charades", release, data_dir)
  with open(os.path.join(release, "notes.txt"), "w") as f:
    f.write("my notes")  # Files the builder never reads do not matter either.
  assert prepare.prepare("charades", release, data_dir).info.splits["train"].num_examples == 1


def test_a_second_preparation_at_once_is_refused_and_leftovers_are_removed(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  _tiny_release(release)
  config_dir = os.path.join(data_dir, "charades", "full")
  with prepare._exclusive(config_dir, "charades/full/1.0.0"):  # pylint: disable=protected-access
    with pytest.raises(ValueError, match=r"Another preparation of charades/full.*pid \d+"):
      prepare.prepare("charades", release, data_dir)
  # What a kill -9 leaves: TFDS's incomplete folder and a staging data_dir of a rebuild.
  os.makedirs(os.path.join(config_dir, "incomplete.ABC123_1.0.0"))
  os.makedirs(os.path.join(data_dir, ".rebuild-charades-xyz", "charades"))
  prepare.prepare("charades", release, data_dir)
  assert sorted(f for f in os.listdir(config_dir) if not f.startswith(".")) == ["1.0.0"]
  assert not [d for d in os.listdir(data_dir) if d.startswith(".rebuild-")]


def test_a_broken_mp4_falls_back_to_the_jpeg_frames_of_the_release(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  _tiny_release(release)
  with open(os.path.join(release, "Charades_v1_480", "A1.mp4"), "r+b") as f:
    f.truncate(200)  # A download cut short.
  frames = os.path.join(release, "Charades_v1_rgb", "A1")
  os.makedirs(frames)
  for k in range(8):  # 8 JPEGs at 24 fps -> 4 stored frames at 12 fps.
    Image.fromarray(np.full((16, 24, 3), 30, np.uint8)).save(
        os.path.join(frames, f"A1-{k + 1:06d}.jpg"), quality=95)
  builder = prepare.prepare("charades", release, data_dir)
  example = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
  assert example["video_id"] == b"A1" and example["num_frames"] == 4
  np.testing.assert_allclose(example["frames"].mean(), 30, atol=3)
  summary = skips.read_summary(builder.data_path)
  assert summary["by_reason"] == {"video_from_frames": 1}
  assert "A1-" not in summary["files"]["video_from_frames"][0]["path"]


def test_a_broken_mp4_whose_frames_are_broken_too_is_one_skip_under_its_own_reason(
    tmp_path):
  # Before: the repair ("using the frames in ...") was counted before the frames were
  # read, so a video that was not kept counted twice, once as a repair, and its skip
  # carried only the frame folder's error (corrupt_video for a truncated mp4).
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  _tiny_release(release)
  meta, videos = os.path.join(release, "Charades"), os.path.join(release, "Charades_v1_480")
  _write_csv(os.path.join(meta, "Charades_v1_train.csv"),
             ["A1,S,K,6,7,Yes,x,,,c001 0.0 0.5,0.5", "A2,S,K,6,7,Yes,x,,,c004 0.0 0.5,0.5"])
  _flat_video(os.path.join(videos, "A2.mp4"), 80, 6)
  _maps_folder(os.path.join(release, "maps"), "A2", 6)
  with open(os.path.join(videos, "A2.mp4"), "r+b") as f:
    f.truncate(200)  # A download cut short.
  frames = os.path.join(release, "Charades_v1_rgb", "A2")
  os.makedirs(frames)
  for k in range(3):  # Its frame folder is there, but every JPEG is empty.
    open(os.path.join(frames, f"A2-{k + 1:06d}.jpg"), "wb").close()
  builder = prepare.prepare("charades", release, data_dir)
  ids = [e["video_id"] for e in tfds.as_numpy(builder.as_dataset(split="train"))]
  assert ids == [b"A1"]
  summary = skips.read_summary(builder.data_path)
  assert summary["by_reason"] == {"truncated_video": 1}
  assert summary["total_skipped"] == 1
  detail = summary["files"]["truncated_video"][0]["detail"]
  assert "truncated mp4" in detail and "A2" in detail and "could not be read" in detail


def test_mp4_extensions_of_any_case_are_found(tmp_path):
  # Before: only `.mp4` and `.MP4` were looked for; `A1.Mp4` counted as a missing video.
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  _tiny_release(release)
  videos = os.path.join(release, "Charades_v1_480")
  os.rename(os.path.join(videos, "A1.mp4"), os.path.join(videos, "A1.Mp4"))
  os.rename(os.path.join(videos, "B2.mp4"), os.path.join(videos, "B2.mP4"))
  builder = prepare.prepare("charades", release, data_dir)
  assert [e["video_id"] for e in tfds.as_numpy(builder.as_dataset(split="train"))] == [b"A1"]
  assert sorted(e["video_id"] for e in tfds.as_numpy(builder.as_dataset(split="test"))) == [
      b"B1", b"B2"]
  assert skips.read_summary(builder.data_path)["by_reason"] == {}
