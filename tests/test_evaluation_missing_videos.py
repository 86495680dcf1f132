"""End to end: a test video that preparation had to skip is still in the evaluation, scored
as the official Charades scorer scores a missing video, and reported."""

import csv
import json
import os
import subprocess
import sys

import pytest

from data_prep import prepare
from data_prep import synthetic
from official.evaluation import writers_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")


@pytest.mark.slow
def test_metrics_match_the_official_scorer_over_the_whole_test_list(tmp_path):
  release, data_dir, model_dir = (str(tmp_path / d) for d in ("release", "data", "model"))
  synthetic.generate(release, seed=3, num_train=4, num_test=6, height=32, width=32,
                     min_frames=8, max_frames=10)
  with open(os.path.join(release, "Charades_v1_480", "TE00002.mp4"), "r+b") as f:
    f.truncate(300)  # A broken download: preparation skips it.
  prepare.prepare("charades/synthetic", release, data_dir,
                  object_maps_dir=os.path.join(release, "Charades_v1_objects"))
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train_and_eval",
       f"--model_dir={model_dir}", f"--gin_file={GIN}",
       "--gin_param=Experiment.prepare_data_fn=None",
       f"--gin_param=VideoInput.data_dir='{data_dir}'",
       "--gin_param=Experiment.train_steps=1", "--gin_param=Experiment.train_batch_size=2"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "1 of 6 annotated test videos were not scored" in result.stderr
  metrics = json.loads(open(os.path.join(model_dir, "eval", "metrics.json")).read())
  assert (metrics["num_videos_scored"], metrics["num_videos_missing"]) == (5, 1)
  assert metrics["missing_videos"] == ["TE00002"]
  with open(os.path.join(release, "Charades", "Charades_v1_test.csv")) as f:
    truth = [(row["id"], sorted({int(a.split()[0][1:]) for a in row["actions"].split(";")
                                 if a.strip()}))
             for row in csv.DictReader(f)]
  official = writers_test.official_charades_map(
      os.path.join(model_dir, "eval", "charades_submission.txt"), truth)
  assert metrics["map"] == pytest.approx(official, abs=1e-9)
