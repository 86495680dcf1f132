"""`python -m official.tools.extract_features`: the features are the classifier's pre-logit
activations (through the head's Dense they give the classifier's logits), for video files
and for a prepared split (where they reproduce `--mode=eval`'s per-video scores)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep import video as video_lib
from official.data import input_pipeline
from official.export import serving
from tests import tiny_models

GIN = tiny_models.GIN


def _extract(*args):
  return subprocess.run([sys.executable, "-m", "official.tools.extract_features", *args],
                        cwd=tiny_models.ROOT, env=tiny_models.env(), capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  return tiny_models.write_test_videos(str(tmp_path_factory.mktemp("videos")))


@pytest.mark.slow
def test_file_features_are_the_pre_logits_of_the_exported_classifier(tmp_path, videos):
  model_dir = tmp_path / "model"
  export_path, head = tiny_models.make_model_dir(model_dir, GIN, tiny_models.BINDINGS)
  paths, corrupt = videos
  out = tmp_path / "features"
  run = _extract(f"--model_dir={model_dir}", f"--gin_file={GIN}",
                 *[f"--gin_param={b}" for b in tiny_models.BINDINGS],
                 f"--video={paths[0]}", f"--video={corrupt}", f"--video={paths[1]}",
                 f"--out={out}", "--per_node", "--keep_views")
  assert run.returncode == 1, run.stderr[-3000:]
  assert "Wrote the features of 2 videos" in run.stdout and "1 failed" in run.stdout
  errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
  assert [e["video"] for e in errors] == [corrupt]
  index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
  assert [r["video_id"] for r in index] == ["clip0", "clip1"]
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  for record, path in zip(index, paths):
    features = np.load(out / record["file"])
    assert features.shape == (2, 128) and record["shape"] == [2, 128]
    frames = video_lib.read_video(path, None, None)[0]
    clips = input_pipeline.eval_clip_indices(len(frames), 4, 2, 2).numpy()
    logits = signature(frames=tf.constant(frames[clips]))["logits"].numpy()
    # The classifier's Dense on the features gives the classifier's logits.
    np.testing.assert_allclose(features @ head["kernel"] + head["bias"], logits, atol=1e-4)
    # tiny_smoke's one final node (5): its pooled output is the pre-logit vector.
    assert sorted(record["nodes"]) == [f"node_{k}" for k in range(6)]
    np.testing.assert_allclose(np.load(out / record["nodes"]["node_5"]), features,
                               atol=1e-6)
    assert np.load(out / record["nodes"]["node_0"]).shape == (2, 64)  # an RGB stem


@pytest.mark.slow
def test_split_features_reproduce_the_evaluation_scores(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / "model"
  # tiny_smoke.gin with its own (smaller) synthetic dataset, prepared on first use.
  bindings = ["prepare_synthetic_charades.num_train = 2",
              "prepare_synthetic_charades.num_test = 3"]
  _, head = tiny_models.make_model_dir(model_dir, GIN, bindings)
  gin.clear_config()
  try:
    gin_flags.parse_gin([GIN], bindings)
    experiment.run_mode("eval", str(model_dir))
  finally:
    gin.clear_config()
  ids, scores, labels = writers.read_per_video_scores(
      os.path.join(model_dir, "eval", writers.PER_VIDEO_FILE))
  assert len(ids) == 3

  out = tmp_path / "features"
  run = _extract(f"--model_dir={model_dir}", f"--gin_file={GIN}",
                 *[f"--gin_param={b}" for b in bindings], "--split=test", f"--out={out}",
                 "--keep_views")
  assert run.returncode == 0, run.stderr[-3000:]
  index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
  assert [r["video_id"] for r in index] == ids
  for record, video_scores, video_labels in zip(index, scores, labels):
    assert record["source"] == "split" and record["views"] == 2
    assert record["labels"] == list(np.flatnonzero(video_labels))
    features = np.load(out / record["file"])
    # Evaluation: sigmoid of each view's logits, max over the views.
    probabilities = 1 / (1 + np.exp(-(features @ head["kernel"] + head["bias"])))
    np.testing.assert_allclose(probabilities.max(axis=0), video_scores, atol=1e-5)


def test_file_names_that_cannot_name_a_feature_file_are_refused_before_any_work(
    tmp_path, videos):
  # Before: the run stopped at the bad file with a ValueError traceback, after the files
  # before it were extracted (and without errors.jsonl).
  paths, _ = videos
  hidden = tmp_path / ".hidden.mp4"
  hidden.write_bytes(open(paths[0], "rb").read())
  folder = tmp_path / "adir"
  folder.mkdir()
  out = tmp_path / "features"
  run = _extract("--model_dir=/nonexistent", f"--out={out}", f"--video={paths[0]}",
                 f"--video={hidden}", f"--video={folder}/", f"--video={paths[1]}")
  assert run.returncode == 1, run.stderr[-2000:]
  assert "cannot name a feature file" in run.stderr
  assert f"{hidden} (it starts with '.'" in run.stderr
  assert f"{folder}/ (it is empty)" in run.stderr
  assert "Traceback" not in run.stderr
  assert not out.exists()  # Refused before anything was written.
