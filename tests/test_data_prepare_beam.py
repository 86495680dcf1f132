"""Preparation through Apache Beam (TFDS's Beam support, DirectRunner with 2 worker
processes) gives the very examples, metadata and skip summary of the default path."""

import json
import os
import socket
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import charades
from data_prep import charades_test
from data_prep import skips
from data_prep import toyota_smarthome_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"
TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(autouse=True)
def _workers_import_the_package(monkeypatch):
  # Beam's worker processes unpickle the builder: they must find `data_prep`.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _beam_config(manual_dir):
  return tfds.download.DownloadConfig(
      manual_dir=manual_dir, beam_runner="DirectRunner",
      beam_options=beam.options.pipeline_options.PipelineOptions(TWO_PROCESSES))


def _read_all(builder):
  """{split: [example, ...]} in reading order, plus the skip summary and metadata."""
  examples = {split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
              for split in builder.info.splits}
  return examples, skips.read_summary(builder.data_path), dict(builder.info.metadata)


def _assert_same_example(a, b, where):
  assert sorted(a) == sorted(b), where
  for key in a:
    if isinstance(a[key], dict):
      _assert_same_example(a[key], b[key], f"{where}/{key}")
    else:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"{where}/{key}")


def _assert_identical(plain, beamed):
  examples, summary, metadata = _read_all(plain)
  beam_examples, beam_summary, beam_metadata = _read_all(beamed)
  assert {s: len(e) for s, e in beam_examples.items()} == {
      s: len(e) for s, e in examples.items()}
  for split, split_examples in examples.items():
    for i, (a, b) in enumerate(zip(split_examples, beam_examples[split])):
      _assert_same_example(a, b, f"{split}[{i}]")
  summary["dataset"] = beam_summary["dataset"]  # The configs' full names are the same.
  assert beam_summary == summary
  assert beam_metadata == metadata


@pytest.mark.slow
def test_charades_through_beam_two_processes_equals_the_default_path(tmp_path):
  root = str(tmp_path / "release")
  maps = charades_test.make_release(root)
  # A broken mp4 beside T0001's JPEG frames: repaired (frames used) in a worker process.
  with open(os.path.join(root, "Charades_v1_480", "T0001.mp4"), "wb") as f:
    f.write(b"not a video")
  builders = []
  for name, download_config in (
      ("plain", tfds.download.DownloadConfig(manual_dir=root)),
      ("beam", _beam_config(root))):
    builder = charades.Charades(config=charades_test._small_config(), object_maps_dir=maps,  # pylint: disable=protected-access
                                data_dir=str(tmp_path / name))
    builder.download_and_prepare(download_config=download_config)
    builders.append(builder)
  plain, beamed = builders
  # The fixture's bad inputs, each counted once whichever process met it.
  assert skips.read_summary(beamed.data_path)["by_reason"] == {
      "bad_length": 1, "corrupt_video": 1, "duplicate_id": 1, "malformed_row": 1,
      "missing_object_maps": 1, "missing_video": 3, "unknown_class": 2,
      "video_from_frames": 1}
  # Encoded in Beam's worker processes, not in this one.
  assert beamed.beam_workers and _THIS_PROCESS not in beamed.beam_workers
  assert len(beamed.beam_workers) <= 2
  # The workers' Beam counters agree with the skips met in the workers.
  assert beamed.beam_skip_counters == {"corrupt_video": 1, "video_from_frames": 1}
  _assert_identical(plain, beamed)


