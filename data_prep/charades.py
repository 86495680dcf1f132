"""Charades (Sigurdsson et al., ECCV 2016) as a TFDS dataset, from the release as shipped.

Configs: `full` (the 157 Charades classes) and `synthetic` (the built-in synthetic dataset
of `data_prep.synthetic`, written in the same release layout). See docs/facts.md §4.
"""

import csv
import dataclasses
import os
import re
from typing import Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data_prep import features as features_lib
from data_prep import skips
from data_prep import synthetic
from data_prep import video as video_lib
from data_prep import video_builder

NUM_CLASSES = 157
RGB_RELEASE_FPS = 24.0  # Charades_v1_rgb frames.
_CODE = re.compile(r"^c\d{3}$")
_REQUIRED_COLUMNS = ("id", "actions", "length")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Charades from https://prb.allenai.org/projects/charades (or the synthetic stand-in
with `python -m data_prep.synthetic --out=DIR`) and unzip into `manual_dir` as shipped:

  manual_dir/
    Charades/Charades_v1_train.csv, Charades/Charades_v1_test.csv,
    Charades/Charades_v1_classes.txt
    Charades_v1_480/<id>.mp4             (480p videos), and/or
    Charades_v1_rgb/<id>/<id>-000001.jpg (24 fps JPEG frames)

