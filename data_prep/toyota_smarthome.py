"""Toyota Smarthome (trimmed; Das et al., ICCV 2019) as a TFDS dataset. docs/facts.md §5.

Configs `cs` (cross-subject, 31 classes), `cv1` and `cv2` (cross-view, 19 classes). Clips
are the release's `.mp4` files, found anywhere under `manual_dir`.
"""

import dataclasses
import os
import re
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from data_prep import features as features_lib
from data_prep import skips
from data_prep import video as video_lib
from data_prep import video_builder

CS_CLASSES = (
    "Cook.Cleandishes", "Cook.Cleanup", "Cook.Cut", "Cook.Stir", "Cook.Usestove",
    "Cutbread", "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass",
    "Eat.Attable", "Eat.Snack", "Enter", "Getup", "Laydown", "Leave",
    "Makecoffee.Pourgrains", "Makecoffee.Pourwater", "Maketea.Boilwater",
    "Maketea.Insertteabag", "Pour.Frombottle", "Pour.Fromcan", "Pour.Fromkettle",
    "Readbook", "Sitdown", "Takepills", "Uselaptop", "Usetablet", "Usetelephone", "Walk",
    "WatchTV")
CV_CLASSES = (
    "Cutbread", "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass",
    "Eat.Attable", "Eat.Snack", "Enter", "Getup", "Leave", "Pour.Frombottle",
    "Pour.Fromcan", "Readbook", "Sitdown", "Takepills", "Uselaptop", "Usetablet",
    "Usetelephone", "Walk")
