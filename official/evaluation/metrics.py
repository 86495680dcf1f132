"""The papers' evaluation metrics, over a whole evaluation set (never averaged over batches).

- Charades (AssembleNet, AssembleNet++): mean average precision as computed by the official
  `Charades_v1_classify.m` (non-interpolated AP per class, mean over classes with a positive;
  a video without actions is never matched to a score, so it ranks last).
- Toyota Smarthome (AssembleNet++): mean per-class accuracy, and plain top-1 accuracy.
- Multi-view evaluation: the scores of several views (clips x crops) of one video are combined
  into one score vector per video.
"""

import collections

import numpy as np


def average_precision(labels, scores):
  """Non-interpolated average precision of one class, as `THUMOSeventclspr` in the official
  Charades evaluation: rank by score (descending, ties kept in input order like MATLAB's
  stable `sort`), then average the precision at the rank of every positive.

  Args:
    labels: `[N]` array, positive where > 0.
    scores: `[N]` float array.

  Returns:
    The AP as a float, or NaN when the class has no positive.
  """
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.shape != scores.shape or labels.ndim != 1:
    raise ValueError(f"labels and scores must be 1-D of one shape. Received: "
                     f"{labels.shape} and {scores.shape}")
  order = np.argsort(-scores, kind="stable")
  positive = labels[order] > 0
  num_positives = positive.sum()
  if num_positives == 0:
    return float("nan")
  true_positives = np.cumsum(positive)
  precision = true_positives / np.arange(1, len(positive) + 1)
  return float(precision[positive].sum() / num_positives)


def check_finite_scores(scores, allow_missing_rows=False):
  """Raises a `ValueError` naming how many scores are NaN or infinite.

  A checkpoint with NaN weights gives NaN scores, and ranking or arg-maxing them gives
  ordinary-looking metrics (an all-NaN score matrix scores mAP 0.38 on Charades), so every
  metric refuses them. With `allow_missing_rows`, a row that is -inf throughout is allowed:
  the official Charades scorer's value for a video missing from a submission.

  Args:
    scores: `[N, C]` float scores.
    allow_missing_rows: accept whole rows of -inf.
  """
  scores = np.asarray(scores, dtype=np.float64)
  bad = ~np.isfinite(scores)
  if allow_missing_rows and scores.ndim == 2:
    bad &= ~np.all(scores == -np.inf, axis=1, keepdims=True)
  if np.any(bad):
    raise ValueError(
        f"{int(bad.sum())} of {scores.size} scores are not finite "
        f"({int(np.isnan(scores[bad]).sum())} NaN): the model or its checkpoint holds "
        "non-finite values; metrics over such scores would be meaningless.")


def with_actions(labels):
  """`[N, C]` multi-hot labels -> `[N]` bool: whether each video has a positive (a Charades
  test video whose `actions` field is empty has none)."""
  return np.any(np.asarray(labels) > 0, axis=1)


def per_class_average_precision(labels, scores):
  """`[N, C]` multi-hot labels and scores -> `[C]` AP per class (NaN without positives).

  A video without any positive (a Charades test video whose `actions` field is empty) ranks
  last in every class, below every scored video, whatever its scores: the official scorer
  never matches a score to it. `load_charades` in `Charades_v1_classify.m` skips such a
  row before recording its id, so its scores stay -inf (the dataset authors' Python
  scorer, `utils/map.py` of gsig/charades-algorithms, sets them to -inf on purpose).
  Counted as a negative with its own scores, it would lower every class's AP.

  Raises:
    ValueError: when a score is NaN or +-inf (whole rows of -inf, missing videos, excepted).
  """
  labels, scores = _check_2d(labels, scores)
  check_finite_scores(scores, allow_missing_rows=True)
  scores = np.where(with_actions(labels)[:, None], scores, -np.inf)
  return np.array([average_precision(labels[:, c], scores[:, c])
                   for c in range(labels.shape[1])])


def charades_map(labels, scores):
  """Charades mAP (docs/facts.md §4): the mean of the per-class APs over the classes that have
  at least one positive video. Videos without any positive rank last in every class, as in
  the official scorer (`per_class_average_precision`).

  Args:
    labels: `[num_videos, num_classes]` multi-hot array (video-level ground truth).
    scores: `[num_videos, num_classes]` scores; higher means more confident. Videos missing
      from a submission should carry `-inf` in every class, as the official script gives
      them.

  Returns:
    mAP as a float in [0, 1].

  Raises:
    ValueError: when no class has a positive, or a score is NaN or infinite (other than a
      missing video's row of -inf).
  """
  aps = per_class_average_precision(labels, scores)
  if np.all(np.isnan(aps)):
    raise ValueError("No class has a positive example; mAP is undefined.")
  return float(np.nanmean(aps))


def _check_2d(labels, scores):
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 2 or labels.shape != scores.shape:
    raise ValueError(f"Expected labels and scores of one shape [N, C]. Received: "
                     f"{labels.shape} and {scores.shape}")
  return labels, scores


