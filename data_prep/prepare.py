"""Turns a dataset release, as shipped, into training-ready TFDS data.

  python -m data_prep.prepare --dataset=charades|charades/synthetic|toyota_smarthome/cs|
      toyota_smarthome/cv1|toyota_smarthome/cv2 --manual_dir=M --data_dir=D
      [--segmenter=SAVEDMODEL|keras_hub:PRESET|deeplab:GRAPH.pb | --object_maps_dir=O]
      [--beam_runner=DirectRunner --beam_options=direct_num_workers=8,...] [--overwrite]

Prints a progress bar per split, then the skip summary, which is also written to
`D/<dataset>/<config>/<version>/skip_summary.json`. With `--beam_runner` or
`--beam_options` the videos are encoded by an Apache Beam pipeline (TFDS's Beam support,
one element per video; requirements-beam.txt); the result is the same.
"""

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

import data_prep  # pylint: disable=unused-import  (registers the builders)
from data_prep import skips


def prepare(dataset, manual_dir, data_dir, segmenter=None, object_maps_dir=None,
            segmenter_batch_size=16, overwrite=False, beam_runner=None, beam_options=None):
  """Builds `dataset` from `manual_dir` into `data_dir`; returns the prepared builder.

  With `beam_runner` (a Beam runner or its name, e.g. 'DirectRunner', 'DataflowRunner')
  or `beam_options` (`apache_beam.options.pipeline_options.PipelineOptions`) the videos
  are encoded by an Apache Beam pipeline (`data_prep/beam_generation.py`); the prepared
  data, its preparation record and its skip summary are the same as without, so data
  prepared either way is reused by the other.

  Prepared data is reused only when it was made from the same inputs: the preparation
  record (`VideoBuilder.preparation_record`: versions, fps, frame size, object-map source,
  a fingerprint of the release files the builder reads) is compared first. With
  `overwrite`, the new data is built beside the old one and replaces it only when the
  build succeeds. One preparation at a time per dataset config and data_dir (a lock file
  that the system releases if the process dies); leftovers of a killed run are removed.

  Raises:
    ValueError: `manual_dir` does not exist; another preparation holds the lock; the
      prepared data differs from what this call asks for (names each difference and
      `--overwrite`); a split has no usable video (before any decoding); nothing in
      `manual_dir` is usable.
    FileNotFoundError: an annotation file is missing.
  """
  if not os.path.isdir(manual_dir):
    raise ValueError(f"manual_dir {manual_dir} does not exist or is not a directory: give "
                     "the folder where the release is unpacked.")
  kwargs = dict(segmenter=segmenter, object_maps_dir=object_maps_dir,
                segmenter_batch_size=segmenter_batch_size)
  download_config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, beam_runner=beam_runner, beam_options=beam_options)
  builder = tfds.builder(dataset, data_dir=data_dir, **kwargs)
  config_dir = os.fspath(builder.data_path.parent)
  with _exclusive(config_dir, builder.info.full_name):
    _remove_leftovers(config_dir, os.fspath(data_dir), builder)
    if builder.is_prepared():
      if not overwrite:
        stale = stale_fields(builder.info.metadata.get("preparation"),
                             builder.preparation_record(manual_dir))
        if stale:
          raise ValueError(
              f"{builder.data_path} holds {builder.info.full_name} prepared from other "
              "inputs than this run's:\n  " + "\n  ".join(stale) + "\nRun again with "
              "--overwrite (prepare(..., overwrite=True)) to rebuild it, or use another "
              "--data_dir.")
        return builder
      return _rebuild_beside(dataset, download_config, data_dir, builder, kwargs)
    builder.download_and_prepare(download_config=download_config)
  return builder


_STAGING_PREFIX = ".rebuild-"


def _rebuild_beside(dataset, download_config, data_dir, builder, kwargs):
  """Prepares into a staging data_dir, then swaps the result in for the old data."""
  staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX + builder.name + "-", dir=data_dir)
  try:
    staged = tfds.builder(dataset, data_dir=staging, **kwargs)
    staged.failed_summary_dir = os.fspath(builder.data_path.parent)
    staged.download_and_prepare(download_config=download_config)
    final = os.fspath(builder.data_path)
    replaced = final + ".replaced"
    os.rename(final, replaced)
    os.rename(os.fspath(staged.data_path), final)
    shutil.rmtree(replaced)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return tfds.builder(dataset, data_dir=data_dir, **kwargs)


