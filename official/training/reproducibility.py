"""Files that let a run be understood and repeated: gin configs, flags, versions."""

import os
import platform

import gin
import keras
import tensorflow as tf

import official
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


def versions():
  return {"assemblenet": official.__version__, "tensorflow": tf.__version__,
          "keras": keras.__version__, "python": platform.python_version()}


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
