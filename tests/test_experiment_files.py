"""Every experiment under gin/experiments/ parses, configures an `Experiment`, and builds a
model that runs a forward pass, with tiny clip shapes bound over the file's own; and each
file opens with the comment the house style asks for (what it reproduces, the command)."""

import glob
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from official import gin_flags
from official.modeling import assemblenet
from official.modeling import builders
from official.training import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "gin", "experiments", "*.gin")))
# The real datasets need a data_dir (`%gin.REQUIRED`); nothing is read here.
TINY = ["NUM_FRAMES = 4", "IMAGE_SIZE = 32", "build_model.depth = 26",
        "VideoInput.data_dir = '/nonexistent'", "INIT_CHECKPOINT = '/kinetics/ckpt-9'"]
# What each file must bind: (model structure, classes, objects, loss, metric).
EXPECTED = {
    "charades_assemblenet50.gin": ("asn50", 157, False, None, None),
    "charades_assemblenet101_from_kinetics.gin": ("asn101", 157, False,
                                                  "sigmoid_cross_entropy", "map"),
    "charades_assemblenet_plus50.gin": ("full_asnp50", 157, True, "sigmoid_cross_entropy",
                                        "map"),
    "smarthome_cs_assemblenet_plus50.gin": ("full_asnp50", 31, True,
                                            "softmax_cross_entropy", "mean_class_accuracy"),
    "smarthome_cv1_assemblenet_plus50.gin": ("full_asnp50", 19, True,
                                             "softmax_cross_entropy", "mean_class_accuracy"),
    "smarthome_cv2_assemblenet_plus50.gin": ("full_asnp50", 19, True,
                                             "softmax_cross_entropy", "mean_class_accuracy"),
    "demo_synthetic.gin": ("demo_asnp", 12, True, "sigmoid_cross_entropy", "map"),
    "tiny_smoke.gin": ("custom", 12, False, "sigmoid_cross_entropy", "map"),
    # The connectivity search's experiment: DEMO_ASNP until a genome replaces it.
    "search_synthetic.gin": ("demo_asnp", 12, True, "sigmoid_cross_entropy", "map"),
    "charades_assemblenet_plus_lite.gin": ("asnp_lite_objects", 157, True,
                                           "sigmoid_cross_entropy", "map"),
}


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_every_experiment_file_is_listed():
  assert sorted(os.path.basename(p) for p in EXPERIMENTS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_parses_and_builds_with_tiny_shapes(path, monkeypatch):
  monkeypatch.chdir(ROOT)  # include paths are relative to the repository root
  structure, num_classes, objects, loss_kind, metric = EXPECTED[os.path.basename(path)]
  with open(path) as f:
    header = f.read().split("\n\n", 1)[0]
  assert header.startswith("#") and "python -m official." in header, header

  # AssembleNet++lite has fixed blocks per level: no depth to shrink.
  tiny = [b for b in TINY if "depth" not in b] if structure.startswith("asnp_lite") else TINY
  gin_flags.parse_gin([path], tiny)
  model = builders.build_model()
  assert model.structure.name == structure
  assert assemblenet.uses_objects(model) == objects
  inputs = {"rgb": tf.zeros((1, 4, 32, 32, 3))}
  if objects:
    inputs["objects"] = tf.zeros((1, 4, 32, 32), tf.uint8)
  logits = model(inputs, training=False).numpy()
  assert logits.shape == (1, num_classes) and np.isfinite(logits).all()

  if loss_kind is None:  # A model-only file: no training bindings yet.
    return
  exp = experiment.Experiment()
  assert (exp.loss_kind, exp.eval_metric) == (loss_kind, metric)
  assert exp.train_batch_size > 0 and exp.train_steps > 0 and exp.eval_batch_size > 0
  if "smarthome" in path:  # Best on validation; test once, apart.
    assert (exp.eval_split, exp.final_eval_split) == ("validation", "test")
  else:
    assert exp.final_eval_split is None
  if "from_kinetics" in path:  # Fine-tuning: the backbone from the checkpoint, a new head.
    assert (exp.init_checkpoint, exp.init_checkpoint_modules) == ("/kinetics/ckpt-9",
                                                                  "backbone")
  else:
    assert exp.init_checkpoint is None
  # The data side agrees with the model on the clip and the classes.
  assert _value("VideoInput.num_frames") == 4
  assert _value("VideoInput.image_size") == 32
  assert _value("build_model.num_classes") == num_classes


def _value(binding):
  """A binding's value, with a `%MACRO` resolved."""
  value = gin.query_parameter(binding)
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn()
  return value