def _remove_leftovers(config_dir, data_dir, builder):
  """Removes what a killed preparation of this config left (called under the lock): TFDS's
  `incomplete.*` folders, a staging data_dir, a half-swapped `*.replaced` version."""
  leftovers = []
  if os.path.isdir(config_dir):
    leftovers += [os.path.join(config_dir, d) for d in os.listdir(config_dir)
                  if d.startswith("incomplete.") or d.endswith(".replaced")]
  if os.path.isdir(data_dir):
    leftovers += [os.path.join(data_dir, d) for d in os.listdir(data_dir)
                  if d.startswith(_STAGING_PREFIX + builder.name + "-")]
  for path in leftovers:
    logging.warning("Removing %s, left by an interrupted preparation.", path)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(config_dir, name):
  """Holds `<config_dir>/.prepare.lock` (flock: released by the system when the process
  ends, so a killed run never blocks the next)."""
  os.makedirs(config_dir, exist_ok=True)
  path = os.path.join(config_dir, ".prepare.lock")
  with open(path, "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      raise ValueError(f"Another preparation of {name} into this data_dir is running "
                       f"({lock.read().strip() or 'pid unknown'}; lock {path}). Wait for "
                       "it to finish.") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def stale_fields(recorded, requested):
  """Lines naming each field of a preparation record that differs (none: reusable)."""
  if not recorded:
    return ["preparation record: none (prepared by an older version of this package)"]
  return [f"{key.replace('_', ' ')}: prepared with {recorded.get(key)!r}, this run has "
          f"{value!r}" for key, value in requested.items() if recorded.get(key) != value]


def beam_download_options(runner, options):
  """The `DownloadConfig` Beam arguments of the `--beam_runner` / `--beam_options` flags.

  Args:
    runner: runner name (`DirectRunner`, `DataflowRunner`, `FlinkRunner`, ...) or None.
    options: Beam pipeline options as `tfds build --beam_pipeline_options` takes them,
      comma-separated `name=value` items without dashes
      (`direct_num_workers=2,direct_running_mode=multi_processing`), or None.

  Returns:
    `{}` when both are empty (the default, in-process path), else a dict with
    `beam_runner` and `beam_options` (a `PipelineOptions`).

  Raises:
    ValueError: an options item is not `name=value`.
    ImportError: Apache Beam is not installed (names requirements-beam.txt).
  """
  if not runner and not options:
    return {}
  items = [item.strip() for item in (options or "").split(",") if item.strip()]
  bad = [item for item in items if "=" not in item or item.startswith("-")]
  if bad:
    raise ValueError("--beam_options takes comma-separated name=value items without "
                     "dashes, e.g. direct_num_workers=2,direct_running_mode="
                     f"multi_processing. Received: {options!r}")
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--beam_runner/--beam_options need Apache Beam: pip install -r "
                      "requirements-beam.txt") from e
  return {"beam_runner": runner or None,
          "beam_options": pipeline_options.PipelineOptions([f"--{i}" for i in items])}


def define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("dataset", None, "TFDS name, e.g. charades or toyota_smarthome/cs.",
                      required=True)
  flags.DEFINE_string("manual_dir", None, "The unpacked release.", required=True)
  flags.DEFINE_string("data_dir", None, "Where the TFDS data goes.", required=True)
  flags.DEFINE_string("segmenter", None,
                      "ADE-20K segmenter for object maps: a SavedModel path (interface: "
                      "data_prep/object_maps.py), keras_hub:PRESET (a KerasHub preset "
                      "name or directory, e.g. keras_hub:segformer_b5_ade20k_640) or "
                      "deeplab:FROZEN_GRAPH.pb (data_prep/segmenters.py).")
  flags.DEFINE_string("object_maps_dir", None,
                      "Precomputed object maps: <dir>/<video_id>/<video_id>-000001.png ...")
  flags.DEFINE_integer("segmenter_batch_size", 16, "Frames per segmenter call.")
  flags.DEFINE_bool("overwrite", False, "Rebuild even if the prepared data exists.")
  flags.DEFINE_string("beam_runner", None,
                      "Encode the videos with Apache Beam on this runner (DirectRunner, "
                      "DataflowRunner, FlinkRunner, SparkRunner...). Default: no Beam.")
  flags.DEFINE_string("beam_options", None,
                      "Beam pipeline options, comma-separated name=value, e.g. "
                      "direct_num_workers=8,direct_running_mode=multi_processing.")


def main(argv):
  del argv
  flag = flags.FLAGS
  tfds.enable_progress_bar()
  try:
    builder = prepare(flag.dataset, flag.manual_dir, flag.data_dir, flag.segmenter,
                      flag.object_maps_dir, flag.segmenter_batch_size, flag.overwrite,
                      **beam_download_options(flag.beam_runner, flag.beam_options))
  except (ValueError, FileNotFoundError, ImportError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 1
  sizes = ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
  print(f"Prepared {builder.info.full_name} in {builder.data_dir}: {sizes}")
  summary = skips.read_summary(builder.data_path)  # Also there when the data was reused.
  if summary is not None:
    print(skips.format_summary(summary))
    print(f"Skip summary: {builder.data_path / skips.SUMMARY_FILENAME}")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
