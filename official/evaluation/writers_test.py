"""Evaluation outputs: missing test videos scored as the official Charades scorer does,
valid JSON only, and loud reports of what was not scored."""

import json
import math

import numpy as np
import pytest

from official.evaluation import metrics
from official.evaluation import writers


def official_charades_map(submission_path, ground_truth):
  """An independent re-implementation of `Charades_v1_classify.m`: the ground truth's videos
  in its own order, -inf for every video absent from the submission and for every video
  without actions (`load_charades` skips an empty `actions` field before recording the
  video's id, so no submitted score ever matches it), per class THUMOSeventclspr
  (MATLAB's stable descending sort, precision at every positive), and the mean over the
  classes that have a positive."""
  submitted = {}
  with open(submission_path) as f:
    for line in f:
      vid, *values = line.split()
      submitted[vid] = [float(v) for v in values]
  num_classes = len(next(iter(submitted.values())))
  aps = []
  for c in range(num_classes):
    conf = [submitted[vid][c] if vid in submitted and labels else -math.inf
            for vid, labels in ground_truth]
    positive = [c in labels for _, labels in ground_truth]
    if not any(positive):
      continue
    order = sorted(range(len(conf)), key=lambda i: -conf[i])  # Python's sort is stable.
    tp = hits = 0
    total = 0.0
    for rank, i in enumerate(order, 1):
      if positive[i]:
        hits += 1
        total += hits / rank
        tp += 1
    aps.append(total / tp)
  return sum(aps) / len(aps)


# Six annotated test videos in the annotation file's order; T3 could not be prepared.
GROUND_TRUTH = [("T1", [0, 2]), ("T2", [1]), ("T3", [0, 1]), ("T4", [2]), ("T5", []),
                ("T6", [0])]
SCORES = {"T1": [0.9, 0.1, 0.8], "T2": [0.2, 0.7, 0.1], "T4": [0.6, 0.5, 0.4],
          "T5": [0.3, 0.2, 0.9], "T6": [0.4, 0.6, 0.2]}


def _scored(ids):
  return metrics.VideoScores(
      sorted(ids), np.array([SCORES[v] for v in sorted(ids)]),
      np.array([np.isin(np.arange(3), dict(GROUND_TRUTH)[v]).astype(np.float32)
                for v in sorted(ids)]), 2)


def test_missing_test_video_is_scored_like_the_official_scorer(tmp_path, caplog):
  record = writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), step=7,
                                    view_protocol={}, annotated_videos=GROUND_TRUTH)
  official = official_charades_map(tmp_path / writers.SUBMISSION_FILE, GROUND_TRUTH)
  assert record["map"] == pytest.approx(official, abs=1e-12)
  # Scoring only the five prepared videos overstates the result.
  scored_only = metrics.charades_map(_scored(SCORES).labels, _scored(SCORES).scores)
  assert record["map_scored_videos"] == pytest.approx(scored_only)
  assert scored_only > official + 0.05
  assert (record["num_videos_scored"], record["num_videos_missing"]) == (5, 1)
  assert record["missing_videos"] == ["T3"]
  # T5 has no action: like the official scorer, its confident 0.9 for class 2 ranks last.
  assert record["num_videos_without_actions"] == 1
  assert "1 of 6 annotated test videos were not scored" in caplog.text
  on_disk = json.loads((tmp_path / writers.METRICS_FILE).read_text())
  assert on_disk["map"] == record["map"] and on_disk["num_videos_missing"] == 1


def test_missing_video_counts_as_wrong_for_accuracy(tmp_path):
  truth = [("A", [0]), ("B", [1]), ("C", [0]), ("D", [2])]
  scored = metrics.VideoScores(["A", "B", "D"],
                               np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
                               np.eye(3)[[0, 1, 2]], 1)
  record = writers.write_evaluation(str(tmp_path), "mean_class_accuracy", scored, 3, {},
                                    annotated_videos=truth)
  # C (class 0) is missing: class 0 is 1/2 right, classes 1 and 2 fully.
  assert record["mean_class_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
  assert record["top1"] == pytest.approx(3 / 4)
  assert record["num_videos_missing"] == 1


def test_all_videos_present_reports_zero_missing(tmp_path):
  ids = [v for v, _ in GROUND_TRUTH if v != "T3"]
  record = writers.write_evaluation(str(tmp_path), "map", _scored(ids), 1, {},
                                    annotated_videos=[g for g in GROUND_TRUTH if g[0] != "T3"])
  assert record["num_videos_missing"] == 0 and record["missing_videos"] == []
  assert record["map"] == record["map_scored_videos"]


def test_scored_video_outside_the_annotations_is_an_error(tmp_path):
  with pytest.raises(ValueError,
                     match=r"not in the dataset's annotated list of this split: \['T1'\]"):
    writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), 1, {},
                             annotated_videos=GROUND_TRUTH[1:])


def test_labels_disagreeing_with_the_annotations_are_an_error(tmp_path):
  truth = [("T1", [1])] + GROUND_TRUTH[1:]
  with pytest.raises(ValueError, match="T1"):
    writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), 1, {},
                             annotated_videos=truth)


def test_unknown_annotations_are_reported_not_guessed(tmp_path, caplog):
  record = writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), 1, {})
  assert record["num_videos_scored"] == 5 and record["num_videos_missing"] is None
  assert "cannot tell whether test videos are missing" in caplog.text


def test_non_finite_scores_never_reach_the_files(tmp_path):
  scored = _scored(SCORES)
  scored.scores[1, 2] = np.nan
  with pytest.raises(ValueError, match="1 of 15 scores are not finite"):
    writers.write_evaluation(str(tmp_path), "map", scored, 1, {})
  assert not (tmp_path / writers.PER_VIDEO_FILE).exists()
  with pytest.raises(ValueError):
    writers.write_per_video_scores(str(tmp_path / "x.jsonl"), scored)


def test_a_record_that_cannot_be_written_leaves_no_mixed_files(tmp_path):
  with pytest.raises(TypeError):
    writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), 1,
                             {"views": object()}, annotated_videos=GROUND_TRUTH)
  assert not list(tmp_path.iterdir())


def test_annotated_class_outside_the_model_is_an_error_naming_the_video(tmp_path):
  truth = [("T1", [0, 2]), ("T2", [1]), ("T4", [2]), ("T5", []), ("T6", [0, 3])]
  ids = [v for v, _ in truth[:4]]
  with pytest.raises(ValueError, match="T6.*class 3.*3 classes"):
    writers.write_evaluation(str(tmp_path), "map", _scored(ids), 1, {},
                             annotated_videos=truth)


def test_a_video_annotated_twice_is_an_error(tmp_path):
  truth = GROUND_TRUTH + [("T2", [1])]
  with pytest.raises(ValueError, match="T2.*twice"):
    writers.write_evaluation(str(tmp_path), "map", _scored(SCORES), 1, {},
                             annotated_videos=truth)
