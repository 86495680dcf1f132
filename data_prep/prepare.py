"""Turns a dataset release, as shipped, into training-ready TFDS data.

  python -m data_prep.prepare --dataset=charades|charades/synthetic|toyota_smarthome/cs|
      toyota_smarthome/cv1|toyota_smarthome/cv2 --manual_dir=M --data_dir=D
      [--segmenter=SAVEDMODEL | --object_maps_dir=O] [--overwrite]

Prints a progress bar per split, then the skip summary, which is also written to
`D/<dataset>/<config>/<version>/skip_summary.json`.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

import data_prep  # pylint: disable=unused-import  (registers the builders)
from data_prep import skips


def prepare(dataset, manual_dir, data_dir, segmenter=None, object_maps_dir=None,
            segmenter_batch_size=16, overwrite=False):
  """Builds `dataset` from `manual_dir` into `data_dir`; returns the prepared builder.

  Prepared data is reused only when it was made from the same inputs: the preparation
  record (`VideoBuilder.preparation_record`: versions, fps, frame size, object-map source,
  the release's file listing) is compared first.

  Raises:
    ValueError: the prepared data differs from what this call asks for (names each
      difference and `--overwrite`); a split has no usable video (before any decoding);
      nothing in `manual_dir` is usable.
    FileNotFoundError: an annotation file is missing.
  """
  builder = tfds.builder(dataset, data_dir=data_dir, segmenter=segmenter,
                         object_maps_dir=object_maps_dir,
                         segmenter_batch_size=segmenter_batch_size)
  if not overwrite and builder.is_prepared():
    stale = stale_fields(builder.info.metadata.get("preparation"),
                         builder.preparation_record(manual_dir))
    if stale:
      raise ValueError(
          f"{builder.data_path} holds {builder.info.full_name} prepared from other inputs "
          "than this run's:\n  " + "\n  ".join(stale) + "\nRun again with --overwrite "
          "(prepare(..., overwrite=True)) to rebuild it, or use another --data_dir.")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite else
          tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  return builder


def stale_fields(recorded, requested):
  """Lines naming each field of a preparation record that differs (none: reusable)."""
  if not recorded:
    return ["preparation record: none (prepared by an older version of this package)"]
  return [f"{key.replace('_', ' ')}: prepared with {recorded.get(key)!r}, this run has "
          f"{value!r}" for key, value in requested.items() if recorded.get(key) != value]


def define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("dataset", None, "TFDS name, e.g. charades or toyota_smarthome/cs.",
                      required=True)
  flags.DEFINE_string("manual_dir", None, "The unpacked release.", required=True)
  flags.DEFINE_string("data_dir", None, "Where the TFDS data goes.", required=True)
  flags.DEFINE_string("segmenter", None,
                      "ADE-20K segmentation SavedModel for object maps "
                      "(interface: data_prep/object_maps.py).")
  flags.DEFINE_string("object_maps_dir", None,
                      "Precomputed object maps: <dir>/<video_id>/<video_id>-000001.png ...")
  flags.DEFINE_integer("segmenter_batch_size", 16, "Frames per segmenter call.")
  flags.DEFINE_bool("overwrite", False, "Rebuild even if the prepared data exists.")


def main(argv):
  del argv
  flag = flags.FLAGS
  tfds.enable_progress_bar()
  try:
    builder = prepare(flag.dataset, flag.manual_dir, flag.data_dir, flag.segmenter,
                      flag.object_maps_dir, flag.segmenter_batch_size, flag.overwrite)
  except (ValueError, FileNotFoundError) as e:
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
