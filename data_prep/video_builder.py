"""What the Charades and Toyota Smarthome TFDS builders share: manual-download video
releases, an object-map source, and a skip report that makes bad inputs visible."""

import hashlib
import os

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from data_prep import features as features_lib
from data_prep import skips
from data_prep import video as video_lib


# What preparation writes, versioned: bump it when a change gives other frames or labels
# for the same release (2: frames chosen by timestamp, display rotation applied, truncated
# videos skipped, reversed actions kept), so that `prepare` refuses to reuse older data.
PREPARATION_VERSION = 2


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the video dataset builders (abstract: TFDS does not register it).

  Args:
    segmenter: optional ADE-20K segmentation SavedModel path (object maps computed here).
    object_maps_dir: optional folder of precomputed per-frame object maps.
    segmenter_batch_size: frames per segmenter call.
    **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir, config, ...).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS 4.9.10 derives this via `importlib_resources`, a package Python 3.11 lacks.
    return epath.Path(__file__)

  def __init__(self, *, segmenter=None, object_maps_dir=None, segmenter_batch_size=16,
               **kwargs):
    self._object_source = features_lib.ObjectMapSource(segmenter, object_maps_dir,
                                                       segmenter_batch_size)
    super().__init__(**kwargs)
    self.skip_report = skips.SkipReport(self.info.full_name)

  def _encode_or_skip(self, source, video_id, read_fn):
    """Decodes one video with `read_fn() -> video_lib.DecodedVideo` and encodes it; a
    truncated or corrupt video or missing object maps is counted and gives `None`.

    Returns:
      `(example, decoded)` or `None`.
    """
    try:
      decoded = read_fn()
      example = features_lib.encode_video(
          decoded.frames, decoded.source_indices, decoded.num_source_frames,
          features_lib.stored_fps(self.builder_config.fps, decoded.source_fps), video_id,
          self._object_source)
    except video_lib.TruncatedVideoError as e:
      self.skip_report.skip(skips.TRUNCATED_VIDEO, source, str(e))
      return None
    except video_lib.VideoReadError as e:
      self.skip_report.skip(skips.CORRUPT_VIDEO, source, str(e))
      return None
    except features_lib.MissingObjectMaps as e:
      self.skip_report.skip(skips.MISSING_OBJECT_MAPS, source, str(e))
      return None
    return example, decoded

  def _download_and_prepare(self, dl_manager, download_config):
    self.info.metadata["preparation"] = self.preparation_record(dl_manager.manual_dir)
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    if not sum(split.num_examples for split in self.info.splits.values()):
      self.fail(f"Nothing usable in manual_dir {dl_manager.manual_dir}: every video was "
                "skipped.")
    self.skip_report.write(self.data_dir)  # The temporary dir, renamed on success.
    failed_summary = os.path.join(os.fspath(self.data_path.parent),
                                  skips.FAILED_SUMMARY_FILENAME)
    if os.path.exists(failed_summary):
      os.remove(failed_summary)
    logging.info("%s", self.skip_report.format())

  def preparation_record(self, manual_dir):
    """What the prepared data is made from, stored in the TFDS metadata `preparation`: the
    preparation and dataset versions, the config's frame rate and size, the object-map source
    and a fingerprint of the release's file listing (relative paths and sizes).
    `data_prep.prepare` compares it with a rerun's to refuse reusing stale data."""
    config = self.builder_config
    return {
        "preparation_version": PREPARATION_VERSION,
        "dataset_version": str(self.VERSION),
        "config": config.name,
        "fps": None if config.fps is None else float(config.fps),
        "short_side": config.short_side,
        "object_maps": self._object_source.record(),
        "source_listing": file_listing_fingerprint(manual_dir),
    }

  def fail(self, message):
    """Raises `ValueError(message)` with the skip summary, written first beside the data
    (`<data_dir>/<name>/<config>/skip_summary.failed.json`; removed by a later success)."""
    path = os.path.join(os.fspath(self.data_path.parent), skips.FAILED_SUMMARY_FILENAME)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self.skip_report.write_to(path)
    raise ValueError(f"{message}\n{self.skip_report.format()}\nSkip summary: {path}")

  def check_splits(self, splits, annotated, describe_missing):
    """Stops before any decoding when a split has no usable video.

    Args:
      splits: `{split: [usable video records]}`.
      annotated: `{split: number of videos the release annotates}`.
      describe_missing: `(split) -> str`, what the split needs (shown in the error).

    Raises:
      ValueError: naming each empty split with its found and missing counts.
    """
    empty = [s for s, rows in splits.items() if not rows]
    if not empty:
      return
    lines = []
    for split in empty:
      total = annotated.get(split, 0)
      counts = f"0 of {total} videos found, {total} missing" if total else "no video found"
      lines.append(f"split '{split}' of {self.info.full_name}: {counts}; "
                   f"{describe_missing(split)}")
    found = {s: len(rows) for s, rows in splits.items()}
    self.fail("Preparation stopped before decoding any video, because\n  " +
              "\n  ".join(lines) + f"\n(usable videos per split: {found}). Unpack the "
              "whole release into manual_dir and run again.")

  def checked_examples(self, split, examples):
    """Yields from `examples`; a split whose every video failed to decode stops with the
    skip summary instead of TFDS's bare "No examples were yielded"."""
    count = 0
    for example in examples:
      count += 1
      yield example
    if not count:
      self.fail(f"Every video of split '{split}' of {self.info.full_name} was skipped.")


def file_listing_fingerprint(directory):
  """`{'num_files', 'sha256'}` of the sorted (relative path, size) of every file under
  `directory` (contents are not read: a listing of the Charades release takes seconds)."""
  directory = os.fspath(directory)
  entries = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      try:
        size = os.path.getsize(path)
      except OSError:
        size = -1
      entries.append(f"{os.path.relpath(path, directory)}\t{size}\n")
  digest = hashlib.sha256("".join(entries).encode("utf-8", "surrogateescape"))
  return {"num_files": len(entries), "sha256": digest.hexdigest()}
