"""Tiny trained-looking models for the prediction and feature tests: a gin experiment's
model with random weights and a sharpened classifier (so that views give clearly different
scores), saved as a checkpoint in a model_dir and exported, without training or data."""

import os

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")
CLASS_NAMES = [f"action {i}" for i in range(12)]
# tiny_smoke.gin with its class names given, so no dataset is generated.
BINDINGS = ["Experiment.prepare_data_fn = None",
            f"Experiment.class_names = {CLASS_NAMES!r}"]
FPS = 8


def env():
  """The environment of a command-line subprocess run from the repository root."""
  environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  environment.pop("TF_CONFIG", None)
  return environment


def moving_square_video(num_frames, height, width, seed):
  """uint8 [T, H, W, 3]: a coloured square crossing a gradient, different per seed."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  background = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60)], -1)
  frames = np.repeat(background[None].astype(np.uint8), num_frames, axis=0)
  color = rng.integers(100, 256, 3)
  for t in range(num_frames):
    top = (5 + 2 * t) % (height - 12)
    left = (3 + 3 * t) % (width - 12)
    frames[t, top:top + 12, left:left + 12] = color
  return frames


def write_test_videos(folder):
  """Two mp4s (20 frames 48 x 64, 13 frames 64 x 48, 8 fps) and a corrupt file in
  `folder` -> ([clip0, clip1], corrupt) paths."""
  from data_prep import video as video_lib  # pylint: disable=g-import-not-at-top
  paths = []
  for i, (frames, height, width) in enumerate([(20, 48, 64), (13, 64, 48)]):
    path = os.path.join(folder, f"clip{i}.mp4")
    video_lib.write_video(path, moving_square_video(frames, height, width, i), FPS)
    paths.append(path)
  corrupt = os.path.join(folder, "corrupt.mp4")
  with open(corrupt, "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
  return paths, corrupt


def make_model_dir(model_dir, gin_file, gin_bindings, seed=0):
  """Writes checkpoint 0 of the experiment's model into `model_dir` and exports it.

  Returns:
    (export path, {'kernel', 'bias'}: the head's classifier Dense weights).
  """
  import gin  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  from official.training import strategies  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin_flags.parse_gin([gin_file], list(gin_bindings), finalize=False)
    runner = experiment.Runner(experiment.Experiment(), str(model_dir),
                               strategies.build_strategy("one_device"))
    head = runner.model.get_layer("head").classifier
    rng = np.random.default_rng(seed)
    head.kernel.assign(rng.normal(0, 3, head.kernel.shape))
    head.bias.assign(rng.normal(0, 0.5, head.bias.shape))
    tf.train.CheckpointManager(runner.trainer.checkpoint(), str(model_dir), 1).save(0)
    export_path = runner.export(None)
    weights = {"kernel": head.kernel.numpy(), "bias": head.bias.numpy()}
  finally:
    gin.clear_config()
  return export_path, weights
