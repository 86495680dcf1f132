"""`build_model.num_object_classes` is honoured from the data to the export: an object
model with K != 151 object classes trains on the prepared uint8 maps and serves them."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")
NUM_OBJECT_CLASSES = 40
# tiny_smoke with an object stem (node 1) and peer-attention.
BINDINGS = [
    "build_model.model_type = 'assemblenet_plus'",
    "build_model.structure = [[-1, 1], [-3, 1], [0, [0, 1], 8, 1, 1, 0], "
    "[1, [2], 16, 1, 2, 0], [2, [2, 3], 16, 1, 2, 0], [3, [4], 32, 1, 2, 0]]",
    "build_model.attention_mode = 'peer'",
    f"build_model.num_object_classes = {NUM_OBJECT_CLASSES}",
    "Experiment.train_steps = 2",
    "Experiment.checkpoint_interval = 2",
]


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  flags = [f"--gin_file={GIN}"] + [f"--gin_param={b}" for b in BINDINGS]
  result = subprocess.run([sys.executable, "-m", "official.train", *args, *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_a_model_with_40_object_classes_trains_and_exports(tmp_path):
  model_dir = tmp_path / "run"
  _cli("--mode=train", f"--model_dir={model_dir}")
  assert (model_dir / "ckpt-2.index").exists()
  _cli("--mode=export", f"--model_dir={model_dir}")
  exports = sorted((model_dir / "export").iterdir())
  served = tf.saved_model.load(str(exports[-1])).signatures["serving_default"]
  rng = np.random.default_rng(0)
  frames = tf.constant(rng.integers(0, 256, (1, 4, 32, 32, 3), dtype=np.uint8))
  objects = rng.integers(0, NUM_OBJECT_CLASSES, (1, 4, 32, 32), dtype=np.uint8)
  probabilities = served(frames=frames, objects=tf.constant(objects))["probabilities"]
  assert probabilities.shape == (1, 12)
  assert np.all(np.isfinite(probabilities.numpy()))
  # ADE-20K ids the model has no channel for (40..150) count as no class, as in training
  # on the prepared maps: any of them gives the same scores.
  objects[0, :, :8, :8] = 45
  first = served(frames=frames, objects=tf.constant(objects))["probabilities"].numpy()
  objects[0, :, :8, :8] = 150
  np.testing.assert_array_equal(
      served(frames=frames, objects=tf.constant(objects))["probabilities"].numpy(), first)
  # An id outside the ADE-20K label space is refused, naming the input.
  objects[0, 0, 0, 0] = 151
  with pytest.raises(tf.errors.InvalidArgumentError, match="`objects` must hold object "
                                                           "class ids below 151"):
    served(frames=frames, objects=tf.constant(objects))
