"""What the Charades and Toyota Smarthome TFDS builders share: manual-download video
releases, an object-map source, and a skip report that makes bad inputs visible."""

import hashlib
import os
import re

from absl import logging
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import features as features_lib
from data_prep import skips
from data_prep import video as video_lib


# TFDS's Beam writer's error for a split without examples (tensorflow_datasets/core/writer.py).
_TFDS_EMPTY_SPLIT = re.compile(r"generated examples is 0 for split (\S+?)\.")

# What preparation writes, versioned: bump it when a change gives other frames or labels
# for the same release (2: frames chosen by timestamp, display rotation applied, truncated
# videos skipped, reversed actions kept), so that `prepare` refuses to reuse older data.
PREPARATION_VERSION = 2


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the video dataset builders (abstract: TFDS does not register it).

  Subclasses list a split's videos in `_split_generators` (as plain, picklable row dicts)
  and return `self._generate_examples(split, rows)` for each split; `example(row, report)`
  encodes one video. Preparation runs in this process, or as an Apache Beam pipeline with
  one element per video when the `DownloadConfig` names a Beam runner or Beam options
  (TFDS's Beam support; `data_prep/beam_generation.py`). Both give the same examples and
  the same skip summary.

  Args:
    segmenter: optional ADE-20K segmenter (object maps computed here): a SavedModel path,
      `keras_hub:PRESET` or `deeplab:FROZEN_GRAPH.pb` (`data_prep/segmenters.py`).
    object_maps_dir: optional folder of precomputed per-frame object maps.
    segmenter_batch_size: frames per segmenter call.
    **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir, config, ...).

  Attributes:
    beam_workers: after a Beam preparation, the sorted `host:pid` names of the processes
      that encoded videos; None otherwise.
    beam_skip_counters: after a Beam preparation, `{reason: count}` of what the workers
      skipped, from the runner's metrics (`{}` when it reports none); None otherwise.
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
    self.failed_summary_dir = None
    self.beam_workers = None
    self.beam_skip_counters = None
    self._beam_outcomes_dir = None  # Set while a Beam preparation runs.
    self._beam_splits = []
    self._beam_outcomes_merged = False
    super().__init__(**kwargs)
    # Beam's workers get the builder pickled; TFDS unpickles by calling __init__ again
    # with `_original_state`, which must carry the object-map source too.
    self._original_state.update(segmenter=segmenter, object_maps_dir=object_maps_dir,
                                segmenter_batch_size=segmenter_batch_size)
    self.skip_report = skips.SkipReport(self.info.full_name)

  def example(self, row, report):
    """One video of a split: `(key, example)`, or None when it is skipped (counted in
    `report`, a `skips.SkipReport`). Runs in a Beam worker on the Beam path."""
    raise NotImplementedError

  def _generate_examples(self, split, rows):
    """The examples of `split` from its `rows`: a generator of `(key, example)`, or on the
    Beam path a `beam.PTransform` producing them. Either way a split whose every video is
    skipped stops preparation with the skip summary."""
    if self._beam_outcomes_dir is not None:
      from data_prep import beam_generation  # pylint: disable=g-import-not-at-top
      self._beam_splits.append(split)
      return beam_generation.VideoExamples(self, split, rows, self._beam_outcomes_dir)
    return self.checked_examples(split, self._examples(rows))

  def _examples(self, rows):
    for row in rows:
      example = self.example(row, self.skip_report)
      if example is not None:
        yield example

  def _process_pipeline_result(self, pipeline_result):
    """After the Beam pipeline: counts what its workers skipped, split by split in the
    order the default path meets them, so that the skip summary is the same."""
    from data_prep import beam_generation  # pylint: disable=g-import-not-at-top
    workers = self._merge_beam_outcomes()
    if tf.io.gfile.exists(self._beam_outcomes_dir):  # Not part of the prepared data.
      tf.io.gfile.rmtree(self._beam_outcomes_dir)
    self.beam_workers = sorted(workers)
    self.beam_skip_counters = beam_generation.skip_counters(pipeline_result)
    logging.info("Beam: videos encoded by %d worker process(es); skip counters %s",
                 len(workers), self.beam_skip_counters)

  def _merge_beam_outcomes(self, pipeline_error=None):
    """Merges the Beam workers' skips into `skip_report`; stops (`fail`) at the first split
    without a kept video, as the default path does. After a failed pipeline
    (`pipeline_error`), splits without outcomes are passed over, except one that TFDS's
    error says got no example. Returns the workers' names."""
    from data_prep import beam_generation  # pylint: disable=g-import-not-at-top
    self._beam_outcomes_merged = True
    empty = _TFDS_EMPTY_SPLIT.search(str(pipeline_error)) if pipeline_error else None
    workers = set()
    for split in self._beam_splits:
      try:
        kept, split_workers = beam_generation.read_outcomes(self._beam_outcomes_dir, split,
                                                            self.skip_report)
      except FileNotFoundError:
        if pipeline_error is None:
          raise
        if not (empty and empty.group(1) == split):
          continue
        kept, split_workers = 0, set()
      workers |= split_workers
      if not kept:
        self.fail(f"Every video of split '{split}' of {self.info.full_name} was skipped.")
    return workers

  def _encode_or_skip(self, source, video_id, read_fn, report=None):
    """Decodes one video with `read_fn() -> video_lib.DecodedVideo` and encodes it; a
    truncated or corrupt video or missing object maps is counted in `report` (default:
    `self.skip_report`) and gives `None`.

    Returns:
      `(example, decoded)` or `None`.
    """
    if report is None:
      report = self.skip_report
    try:
      decoded = read_fn()
      example = features_lib.encode_video(
          decoded.frames, decoded.source_indices, decoded.num_source_frames,
          features_lib.stored_fps(self.builder_config.fps, decoded.source_fps), video_id,
          self._object_source)
    except video_lib.TruncatedVideoError as e:
      report.skip(skips.TRUNCATED_VIDEO, source, str(e))
      return None
    except video_lib.VideoReadError as e:
      report.skip(skips.CORRUPT_VIDEO, source, str(e))
      return None
    except features_lib.MissingObjectMaps as e:
      report.skip(skips.MISSING_OBJECT_MAPS, source, str(e))
      return None
    return example, decoded

  def _download_and_prepare(self, dl_manager, download_config):
    self.info.metadata["preparation"] = self.preparation_record(dl_manager.manual_dir)
    self._beam_splits = []
    self._beam_outcomes_merged = False
    self.beam_workers = None
    if download_config.beam_runner or download_config.beam_options:
      # Inside the temporary data dir (renamed on success): workers write there.
      self._beam_outcomes_dir = os.path.join(self.data_dir, "beam_outcomes")
    try:
      super()._download_and_prepare(dl_manager=dl_manager,
                                    download_config=download_config)
    except Exception as e:
      if self._beam_outcomes_dir is not None and not self._beam_outcomes_merged:
        # TFDS's Beam writer stops the pipeline on a split without examples before the
        # builder sees the outcomes: say why, as the default path does.
        self._merge_beam_outcomes(pipeline_error=e)
      raise
    finally:
      self._beam_outcomes_dir = None
    if not sum(split.num_examples for split in self.info.splits.values()):
      self.fail(f"Nothing usable in manual_dir {dl_manager.manual_dir}: every video was "
                "skipped.")
    self.skip_report.write(self.data_dir)  # The temporary dir, renamed on success.
    if os.path.exists(self.failed_summary_path):
      os.remove(self.failed_summary_path)
    logging.info("%s", self.skip_report.format())

  def preparation_record(self, manual_dir):
    """What the prepared data is made from, stored in the TFDS metadata `preparation`: the
    preparation and dataset versions, the config's frame rate and size, the object-map source
    and a fingerprint of the release files the builder reads (`release_files`).
    `data_prep.prepare` compares it with a rerun's to refuse reusing stale data."""
    config = self.builder_config
    return {
        "preparation_version": PREPARATION_VERSION,
        "dataset_version": str(self.VERSION),
        "config": config.name,
        "fps": None if config.fps is None else float(config.fps),
        "short_side": config.short_side,
        "object_maps": self._object_source.record(),
        "source_listing": files_fingerprint(manual_dir, self.release_files(manual_dir)),
    }

  def release_files(self, manual_dir):
    """The files of the release this builder reads: `[(path, hash_contents)]`; annotation
    files are fingerprinted by content, videos by path and size."""
    raise NotImplementedError

  def has_object_maps(self, source, video_id):
    """False (and counted as `missing_object_maps`) when object maps come from a folder
    that has none for `video_id`: checked before any decoding."""
    if self._object_source.kind != features_lib.OBJECT_MAPS_DIRECTORY:
      return True
    folder = os.path.join(self._object_source.object_maps_dir, video_id)
    if os.path.isdir(folder) and video_lib.numbered_files(folder):
      return True
    self.skip_report.skip(skips.MISSING_OBJECT_MAPS, source, f"no numbered maps in {folder}")
    return False

  @property
  def failed_summary_path(self):
    """Where `fail` writes the skip summary: `<data_dir>/<name>/<config>/` unless
    `failed_summary_dir` is set (a rebuild in a staging directory reports at the real
    place)."""
    directory = self.failed_summary_dir or os.fspath(self.data_path.parent)
    return os.path.join(directory, skips.FAILED_SUMMARY_FILENAME)

  def fail(self, message):
    """Raises `ValueError(message)` with the skip summary, written first beside the data
    (`<data_dir>/<name>/<config>/skip_summary.failed.json`; removed by a later success)."""
    path = self.failed_summary_path
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


