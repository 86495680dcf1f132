"""The acceptance test of the CPU demo (`python -m official.demo`): its whole pipeline at a
reduced size (fewer and shorter clips, fewer steps, same network and code paths) learns —
the training loss falls and the held-out test mAP beats the chance level by a margin — and
leaves the SavedModel, TensorBoard logs and pictures where the summary says."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from official import demo

REDUCED = [
    "prepare_synthetic_charades.num_train = 96",
    "prepare_synthetic_charades.num_test = 48",
    "NUM_FRAMES = 4",
    "VideoInput.frame_stride = 4",
    "Experiment.train_steps = 120",
    # Deterministic ops and input order: the learning margin below is a fixed fact of this
    # configuration, not a draw of thread scheduling.
    "Experiment.deterministic = True",
    "Experiment.jit_compile = False",  # XLA has no deterministic MaxPool gradient.
    "Experiment.eval_interval = 0",
    "Experiment.log_interval = 10",
    "Experiment.checkpoint_interval = 120",
]


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo")
  return demo.run(str(out), gin_bindings=REDUCED, seed=0)


@pytest.mark.slow
def test_demo_learns(summary):
  print(demo.format_summary(summary))
  losses = [loss for _, loss in summary["losses"]]
  assert len(losses) == 12
  assert np.mean(losses[-2:]) < losses[0] - 0.05, losses
  chance = summary["chance"]
  assert 0.0 < chance["positive_rate"] < 0.5
  # The random-score mAP agrees with the positive-rate chance level.
  assert abs(chance["random_map"] - chance["positive_rate"]) < 0.1
  margin = max(0.05, 3 * chance["random_map_std"])
  assert summary["test_map"] > max(chance["random_map"], chance["positive_rate"]) + margin, (
      summary["test_map"], chance)


@pytest.mark.slow
def test_demo_leaves_model_logs_and_pictures(summary):
  out = summary["model_dir"]
  on_disk = json.load(open(os.path.join(out, demo.SUMMARY_FILE)))
  assert on_disk["test_map"] == summary["test_map"]
  metrics = json.load(open(os.path.join(out, "eval", "metrics.json")))
  assert metrics["map"] == summary["test_map"] and metrics["num_videos"] == 48
  assert tf.saved_model.load(summary["export"]).signatures["serving_default"] is not None
  for name in ("network", "training_curves", "per_class_ap"):
    image = tf.io.decode_png(tf.io.read_file(summary["pictures"][name])).numpy()
    assert image.std() > 10, name
  tags = {v.tag for path in tf.io.gfile.glob(os.path.join(out, "pictures", "events.*"))
          for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
  assert {"network", "training_curves", "per_class_ap"} <= tags
  text = demo.format_summary(summary)
  for expected in ("test mAP", "chance level", "tensorboard --logdir=", summary["export"]):
    assert expected in text


@pytest.mark.slow
def test_demo_checkpoint_evaluates_as_the_trained_model(summary):
  """Evaluating the saved checkpoint in a fresh model gives the in-run test mAP: every
  variable (batch-norm statistics included) is restored, as export relies on too."""
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  demo.parse_gin([demo.DEFAULT_GIN], REDUCED)
  try:
    record = experiment.run_mode("eval", summary["model_dir"], seed=0)
  finally:
    import gin  # pylint: disable=g-import-not-at-top
    gin.clear_config()
  assert record["map"] == pytest.approx(summary["test_map"], abs=1e-4)
