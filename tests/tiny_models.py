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


def write_rotated_video(path, frames, fps, display_matrix=(0, 1, -1, 0)):
  """Writes uint8 [T, H, W, 3] frames as coded pictures with a display matrix (a, b, c, d),
  as phones do: the default is a phone held upright (a player turns the picture 90 degrees
  clockwise, so it shows W x H)."""
  import fractions  # pylint: disable=g-import-not-at-top
  import av  # pylint: disable=g-import-not-at-top
  with av.open(os.fspath(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "18", "threads": "1"}
    a, b, c, d = display_matrix
    # ISO 14496-12 display matrix: a, b, c, d in 16.16 fixed point, w in 2.30.
    stream.set_display_matrix([a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30])
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_truncated_video(path):
  """A download cut short: an mp4 with its index first (faststart), cut in half."""
  import av  # pylint: disable=g-import-not-at-top
  whole = path + ".whole.mp4"
  with av.open(whole, mode="w", options={"movflags": "faststart"}) as container:
    stream = container.add_stream("libx264", rate=FPS)
    stream.height, stream.width = 48, 64
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "18", "threads": "1"}
    for frame in moving_square_video(40, 48, 64, seed=5):
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  with open(whole, "rb") as f:
    data = f.read()
  os.remove(whole)
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return path


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
  from official.training import reproducibility  # pylint: disable=g-import-not-at-top
  from official.training import strategies  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin_flags.parse_gin([gin_file], list(gin_bindings), finalize=False)
    # As training starts: the whole configuration in model_dir/config.gin.
    reproducibility.write_start_files(str(model_dir), "")
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
