"""Files that let a run be understood and repeated (gin configs, flags, versions), and the
process-wide settings a run makes (seeds, op determinism, dtype policy), undone after it."""

import contextlib
import os
import platform
import random

import gin
import keras
import numpy as np
import tensorflow as tf

import official
from official import runtime
from official.evaluation import writers

CONFIG_FILE = "config.gin"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
FLAGS_FILE = "flags.txt"
VERSIONS_FILE = "versions.json"


def set_seed_and_determinism(seed, deterministic):
  """Seeds Python, NumPy and TensorFlow; with `deterministic`, TF ops become deterministic
  (and raise on ops that have no deterministic kernel)."""
  if seed is not None:
    keras.utils.set_random_seed(seed)
  if deterministic:
    tf.config.experimental.enable_op_determinism()


# Keras 3's global seed state (`keras.utils.set_random_seed` sets both).
_KERAS_SEED_ATTRIBUTES = ("global_random_seed", "global_seed_generator")


@contextlib.contextmanager
def preserved_process_state():
  """Restores, on exit, the process-wide state a run changes: Python's and NumPy's global
  random state, TensorFlow's global seed, Keras' global seed and seed generator, TF op
  determinism and Keras' global dtype policy. So a run (`experiment.run_mode`, a test)
  leaves the process as it found it, and its settings cannot leak into what runs next.
  """
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.common import global_state
  from tensorflow.python.eager import context
  # Not in tf.config's public API: whether determinism is on, and turning it off.
  from tensorflow.python.framework import config as tf_config
  # pylint: enable=g-import-not-at-top
  python_state, numpy_state = random.getstate(), np.random.get_state()
  tf_seed = context.global_seed()
  keras_seeds = {name: global_state.get_global_attribute(name)
                 for name in _KERAS_SEED_ATTRIBUTES}
  determinism = tf_config.is_op_determinism_enabled()
  policy = keras.mixed_precision.global_policy()
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(policy)
    if determinism != tf_config.is_op_determinism_enabled():
      (tf_config.enable_op_determinism if determinism else
       tf_config.disable_op_determinism)()
    for name, value in keras_seeds.items():
      global_state.set_global_attribute(name, value)
    tf.random.set_seed(tf_seed)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


def versions():
  """Package and framework versions, and the CPU kernels and allocator TF runs with."""
  return {"assemblenet": official.__version__, "tensorflow": tf.__version__,
          "keras": keras.__version__, "python": platform.python_version(),
          "onednn_kernels": runtime.onednn_kernels(),
          "tf_cpu_allocator": runtime.cpu_allocator()}


def _write_text(path, text):
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(text)


def write_start_files(model_dir, flags_text):
  """The gin config as parsed at start, the command-line flags and the versions."""
  tf.io.gfile.makedirs(model_dir)
  _write_text(os.path.join(model_dir, CONFIG_FILE), gin.config_str())
  _write_text(os.path.join(model_dir, FLAGS_FILE), flags_text)
  writers.write_json(os.path.join(model_dir, VERSIONS_FILE), versions())


def write_operative_config(model_dir):
  """The gin parameters actually used, known once the first step has run."""
  _write_text(os.path.join(model_dir, OPERATIVE_CONFIG_FILE), gin.operative_config_str())
