"""Evaluation outputs: `metrics.json`, per-video scores (re-scorable offline) and the official
Charades submission file."""

import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from official.evaluation import metrics as metrics_lib

METRICS_FILE = "metrics.json"
PER_VIDEO_FILE = "per_video_scores.jsonl"
SUBMISSION_FILE = "charades_submission.txt"


def write_json(path, value):
  """Writes JSON atomically (temporary file + rename), so readers never see half a file."""
  tmp = f"{path}.tmp"
  text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False)  # NaN is not JSON.
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


def free_name(prefix, extension=""):
  """`<prefix><extension>`, or `<prefix>-<n><extension>` with the first n that is free: where
  to set aside a file or folder that must not be overwritten."""
  path, n = prefix + extension, 1
  while tf.io.gfile.exists(path):
    path, n = f"{prefix}-{n}{extension}", n + 1
  return path


def write_per_video_scores(path, video_scores, missing=()):
  """One JSON object per line: `{"video_id", "scores": [C], "labels": [C]}`; a video of the
  annotated test list that was not scored has `"scores": null, "missing": true`.

  Raises:
    ValueError: when a score is NaN or infinite (JSON has no such numbers).
  """
  missing = set(missing)
  scored = [i for i, v in enumerate(video_scores.video_ids) if v not in missing]
  metrics_lib.check_finite_scores(np.asarray(video_scores.scores)[scored])
  with tf.io.gfile.GFile(path, "w") as f:
    for vid, scores, labels in zip(video_scores.video_ids, video_scores.scores,
                                   video_scores.labels):
      record = {"video_id": vid, "labels": [float(x) for x in labels]}
      if vid in missing:
        record.update(scores=None, missing=True)
      else:
        record["scores"] = [float(s) for s in scores]
      f.write(json.dumps(record, allow_nan=False) + "\n")


def read_per_video_scores(path):
  """Reads `write_per_video_scores` output -> (video_ids, scores [V, C], labels [V, C]);
  missing videos get -inf scores, as the official Charades scorer gives them."""
  ids, scores, labels = [], [], []
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      record = json.loads(line)
      ids.append(record["video_id"])
      labels.append(record["labels"])
      scores.append(record["scores"] if record["scores"] is not None else
                    [-np.inf] * len(record["labels"]))
  return ids, np.array(scores, dtype=np.float64), np.array(labels, dtype=np.float32)


def write_charades_submission(path, video_ids, scores):
  """The official Charades classification format: per line, the id then the class scores,
  space-separated. Videos absent here are scored -inf by the official scorer."""
  with tf.io.gfile.GFile(path, "w") as f:
    for vid, row in zip(video_ids, scores):
      f.write(vid + " " + " ".join(repr(float(s)) for s in row) + "\n")


def compute_metrics(metric, labels, scores):
  """The headline metric(s): 'map' -> {'map'}; 'mean_class_accuracy' ->
  {'mean_class_accuracy', 'top1'}.

  A row of `scores` that is -inf throughout is a video without a prediction: for mAP it
  ranks last in every class (the official Charades scorer); for accuracy it is wrong.
  """
  if metric == "map":
    return {"map": metrics_lib.charades_map(labels, scores)}
  if metric == "mean_class_accuracy":
    scores = np.asarray(scores, dtype=np.float64)
    missing = np.all(scores == -np.inf, axis=1)
    metrics_lib.check_finite_scores(scores[~missing])
    predicted = np.where(missing, -1, np.argmax(np.where(missing[:, None], 0, scores), 1))
    return {"mean_class_accuracy": metrics_lib.mean_class_accuracy(labels, predicted),
            "top1": metrics_lib.top1_accuracy(labels, predicted)}
  raise ValueError(f"metric must be 'map' or 'mean_class_accuracy'. Received: {metric!r}")


def former_map_definition(record):
  """Whether a metrics record holds an mAP computed before test videos without actions
  ranked last in every class (dd7dc77, as the official scorer ranks them). Such records
  lack `num_videos_without_actions`; the same scores now give an equal or higher mAP."""
  return (isinstance(record, dict) and isinstance(record.get("map"), (int, float)) and
          "num_videos_without_actions" not in record)


def rescore(per_video_path, metric):
  """Recomputes the metrics from a per-video scores file, offline (missing videos
  included)."""
  _, scores, labels = read_per_video_scores(per_video_path)
  return compute_metrics(metric, labels, scores)


