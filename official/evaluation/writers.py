"""Evaluation outputs: `metrics.json`, per-video scores (re-scorable offline) and the official
Charades submission file."""

import json
import os

import numpy as np
import tensorflow as tf

from official.evaluation import metrics as metrics_lib

METRICS_FILE = "metrics.json"
PER_VIDEO_FILE = "per_video_scores.jsonl"
SUBMISSION_FILE = "charades_submission.txt"


def write_json(path, value):
  """Writes JSON atomically (temporary file + rename), so readers never see half a file."""
  tmp = f"{path}.tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_per_video_scores(path, video_scores):
  """One JSON object per line: `{"video_id", "scores": [C], "labels": [C]}`."""
  with tf.io.gfile.GFile(path, "w") as f:
    for vid, scores, labels in zip(video_scores.video_ids, video_scores.scores,
                                   video_scores.labels):
      f.write(json.dumps({"video_id": vid,
                          "scores": [float(s) for s in scores],
                          "labels": [float(x) for x in labels]}) + "\n")


def read_per_video_scores(path):
  """Reads `write_per_video_scores` output -> (video_ids, scores [V, C], labels [V, C])."""
  ids, scores, labels = [], [], []
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      record = json.loads(line)
      ids.append(record["video_id"])
      scores.append(record["scores"])
      labels.append(record["labels"])
  return ids, np.array(scores, dtype=np.float64), np.array(labels, dtype=np.float32)


def write_charades_submission(path, video_ids, scores):
  """The official Charades classification format: per line, the id then the class scores,
  space-separated."""
  with tf.io.gfile.GFile(path, "w") as f:
    for vid, row in zip(video_ids, scores):
      f.write(vid + " " + " ".join(repr(float(s)) for s in row) + "\n")


def compute_metrics(metric, labels, scores):
  """The headline metric(s): 'map' -> {'map'}; 'mean_class_accuracy' ->
  {'mean_class_accuracy', 'top1'}."""
  if metric == "map":
    return {"map": metrics_lib.charades_map(labels, scores)}
  if metric == "mean_class_accuracy":
    return {"mean_class_accuracy": metrics_lib.mean_class_accuracy(labels, scores),
            "top1": metrics_lib.top1_accuracy(labels, scores)}
  raise ValueError(f"metric must be 'map' or 'mean_class_accuracy'. Received: {metric!r}")


def rescore(per_video_path, metric):
  """Recomputes the metrics from a per-video scores file, offline."""
  _, scores, labels = read_per_video_scores(per_video_path)
  return compute_metrics(metric, labels, scores)


def write_evaluation(eval_dir, metric, video_scores, step, view_protocol):
  """Writes metrics.json, the per-video scores and (for mAP) the submission file.

  Returns:
    The metrics dict written to metrics.json.
  """
  tf.io.gfile.makedirs(eval_dir)
  values = compute_metrics(metric, video_scores.labels, video_scores.scores)
  write_per_video_scores(os.path.join(eval_dir, PER_VIDEO_FILE), video_scores)
  if metric == "map":
    write_charades_submission(os.path.join(eval_dir, SUBMISSION_FILE),
                              video_scores.video_ids, video_scores.scores)
  record = dict(values)
  record.update({"step": int(step), "num_videos": len(video_scores.video_ids),
                 "view_protocol": view_protocol, "per_video_scores": PER_VIDEO_FILE})
  write_json(os.path.join(eval_dir, METRICS_FILE), record)
  return record