Videos are looked up first as mp4, then as a JPEG folder. Object maps come from
`segmenter=` (an ADE-20K SavedModel) or `object_maps_dir=` (`<dir>/<id>/<id>-000001.png`).
"""


@dataclasses.dataclass(eq=False)
class CharadesConfig(tfds.core.BuilderConfig):
  """Args: class_descriptions: one name per class (label i = code `c{i:03d}`); fps: frame
  rate of the stored frames (None keeps the source rate); short_side: stored frames' short
  side in pixels (None keeps the source size)."""
  class_descriptions: tuple = ()
  fps: Optional[float] = 12.0
  short_side: Optional[int] = 256


def class_codes(num_classes):
  return [f"c{i:03d}" for i in range(num_classes)]


def find_release_path(manual_dir, name):
  """`name` under manual_dir, manual_dir/Charades or any direct sub-folder; else None."""
  candidates = [os.path.join(manual_dir, name), os.path.join(manual_dir, "Charades", name)]
  if os.path.isdir(manual_dir):
    candidates += [os.path.join(manual_dir, d, name) for d in sorted(os.listdir(manual_dir))]
  for path in candidates:
    if os.path.exists(path):
      return path
  return None


def read_classes_file(path, codes, report):
  """`c000 Holding some clothes` lines -> {code: description} for the known codes."""
  descriptions = {}
  with open(path, encoding="utf-8-sig") as f:  # A BOM (Excel) is not part of the text.
    for line_number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      code, _, description = line.partition(" ")
      if code not in codes:
        report.skip(skips.UNKNOWN_CLASS, f"{path}:{line_number}", f"class line {line!r}")
        continue
      if description.strip():  # A bare code keeps the code as its name.
        descriptions[code] = description.strip()
  return descriptions


def parse_actions(text, code_to_label, report=None, where="", video_id=""):
  """`c092 11.90 21.20;c147 0.00 12.60` -> (segments [(label, start, end)], labels).

  One bad action never loses the video's other actions (docs/facts.md §6); each is
  counted in `report` under its own reason:
  * `reversed_action`: start after end (several videos of the official train CSV). Kept
    with its ends swapped; the official scorer counts its class like any other.
  * `malformed_action`: an unreadable item. When its class code is readable and known, the
    class stays a video label (the official scorer counts it) but gives no segment.
  * `unknown_class`: a code that is not a class of this config; dropped.

  Returns:
    `segments`: the actions with readable times, in file order; `labels`: the sorted
    class labels of every action with a known code (the video-level ground truth).
  """
  def count(reason, detail, repaired=False):
    if report is not None:
      (report.repair if repaired else report.skip)(reason, where, f"video {video_id}: {detail}")

  segments, labels = [], set()
  for item in (text or "").split(";"):
    item = item.strip()
    if not item:
      continue
    parts = item.split()
    code = parts[0] if parts and _CODE.match(parts[0]) else None
    if code is not None and code not in code_to_label:
      count(skips.UNKNOWN_CLASS, f"class code {code} in action {item!r}")
      continue
    try:
      if code is None or len(parts) != 3:
        raise ValueError
      start, end = float(parts[1]), float(parts[2])
      if not (np.isfinite(start) and np.isfinite(end)):
        raise ValueError
    except ValueError:
      count(skips.MALFORMED_ACTION, f"action {item!r}" + (
          f" (class {code} kept as a video label)" if code is not None else ""))
      if code is not None:
        labels.add(code_to_label[code])
      continue
    if end < start:
      count(skips.REVERSED_ACTION, f"action {item!r} ends before it starts; ends swapped",
            repaired=True)
      start, end = end, start
    segments.append((code_to_label[code], start, end))
    labels.add(code_to_label[code])
  return segments, sorted(labels)


def read_split_csv(path, code_to_label, report):
  """Parses a Charades CSV by header name.

  A row without a usable id (or with the wrong number of fields) is skipped as
  `malformed_row`; a bad `length` only loses the length (`bad_length`; the video's duration
  is used); bad actions are handled one by one (`parse_actions`).

  Returns:
    list of {'id', 'segments': [(label, start, end)], 'labels': [label], 'length': float or
    None, 'where': 'file:line'}.
  """
  rows = []
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      report.skip(skips.MALFORMED_ROW, path, f"header lacks columns {missing}")
      return rows
    for row in reader:
      where = f"{path}:{reader.line_num}"
      if None in row or any(row.get(c) is None for c in _REQUIRED_COLUMNS):
        report.skip(skips.MALFORMED_ROW, where, "wrong number of fields")
        continue
      video_id = row["id"].strip()
      if not video_id or os.sep in video_id or video_id.startswith("."):
        report.skip(skips.MALFORMED_ROW, where, f"bad id {row['id']!r}")
        continue
      length = None
      try:
        if row["length"].strip():
          length = float(row["length"])
        if length is not None and not (np.isfinite(length) and length >= 0):
          raise ValueError
      except ValueError:
        report.repair(skips.BAD_LENGTH, where,
                      f"video {video_id}: length {row['length']!r}; its duration is used")
        length = None
      segments, labels = parse_actions(row["actions"], code_to_label, report, where,
                                       video_id)
      rows.append({"id": video_id, "segments": segments, "labels": labels,
                   "length": length, "where": where})
  return rows


def _mp4_files(videos_480):
  """`{video id: path}` of the mp4 files in `videos_480` (None: none), read in one listing.

  The extension may be of any case in copies of the release (`.MP4`, `.Mp4`); when two
  files differ only there, `.mp4` wins, then the first name in sorted order.
  """
  if not videos_480:
    return {}
  files = {}
  for name in sorted(os.listdir(videos_480), key=lambda name: (name[-4:] != ".mp4", name)):
    stem, extension = os.path.splitext(name)
    path = os.path.join(videos_480, name)
    if extension.lower() == ".mp4" and stem not in files and os.path.isfile(path):
      files[stem] = path
  return files


def _find_videos(mp4_files, videos_rgb, video_id):
  """The existing sources of `video_id`, best first: its mp4 (from `_mp4_files`), then its
  JPEG frame folder."""
  sources = [mp4_files[video_id]] if video_id in mp4_files else []
  if videos_rgb and os.path.isdir(os.path.join(videos_rgb, video_id)):
    sources.append(os.path.join(videos_rgb, video_id))
  return sources


class Charades(video_builder.VideoBuilder):
  """Charades videos with multi-label action segments and optional object maps.

  Args (besides the tfds ones):
    segmenter: ADE-20K SavedModel path for object maps (see data_prep/object_maps.py).
    object_maps_dir: folder of precomputed per-frame maps.
    segmenter_batch_size: frames per segmenter call.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      CharadesConfig(name="full", description="Charades, 157 classes.",
                     class_descriptions=()),
      CharadesConfig(name="synthetic", fps=None, short_side=None,
                     description="Built-in synthetic dataset (data_prep/synthetic.py).",
                     class_descriptions=tuple(synthetic.CLASSES)),
  ]
  DEFAULT_CONFIG_NAME = "full"

  @property
  def num_classes(self):
    return len(self.builder_config.class_descriptions) or NUM_CLASSES

  def _info(self):
    codes = class_codes(self.num_classes)
    label = tfds.features.ClassLabel(names=codes)
    features = features_lib.video_features()
    features.update({
        "labels": tfds.features.Sequence(label),
        "segments": tfds.features.Sequence({
            "label": tfds.features.ClassLabel(names=codes),
            "start": np.float32,
            "end": np.float32,
        }),
        "length": np.float32,
    })
    descriptions = list(self.builder_config.class_descriptions) or codes
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        homepage="https://prb.allenai.org/projects/charades",
        metadata=tfds.core.MetadataDict(object_maps=self._object_source.kind,
                                        class_names=descriptions),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    codes = class_codes(self.num_classes)
    code_to_label = {c: i for i, c in enumerate(codes)}
    classes_file = find_release_path(manual_dir, "Charades_v1_classes.txt")
    if classes_file:
      names = read_classes_file(classes_file, set(codes), self.skip_report)
      self.info.metadata["class_names"] = [names.get(c, c) for c in codes]
    else:
      logging.warning("No Charades_v1_classes.txt in %s; class names are the codes.",
                      manual_dir)
    videos_480 = find_release_path(manual_dir, "Charades_v1_480")
    videos_rgb = find_release_path(manual_dir, "Charades_v1_rgb")
    mp4_files = _mp4_files(videos_480)
    seen = set()
    splits, annotations = {}, {}
    for split, csv_name in (("train", "Charades_v1_train.csv"),
                            ("test", "Charades_v1_test.csv")):
      csv_path = find_release_path(manual_dir, csv_name)
      if csv_path is None:
        raise FileNotFoundError(f"{csv_name} not found in {manual_dir}.\n"
                                f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
      usable, annotated = [], []
      for row in read_split_csv(csv_path, code_to_label, self.skip_report):
        if row["id"] in seen:
          self.skip_report.skip(skips.DUPLICATE_ID, row["where"], f"video {row['id']}")
          continue
        seen.add(row["id"])
        annotated.append([row["id"], row["labels"]])
        sources = _find_videos(mp4_files, videos_rgb, row["id"])
        if not sources:
          self.skip_report.skip(skips.MISSING_VIDEO, row["where"],
                                f"no {row['id']}.mp4 or frame folder {row['id']}/")
          continue
        row["source"], row["fallback"] = sources[0], sources[1:]
        if self.has_object_maps(sources[0], row["id"]):
          usable.append(row)
      splits[split], annotations[split] = usable, annotated
    if not any(splits.values()):
      raise ValueError(f"Nothing usable in manual_dir {manual_dir}.\n"
                       f"{self.skip_report.format()}\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    # Evaluation scores the annotated videos that preparation could not keep as the
    # official scorer does (official/evaluation/writers.py).
    self.info.metadata["annotations"] = annotations
    self.check_splits(splits, {s: len(a) for s, a in annotations.items()},
                      lambda split: f"their videos go in {videos_480 or 'Charades_v1_480/'} "
                                    f"or {videos_rgb or 'Charades_v1_rgb/'}")
    return {split: self._generate_examples(split, rows) for split, rows in splits.items()}

  def release_files(self, manual_dir):
    manual_dir = os.fspath(manual_dir)
    files = [(path, True) for path in (
        find_release_path(manual_dir, name) for name in (
            "Charades_v1_classes.txt", "Charades_v1_train.csv", "Charades_v1_test.csv"))
             if path]
    for folder in ("Charades_v1_480", "Charades_v1_rgb"):
      path = find_release_path(manual_dir, folder)
      if path:
        files += [(f, False) for f in video_builder.files_under(path)]
    return files

  def example(self, row, report):
    config = self.builder_config
    def read(source):
      if source.lower().endswith(".mp4"):
        return video_lib.read_video(source, config.fps, config.short_side)
      return video_lib.read_frame_folder(source, RGB_RELEASE_FPS, config.fps,
                                         config.short_side)

    repairs = []

    def read_with_fallback():
      # A broken mp4 with an intact JPEG release of the same video: use the frames.
      try:
        return read(row["source"])
      except video_lib.VideoReadError as e:
        if not row["fallback"]:
          raise
        frames = row["fallback"][0]
        try:
          decoded = read(frames)
        except video_lib.VideoReadError as frames_error:
          # One skip, under the mp4's own reason (truncated or corrupt).
          raise type(e)(f"{e}; its frames in {frames} could not be read either: "
                        f"{frames_error}") from frames_error
        repairs.append(f"{e}; using the frames in {frames}")
        return decoded

    encoded = self._encode_or_skip(row["source"], row["id"], read_with_fallback, report)
    if encoded is None:
      return None
    for detail in repairs:  # Counted only for a video that was kept.
      report.repair(skips.VIDEO_FROM_FRAMES, row["source"], detail)
    example, decoded = encoded
    length = row["length"]
    if length is None:
      length = decoded.duration
    example.update({
        "labels": row["labels"],
        "segments": [{"label": label, "start": start, "end": end}
                     for label, start, end in row["segments"]],
        "length": np.float32(length),
    })
    return row["id"], example
