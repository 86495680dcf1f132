"""Metrics against hand-made cases and scikit-learn's independent implementation."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from official.evaluation import metrics


def test_average_precision_hand_made():
  # Ranking: pos, neg, pos, neg -> precisions at positives 1/1 and 2/3.
  ap = metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
  assert ap == pytest.approx((1.0 + 2.0 / 3.0) / 2.0, abs=1e-15)


def test_perfect_ranking_gives_one():
  labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
  scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.0, 0.3]])
  assert metrics.charades_map(labels, scores) == 1.0


def test_class_without_positives_is_skipped():
  labels = np.array([[1, 0, 0], [0, 0, 1], [1, 1, 0]])
  scores = np.array([[0.2, 0.9, 0.1], [0.3, 0.5, 0.2], [0.1, 0.4, 0.3]])
  labels[:, 1] = 0
  # Class 0: positives rank 2nd and 3rd -> (1/2 + 2/3) / 2. Class 1: no positive.
  # Class 2: ranked 2nd -> 1/2.
  assert metrics.charades_map(labels, scores) == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0.5) / 2)
  aps = metrics.per_class_average_precision(labels, scores)
  assert np.isnan(aps[1])


def _official_scorer(labels, scores):
  """A NumPy transcription of `Charades_v1_classify.m`: `load_charades` records no id for
  a test video whose `actions` field is empty, so no submitted score is matched to it and
  its row stays -inf; per class THUMOSeventclspr (stable descending sort, precision at
  every positive); the mean over the classes with a positive."""
  test = np.where(np.any(labels > 0, axis=1, keepdims=True), scores, -np.inf)
  aps = []
  for c in range(labels.shape[1]):
    order = np.argsort(-test[:, c], kind="stable")
    positive = labels[order, c] > 0
    if positive.any():
      precision = np.cumsum(positive) / np.arange(1, len(positive) + 1)
      aps.append(precision[positive].mean())
  return np.mean(aps)


def test_videos_without_actions_rank_last_as_in_the_official_scorer():
  labels = np.array([[1, 0], [0, 1], [0, 0]])
  scores = np.array([[0.5, 0.2], [0.4, 0.6], [0.9, 0.9]])  # the empty video scores highest
  # The official scorer never matches a score to the empty video: it ranks last, and both
  # classes rank their positive first. As a scored negative it would halve both APs.
  assert metrics.charades_map(labels, scores) == 1.0
  np.testing.assert_array_equal(metrics.per_class_average_precision(labels, scores),
                                [1.0, 1.0])
  rng = np.random.default_rng(7)
  labels = (rng.random((300, 9)) < 0.15).astype(np.int32)
  scores = rng.random((300, 9))
  empty = ~labels.any(axis=1)
  assert 10 < empty.sum() < 150
  scores[empty] += 0.5  # confident on the videos without actions
  assert metrics.charades_map(labels, scores) == pytest.approx(
      _official_scorer(labels, scores), rel=1e-12)
  # Equal to the mAP over the annotated-with-actions videos alone.
  expected = np.mean([sk_metrics.average_precision_score(labels[~empty, c],
                                                         scores[~empty, c])
                      for c in range(9)])
  assert metrics.charades_map(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_ties_keep_input_order_like_matlab_sort():
  # Equal scores: MATLAB's stable sort keeps the negative (first) before the positive.
  assert metrics.average_precision([0, 1], [0.5, 0.5]) == 0.5
  assert metrics.average_precision([1, 0], [0.5, 0.5]) == 1.0


def test_missing_videos_with_minus_inf_rank_last():
  assert metrics.average_precision([0, 1, 1], [0.1, 0.2, -np.inf]) == pytest.approx(
      (1.0 + 2.0 / 3.0) / 2.0)


def test_charades_map_matches_sklearn_on_tie_free_random_data():
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 12)) < 0.2).astype(np.int32)
  labels[:, 5] = 0  # A class without positives is left out of the mean.
  labels[~labels.any(axis=1), 0] = 1  # every video has an action (see the test below)
  scores = rng.random((200, 12))
  expected = np.mean([sk_metrics.average_precision_score(labels[:, c], scores[:, c])
                      for c in range(12) if c != 5])
  assert metrics.charades_map(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_no_positive_anywhere_is_an_error():
  with pytest.raises(ValueError, match="No class has a positive"):
    metrics.charades_map(np.zeros((3, 2)), np.ones((3, 2)))


def test_mean_class_accuracy_hand_made():
  labels = np.array([0, 0, 0, 0, 1, 2, 2])
  predicted = np.array([0, 0, 0, 1, 1, 0, 2])
  # Class 0: 3/4, class 1: 1/1, class 2: 1/2 -> mean 0.75; top-1 = 5/7.
  assert metrics.mean_class_accuracy(labels, predicted) == pytest.approx(0.75, abs=1e-15)
  assert metrics.top1_accuracy(labels, predicted) == pytest.approx(5 / 7, abs=1e-15)
  one_hot = np.eye(4)[labels]  # Class 3 never appears and does not count.
  scores = np.eye(4)[predicted] * 0.5 + 0.1
  assert metrics.mean_class_accuracy(one_hot, scores) == pytest.approx(0.75, abs=1e-15)


def test_mean_class_accuracy_matches_sklearn_balanced_accuracy():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 7, size=300)
  predicted = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 7, size=300))
  assert metrics.mean_class_accuracy(labels, predicted) == pytest.approx(
      sk_metrics.balanced_accuracy_score(labels, predicted), rel=1e-12)


def test_aggregate_views_max_and_mean_any_order():
  ids = [b"b", "a", "b", "a"]
  scores = np.array([[0.1, 0.9], [0.2, 0.4], [0.3, 0.5], [0.6, 0.0]])
  labels = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
  out = metrics.aggregate_views(ids, scores, labels, method="max")
  assert out.video_ids == ["a", "b"]
  np.testing.assert_array_equal(out.scores, [[0.6, 0.4], [0.3, 0.9]])
  np.testing.assert_array_equal(out.labels, [[1, 0], [0, 1]])
  assert out.views_per_video == 2
  out = metrics.aggregate_views(ids, scores, labels, method="mean", views_per_video=2)
  np.testing.assert_allclose(out.scores, [[0.4, 0.2], [0.2, 0.7]], rtol=0, atol=1e-15)


def test_aggregate_views_detects_missing_views():
  labels = np.zeros((3, 2))
  with pytest.raises(ValueError, match=r"1 of 2 videos do not have 2 views: b \(1 views\)"):
    metrics.aggregate_views(["a", "a", "b"], np.zeros((3, 2)), labels)
  with pytest.raises(ValueError, match="do not have 3 views"):
    metrics.aggregate_views(["a", "a", "a", "b", "b"], np.zeros((5, 2)), np.zeros((5, 2)),
                            views_per_video=3)


def test_aggregate_views_rejects_disagreeing_labels():
  with pytest.raises(ValueError, match="different labels"):
    metrics.aggregate_views(["a", "a"], np.zeros((2, 2)), np.array([[1, 0], [0, 1]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_are_a_clear_error_naming_the_count(bad):
  labels = np.array([[1, 0], [0, 1], [1, 1]])
  scores = np.array([[0.9, 0.1], [bad, 0.2], [0.3, bad]])
  with pytest.raises(ValueError, match="2 of 6 scores are not finite"):
    metrics.charades_map(labels, scores)
  with pytest.raises(ValueError, match="2 of 6 scores are not finite"):
    metrics.mean_class_accuracy([0, 1, 1], scores)
  with pytest.raises(ValueError, match="2 of 6 scores are not finite"):
    metrics.top1_accuracy([0, 1, 1], scores)


def test_all_nan_checkpoint_scores_do_not_give_a_plausible_map():
  labels = np.eye(4)[[0, 1, 2, 3, 0, 1]]
  with pytest.raises(ValueError, match="24 of 24 scores are not finite"):
    metrics.charades_map(labels, np.full((6, 4), np.nan))


def test_minus_inf_is_allowed_only_for_whole_missing_videos():
  labels = np.array([[1, 0], [0, 1], [1, 0]])
  # A whole row of -inf is a missing video (the official scorer's convention).
  assert metrics.charades_map(labels, [[0.9, 0.1], [0.2, 0.8], [-np.inf, -np.inf]]) == (
      pytest.approx(((1 + 2 / 3) / 2 + 1) / 2))
  with pytest.raises(ValueError, match="1 of 6 scores are not finite"):
    metrics.charades_map(labels, [[0.9, 0.1], [0.2, 0.8], [0.5, -np.inf]])


def test_mean_class_accuracy_refuses_labels_that_are_not_one_class_per_example():
  # Charades' multi-hot labels would be arg-maxed to their lowest action, and a video
  # without actions to class 0: a plausible number for the wrong metric.
  with pytest.raises(ValueError, match="one class per example"):
    metrics.mean_class_accuracy(np.array([[1, 1, 0], [0, 0, 1]]), np.array([0, 2]))
  with pytest.raises(ValueError, match="one class per example"):
    metrics.top1_accuracy(np.array([[0, 0, 0], [0, 0, 1]]), np.array([0, 2]))
  # One-hot labels (float or int) are fine.
  assert metrics.top1_accuracy(np.eye(3, dtype=np.float32)[[0, 2]], np.array([0, 2])) == 1.0


@pytest.mark.parametrize("labels, predicted", [
    (np.array([0, 1]), np.array([0.0, np.nan])),
    (np.array([0.5, 1.0]), np.array([0, 1])),
    (np.array([0, 1]), np.array([0, np.inf])),
])
def test_class_ids_must_be_whole_numbers(labels, predicted):
  with pytest.raises(ValueError, match="whole-number class ids"):
    metrics.mean_class_accuracy(labels, predicted)


def test_labels_must_be_finite_and_class_ids_not_negative():
  # A NaN passed the one-positive check while argmax took the NaN column as the class.
  with pytest.raises(ValueError, match="not finite"):
    metrics.mean_class_accuracy(np.array([[np.nan, 1, 0], [0, 0, 1]]), np.array([1, 2]))
  # -1 means "no prediction" in `predicted`; as a label it is no class.
  with pytest.raises(ValueError, match="negative"):
    metrics.mean_class_accuracy(np.array([-1, 1]), np.array([0, 1]))