def with_missing_videos(video_scores, annotated_videos):
  """Puts the scored videos into the dataset's annotated list and adds the ones missing.

  Args:
    video_scores: `metrics.VideoScores` of the videos that were evaluated.
    annotated_videos: every annotated video of the split, prepared or not, in the
      annotation file's order: `[(video_id, [class ids])]` (TFDS metadata `annotations`,
      `official.data.input_pipeline.DatasetInfo.annotated_videos`).

  Returns:
    `(VideoScores in annotation order with missing videos scored -inf, [missing ids])`.

  Raises:
    ValueError: when a scored video is not annotated or its labels differ from the
      annotation (the prepared data and its annotations disagree), a video is annotated
      twice, or an annotated class is outside the scores' classes.
  """
  num_classes = np.asarray(video_scores.scores).shape[1]
  position = {vid: i for i, vid in enumerate(video_scores.video_ids)}
  annotated_ids = set()
  for vid, classes in annotated_videos:
    if vid in annotated_ids:
      raise ValueError(f"Video {vid} is annotated twice in the dataset's list of this split: "
                       "it would count twice. Re-prepare the dataset with "
                       "`python -m data_prep.prepare ... --overwrite`.")
    annotated_ids.add(vid)
    outside = [c for c in classes if not 0 <= c < num_classes]
    if outside:
      raise ValueError(f"Video {vid} is annotated with class {outside[0]}, outside the "
                       f"model's {num_classes} classes: the dataset and the model's "
                       "NUM_CLASSES disagree.")
  unknown = [v for v in video_scores.video_ids if v not in annotated_ids]
  if unknown:
    raise ValueError(f"{len(unknown)} evaluated video(s) are not in the dataset's annotated "
                     f"list of this split: {unknown[:5]}. Re-prepare the dataset with "
                     "`python -m data_prep.prepare ... --overwrite`.")
  scores, labels, missing = [], [], []
  for vid, classes in annotated_videos:
    expected = np.zeros(num_classes, np.float32)
    expected[list(classes)] = 1.0
    if vid in position:
      i = position[vid]
      if not np.array_equal(np.asarray(video_scores.labels[i]) > 0, expected > 0):
        raise ValueError(f"Video {vid}: evaluated labels "
                         f"{np.flatnonzero(video_scores.labels[i]).tolist()} differ from the "
                         f"annotation {sorted(classes)}.")
      scores.append(np.asarray(video_scores.scores[i], np.float64))
    else:
      missing.append(vid)
      scores.append(np.full(num_classes, -np.inf))
    labels.append(expected)
  complete = metrics_lib.VideoScores([vid for vid, _ in annotated_videos], np.stack(scores),
                                     np.stack(labels), video_scores.views_per_video)
  return complete, missing


def write_evaluation(eval_dir, metric, video_scores, step, view_protocol,
                     annotated_videos=None):
  """Writes metrics.json, the per-video scores and (for mAP) the submission file.

  With `annotated_videos` (the split's whole annotated list), videos that were not
  evaluated (skipped in preparation as corrupt or missing) are scored as the official
  Charades scorer scores a video absent from a submission (-inf; wrong for accuracy): the
  headline number is the official one, `<metric>_scored_videos` the one over evaluated
  videos only, and a warning says how many are missing. For mAP, `num_videos_without_actions`
  counts the videos with no positive, which rank last in every class as in the official
  scorer (`metrics.per_class_average_precision`). Without it, the number of missing
  videos is unknown (`num_videos_missing: null`) and a warning says so.

  Returns:
    The metrics dict written to metrics.json.

  Raises:
    ValueError: on non-finite scores (nothing is written), or evaluated videos that disagree
      with `annotated_videos`.
  """
  scored_values = compute_metrics(metric, video_scores.labels, video_scores.scores)
  if annotated_videos is None:
    complete, missing = video_scores, None
    logging.warning(
        "The dataset records no annotated test list (prepared by an older version?): "
        "evaluation cannot tell whether test videos are missing. %d videos scored.",
        len(video_scores.video_ids))
  else:
    complete, missing = with_missing_videos(video_scores, annotated_videos)
  values = (scored_values if not missing else
            compute_metrics(metric, complete.labels, complete.scores))
  if missing:
    logging.warning(
        "%d of %d annotated test videos were not scored (not in the prepared data; see "
        "skip_summary.json): %s%s. They count as the official scorer counts missing "
        "videos: %s; over the scored videos only it would be %s.", len(missing),
        len(complete.video_ids), ", ".join(missing[:10]),
        f" (+{len(missing) - 10} more)" if len(missing) > 10 else "",
        _format_values(values), _format_values(scored_values))
  record = dict(values)
  record.update({f"{k}_scored_videos": v for k, v in scored_values.items()})
  if metric == "map":
    # Ranked last in every class whatever their scores, as the official scorer does.
    without_actions = int(np.sum(~metrics_lib.with_actions(complete.labels)))
    record["num_videos_without_actions"] = without_actions
    if without_actions:
      logging.info("%d of %d test videos have no action; as in the official Charades "
                   "scorer, no score of theirs counts (they rank last in every class).",
                   without_actions, len(complete.video_ids))
  record.update({"step": int(step), "num_videos": len(complete.video_ids),
                 "num_videos_scored": len(video_scores.video_ids),
                 "num_videos_missing": None if missing is None else len(missing),
                 "missing_videos": missing, "view_protocol": view_protocol,
                 "per_video_scores": PER_VIDEO_FILE})
  json.dumps(record, allow_nan=False)  # Fails before any file is written.
  tf.io.gfile.makedirs(eval_dir)
  write_per_video_scores(os.path.join(eval_dir, PER_VIDEO_FILE), complete, missing or ())
  if metric == "map":
    write_charades_submission(os.path.join(eval_dir, SUBMISSION_FILE),
                              video_scores.video_ids, video_scores.scores)
  write_json(os.path.join(eval_dir, METRICS_FILE), record)
  return record


def _format_values(values):
  return ", ".join(f"{k} {v:.4f}" for k, v in values.items())