def _class_ids(values, name, one_hot=False):
  """`[N]` class ids, from ids or from `[N, C]` values: with `one_hot` (labels), one-hot
  rows of finite values and ids that are not negative; else per-class scores, arg-maxed
  (and ids where -1 is a video without a prediction)."""
  values = np.asarray(values)
  if values.ndim == 2:
    if one_hot:
      if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(values)))} values are not "
                         "finite.")
      positives = np.sum(values > 0, axis=1)
      wrong = positives != 1
      if np.any(wrong):
        raise ValueError(
            f"{name} must give one class per example (one-hot rows): {int(wrong.sum())} of "
            f"{len(values)} rows have {sorted(set(positives[wrong].tolist()))} positives. "
            "Multi-label data (Charades) is scored with 'map', not with accuracy.")
    elif values.dtype.kind == "f":
      check_finite_scores(values)
    return np.argmax(values, axis=1)
  if values.ndim == 1:
    if values.dtype.kind == "f":
      bad = ~np.isfinite(values) | (values != np.round(values))
      if np.any(bad):
        raise ValueError(f"{name} must be whole-number class ids; {int(bad.sum())} are "
                         f"not, e.g. {values[bad][:3].tolist()}.")
    if values.dtype.kind not in "iuf":
      raise ValueError(f"{name} must be whole-number class ids. Received dtype "
                       f"{values.dtype}.")
    ids = values.astype(np.int64)
    if one_hot and np.any(ids < 0):
      raise ValueError(f"{name}: {int(np.sum(ids < 0))} class ids are negative.")
    return ids
  raise ValueError(f"{name} must be class ids [N] or per-class values [N, C]. Received "
                   f"shape: {values.shape}")


def mean_class_accuracy(labels, predicted):
  """Toyota Smarthome's metric: the top-1 accuracy of each class present in `labels`,
  averaged over those classes.

  Args:
    labels: `[N]` class ids or `[N, C]` one-hot labels (exactly one positive per row).
    predicted: `[N]` predicted class ids or `[N, C]` scores (argmax is taken). A
      predicted id of -1 (a video without a prediction) is wrong for every class.

  Returns:
    Mean per-class accuracy as a float in [0, 1].

  Raises:
    ValueError: on shapes that disagree, no examples, non-finite scores, ids that are not
      whole numbers, or `[N, C]` labels with a row of no or several positives (multi-label
      data, scored with `charades_map`).
  """
  true_ids = _class_ids(labels, "labels", one_hot=True)
  predicted_ids = _class_ids(predicted, "predicted")
  if true_ids.shape != predicted_ids.shape or true_ids.size == 0:
    raise ValueError(f"labels and predicted must describe the same non-empty set of "
                     f"examples. Received: {true_ids.shape} and {predicted_ids.shape}")
  accuracies = [np.mean(predicted_ids[true_ids == c] == c) for c in np.unique(true_ids)]
  return float(np.mean(accuracies))


def top1_accuracy(labels, predicted):
  """Plain top-1 accuracy; same arguments as `mean_class_accuracy`."""
  true_ids = _class_ids(labels, "labels", one_hot=True)
  predicted_ids = _class_ids(predicted, "predicted")
  if true_ids.shape != predicted_ids.shape or true_ids.size == 0:
    raise ValueError(f"labels and predicted must describe the same non-empty set of "
                     f"examples. Received: {true_ids.shape} and {predicted_ids.shape}")
  return float(np.mean(true_ids == predicted_ids))


VideoScores = collections.namedtuple("VideoScores",
                                     ["video_ids", "scores", "labels", "views_per_video"])


def aggregate_views(video_ids, scores, labels, method="max", views_per_video=None):
  """Combines the scores of all views of each video into one vector per video.

  Views are grouped by id; their order in the input does not matter.

  Args:
    video_ids: `[N]` ids (str or bytes), one per view.
    scores: `[N, C]` per-view scores (probabilities).
    labels: `[N, C]` per-view labels; all views of a video must carry the same labels.
    method: 'max' or 'mean' over the views of a video.
    views_per_video: the number of views every video must have; None requires only that all
      videos have the same number.

  Returns:
    `VideoScores` with ids sorted, `[V, C]` scores and labels, and the number of views per
    video.

  Raises:
    ValueError: when a video lacks views (or has extra ones) or its views disagree on labels.
  """
  if method not in ("max", "mean"):
    raise ValueError(f"method must be 'max' or 'mean'. Received: {method!r}")
  ids = np.array([i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in video_ids])
  scores = np.asarray(scores)
  labels = np.asarray(labels)
  if not len(ids) == len(scores) == len(labels) or scores.ndim != 2:
    raise ValueError(f"Expected N ids, [N, C] scores and labels. Received: {ids.shape}, "
                     f"{scores.shape}, {labels.shape}")
  unique_ids, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
  expected = views_per_video if views_per_video is not None else (
      int(np.max(counts)) if len(counts) else 0)
  incomplete = unique_ids[counts != expected]
  if len(incomplete):
    examples = ", ".join(f"{v} ({c} views)" for v, c in
                         zip(incomplete[:5], counts[counts != expected][:5]))
    raise ValueError(f"{len(incomplete)} of {len(unique_ids)} videos do not have "
                     f"{expected} views: {examples}")
  order = np.argsort(inverse, kind="stable")
  grouped_scores = scores[order].reshape(len(unique_ids), expected, -1)
  grouped_labels = labels[order].reshape(len(unique_ids), expected, -1)
  disagree = np.any(grouped_labels != grouped_labels[:, :1], axis=(1, 2))
  if np.any(disagree):
    raise ValueError(f"Views of one video carry different labels: "
                     f"{[str(v) for v in unique_ids[disagree][:5]]}")
  combined = grouped_scores.max(axis=1) if method == "max" else grouped_scores.mean(axis=1)
  return VideoScores([str(v) for v in unique_ids], combined, grouped_labels[:, 0], expected)