EXCLUDED_CLASSES = ("Pour.Fromcup",)  # 14 clips outside the 31 classes.
# Extensions may be upper case (`.MP4`) in copies of the release.
_FILE_NAME = re.compile(r"^([A-Za-z][A-Za-z.]*)_p(\d+)_r(\d+)_v(\d+)_c(\d+)\.(?i:mp4)$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request Toyota Smarthome (trimmed) at https://project.inria.fr/toyotasmarthome and unpack
the videos into `manual_dir` as shipped (an `mp4/` folder of
`<Activity>_pSS_rRR_vVV_cCC.mp4` clips). Clips are found anywhere under `manual_dir`.
"""


@dataclasses.dataclass(eq=False)
class SmarthomeConfig(tfds.core.BuilderConfig):
  """A protocol: its classes and which subjects (or cameras) form each split."""
  classes: tuple = ()
  split_by: str = "subject"  # "subject" or "camera".
  train: tuple = ()
  validation: tuple = ()
  test: tuple = ()
  fps: Optional[float] = 12.0
  short_side: Optional[int] = 256


def parse_file_name(name):
  """`Drink.Fromcup_p17_r02_v09_c01.mp4` -> (activity, subject, camera) or None."""
  match = _FILE_NAME.match(name)
  if not match:
    return None
  return match.group(1), int(match.group(2)), int(match.group(5))


class ToyotaSmarthome(video_builder.VideoBuilder):
  """Toyota Smarthome trimmed clips, one activity label each, optional object maps.

  Args (besides the tfds ones): segmenter, object_maps_dir, segmenter_batch_size as for
  `data_prep.charades.Charades`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      SmarthomeConfig(name="cs", description="Cross-subject, 31 classes.",
                      classes=CS_CLASSES, split_by="subject",
                      train=(3, 4, 6, 7, 9, 12, 13, 15, 17), validation=(19, 25),
                      test=(2, 10, 11, 14, 16, 18, 20)),
      SmarthomeConfig(name="cv1", description="Cross-view 1, 19 classes.",
                      classes=CV_CLASSES, split_by="camera", train=(1,), validation=(5,),
                      test=(2,)),
      SmarthomeConfig(name="cv2", description="Cross-view 2, 19 classes.",
                      classes=CV_CLASSES, split_by="camera", train=(1, 3, 4, 6, 7),
                      validation=(5,), test=(2,)),
  ]

  def _info(self):
    features = features_lib.video_features()
    features.update({
        "label": tfds.features.ClassLabel(names=self.builder_config.classes),
        "subject": np.int32,
        "camera": np.int32,
    })
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        homepage="https://project.inria.fr/toyotasmarthome",
        metadata=tfds.core.MetadataDict(object_maps=self._object_source.kind,
                                        class_names=list(self.builder_config.classes)),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    split_of = {}
    for split in ("train", "validation", "test"):
      for key in getattr(config, split):
        split_of[key] = split
    splits = {"train": [], "validation": [], "test": []}
    annotated = {"train": [], "validation": [], "test": []}
    seen = {}
    for root, dirs, files in os.walk(manual_dir):
      dirs.sort()
      for name in sorted(files):
        if not name.lower().endswith(".mp4"):
          continue
        path = os.path.join(root, name)
        parsed = parse_file_name(name)
        if parsed is None:
          self.skip_report.skip(skips.UNPARSABLE_NAME, path,
                                "expected <Activity>_pSS_rRR_vVV_cCC.mp4")
          continue
        activity, subject, camera = parsed
        if activity in EXCLUDED_CLASSES:
          self.skip_report.note(skips.EXCLUDED_CLASS, path, f"{activity} is not a class")
          continue
        if activity not in CS_CLASSES:
          self.skip_report.skip(skips.UNKNOWN_CLASS, path, f"activity {activity!r}")
          continue
        if activity not in config.classes:
          # Expected: the cross-view protocols use 19 of the 31 activities.
          self.skip_report.note(skips.EXCLUDED_CLASS, path,
                                f"{activity} is not in the {config.name} classes")
          continue
        key = subject if config.split_by == "subject" else camera
        if key not in split_of:
          what = f"subject p{subject:02d}" if config.split_by == "subject" else (
              f"camera c{camera:02d}")
          self.skip_report.note(skips.NOT_IN_SPLIT, path,
                                f"{what} is in no {config.name} split")
          continue
        video_id = os.path.splitext(name)[0]
        if video_id in seen:
          self.skip_report.skip(skips.DUPLICATE_ID, path, f"same name as {seen[video_id]}")
          continue
        seen[video_id] = path
        clip = {"id": video_id, "source": path, "label": activity, "subject": subject,
                "camera": camera}
        annotated[split_of[key]].append(clip)
        if self.has_object_maps(path, video_id):
          splits[split_of[key]].append(clip)
    if not any(splits.values()):
      raise ValueError(f"Nothing usable in manual_dir {manual_dir}: no parsable clip of "
                       f"the {config.name} protocol.\n{self.skip_report.format()}\n"
                       f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    # Every clip of each split, decodable or not: evaluation counts the ones preparation
    # could not keep (official/evaluation/writers.py).
    self.info.metadata["annotations"] = {
        split: [[clip["id"], [config.classes.index(clip["label"])]] for clip in clips]
        for split, clips in annotated.items()}

    def needs(split):
      keys = getattr(config, split)
      if config.split_by == "subject":
        return "it takes subjects " + ", ".join(f"p{k:02d}" for k in keys)
      return "it takes cameras " + ", ".join(f"c{k:02d}" for k in keys)
    self.check_splits(splits, {s: len(c) for s, c in annotated.items()}, needs)
    return {split: self._generate_examples(split, clips) for split, clips in splits.items()}

  def release_files(self, manual_dir):
    return [(f, False) for f in video_builder.files_under(manual_dir, (".mp4",))]

  def example(self, row, report):
    config = self.builder_config
    encoded = self._encode_or_skip(
        row["source"], row["id"],
        lambda: video_lib.read_video(row["source"], config.fps, config.short_side), report)
    if encoded is None:
      return None
    example, _ = encoded
    example.update({"label": row["label"], "subject": np.int32(row["subject"]),
                    "camera": np.int32(row["camera"])})
    return row["id"], example