def files_fingerprint(root, files):
  """`{'num_files', 'sha256'}` of `files` (`[(path, hash_contents)]`): each file's path
  relative to `root` and size, and for `hash_contents` files (annotations, a few MB at
  most) a hash of the contents, so that an edit keeping the size is noticed too. Videos
  are not read: a listing of the Charades release takes seconds."""
  root = os.fspath(root)
  entries = []
  for path, hash_contents in sorted(files):
    try:
      size = os.path.getsize(path)
      digest = ""
      if hash_contents:
        with open(path, "rb") as f:
          digest = hashlib.sha256(f.read()).hexdigest()
    except OSError:
      size, digest = -1, ""
    entries.append(f"{os.path.relpath(path, root)}\t{size}\t{digest}\n")
  total = hashlib.sha256("".join(entries).encode("utf-8", "surrogateescape"))
  return {"num_files": len(entries), "sha256": total.hexdigest()}


def files_under(directory, suffixes=None):
  """Every file under `directory` (recursively), optionally only those whose lower-case name
  ends with one of `suffixes`."""
  found = []
  for root, dirs, files in os.walk(os.fspath(directory)):
    dirs.sort()
    found += [os.path.join(root, name) for name in sorted(files)
              if suffixes is None or name.lower().endswith(suffixes)]
  return found
