"""End to end, as a user runs it: generate the synthetic release, prepare it with the CLI,
read it through the training and evaluation pipelines."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_prep import skips
from data_prep import synthetic
from official.data import input_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_synthetic_cli_then_prepare_cli_then_pipelines(tmp_path):
  release, data_dir = str(tmp_path / "release"), str(tmp_path / "data")
  out = _run("data_prep.synthetic", f"--out={release}", "--seed=4", "--num_train=5",
             "--num_test=2", "--height=32", "--width=40", "--min_frames=10",
             "--max_frames=14")
  assert "Wrote 5 train + 2 test videos" in out
  out = _run("data_prep.prepare", "--dataset=charades/synthetic", f"--manual_dir={release}",
             f"--data_dir={data_dir}",
             f"--object_maps_dir={os.path.join(release, 'Charades_v1_objects')}")
  assert "train=5, test=2" in out and "0 input(s) skipped" in out
  summary_path = os.path.join(data_dir, "charades", "synthetic", "1.0.0",
                              skips.SUMMARY_FILENAME)
  with open(summary_path) as f:
    assert json.load(f)["total_skipped"] == 0

  info = input_pipeline.dataset_info("charades/synthetic", data_dir)
  assert info.class_names == synthetic.CLASSES and info.split_sizes == {"train": 5, "test": 2}
  train = input_pipeline.build_dataset("charades/synthetic", "train", data_dir,
                                       is_training=True, batch_size=2, num_frames=8,
                                       image_size=32, use_objects=True, seed=0)
  for features, labels in train.take(2):
    assert features["rgb"].shape == (2, 8, 32, 32, 3)
    objects = features["objects"].numpy()
    assert objects.shape == (2, 8, 32, 32) and objects.dtype == np.uint8
    assert objects.max() <= 150 and set(np.unique(objects)) & {1, 4}  # wall / floor
    assert labels.shape == (2, 12) and set(np.unique(labels)) <= {0.0, 1.0}
  evaluation = input_pipeline.build_dataset("charades/synthetic", "test", data_dir,
                                            is_training=False, batch_size=5, num_frames=8,
                                            image_size=32, num_clips=2, num_crops=3)
  ids = [v.decode() for f, _ in evaluation for v in f["video_id"].numpy()]
  assert sorted(ids) == sorted(["TE00000"] * 6 + ["TE00001"] * 6)


@pytest.mark.slow
def test_self_contained_synthetic_data_follows_its_generation_arguments(tmp_path):
  from official.training import synthetic_data  # pylint: disable=g-import-not-at-top
  small = dict(num_train=2, height=16, width=16, min_frames=8, max_frames=8)
  data_dir = synthetic_data.prepare_synthetic_charades(str(tmp_path), num_test=2, **small)
  assert input_pipeline.dataset_info("charades/synthetic", data_dir).split_sizes == {
      "train": 2, "test": 2}
  # Other generation arguments on the same directory: regenerated, not the old videos.
  data_dir = synthetic_data.prepare_synthetic_charades(str(tmp_path), num_test=3, **small)
  assert input_pipeline.dataset_info("charades/synthetic", data_dir).split_sizes == {
      "train": 2, "test": 3}