@pytest.mark.slow
def test_smarthome_with_a_segmenter_through_beam_equals_the_default_path(
    tmp_path_factory, tmp_path):
  release = toyota_smarthome_test.make_release(tmp_path_factory.mktemp("smarthome"),
                                               tmp_path_factory.mktemp("segmenter"))
  plain, _ = toyota_smarthome_test._prepare("cs", release, tmp_path / "plain",  # pylint: disable=protected-access
                                            segmenter=release[1])
  beamed, _ = toyota_smarthome_test._prepare("cs", release, tmp_path / "beam",  # pylint: disable=protected-access
                                             segmenter=release[1],
                                             download_config=_beam_config(release[0]))
  assert skips.read_summary(beamed.data_path)["by_reason"] == {
      "corrupt_video": 1, "excluded_class": 1, "not_in_split": 1, "unknown_class": 1,
      "unparsable_name": 1}
  assert beamed.beam_workers and _THIS_PROCESS not in beamed.beam_workers
  _assert_identical(plain, beamed)


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_prepare_cli_with_beam_keeps_the_preparation_guarantees(tmp_path):
  release = str(tmp_path / "release")
  rc, _, err = _run("data_prep.synthetic", f"--out={release}", "--seed=2", "--num_train=4",
                    "--num_test=2", "--height=24", "--width=32", "--min_frames=8",
                    "--max_frames=10")
  assert rc == 0, err[-3000:]
  os.remove(os.path.join(release, "Charades_v1_480", "TR00001.mp4"))  # A missing video.
  objects = f"--object_maps_dir={os.path.join(release, 'Charades_v1_objects')}"
  common = ("data_prep.prepare", "--dataset=charades/synthetic", f"--manual_dir={release}",
            objects)
  beam_flags = ("--beam_runner=DirectRunner",
                "--beam_options=direct_num_workers=2,direct_running_mode=multi_processing")
  rc, beam_out, err = _run(*common, f"--data_dir={tmp_path / 'beam'}", *beam_flags)
  assert rc == 0, err[-3000:]
  rc, plain_out, err = _run(*common, f"--data_dir={tmp_path / 'plain'}")
  assert rc == 0, err[-3000:]
  assert "train=3, test=2" in beam_out and "missing_video: 1" in beam_out
  assert beam_out.replace(str(tmp_path / "beam"), str(tmp_path / "plain")) == plain_out
  summaries = [json.load(open(os.path.join(tmp_path, name, "charades", "synthetic", "1.0.0",
                                           skips.SUMMARY_FILENAME)))
               for name in ("beam", "plain")]
  assert summaries[0] == summaries[1]

  # Reused without Beam (same inputs), refused with other inputs, Beam or not.
  rc, out, err = _run(*common, f"--data_dir={tmp_path / 'beam'}")
  assert rc == 0 and "train=3, test=2" in out, err[-3000:]
  os.remove(os.path.join(release, "Charades_v1_480", "TE00001.mp4"))
  rc, out, err = _run(*common, f"--data_dir={tmp_path / 'beam'}", *beam_flags)
  assert rc == 1 and "--overwrite" in err
  # (In-process DirectRunner: the rebuild path with Beam, without two more processes.)
  rc, out, err = _run(*common, f"--data_dir={tmp_path / 'beam'}", "--overwrite",
                      "--beam_runner=DirectRunner")
  assert rc == 0 and "train=3, test=1" in out, err[-3000:]


def test_beam_options_flag_is_parsed_like_tfds_build():
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  options = prepare.beam_download_options(
      "DirectRunner", "direct_num_workers=2,direct_running_mode=multi_processing")
  assert options["beam_runner"] == "DirectRunner"
  parsed = options["beam_options"].get_all_options()
  assert parsed["direct_num_workers"] == 2
  assert parsed["direct_running_mode"] == "multi_processing"
  assert prepare.beam_download_options(None, None) == {}
  with pytest.raises(ValueError, match="--beam_options"):
    prepare.beam_download_options(None, "direct_num_workers")


@pytest.mark.slow
def test_beam_split_whose_every_video_is_skipped_stops_with_the_summary(tmp_path):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  release = str(tmp_path / "release")
  synthetic.generate(release, seed=1, num_train=2, num_test=1, height=16, width=16,
                     min_frames=8, max_frames=8, write_object_maps=False)
  with open(os.path.join(release, "Charades_v1_480", "TE00000.mp4"), "wb") as f:
    f.write(b"not a video")
  with pytest.raises(ValueError, match="Every video of split 'test'") as error:
    prepare.prepare("charades/synthetic", release, str(tmp_path / "data"),
                    beam_runner="DirectRunner")
  assert "corrupt_video: 1" in str(error.value)
  failed = os.path.join(tmp_path, "data", "charades", "synthetic",
                        skips.FAILED_SUMMARY_FILENAME)
  with open(failed) as f:
    assert json.load(f)["by_reason"] == {"corrupt_video": 1}
