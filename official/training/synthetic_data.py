"""A "prepare if missing" step for self-contained experiments (gin/experiments/tiny_smoke.gin):
generates the built-in synthetic Charades-layout release and prepares it as the
`charades/synthetic` TFDS dataset, once."""

import json
import os

from absl import logging
import gin
import tensorflow as tf

SYNTHETIC_DATASET = "charades/synthetic"


@gin.configurable
def prepare_synthetic_charades(model_dir, data_dir=None, num_train=16, num_test=8,
                               height=48, width=64, fps=8.0, min_frames=12, max_frames=20,
                               seed=0):
  """Generates and prepares the synthetic dataset unless already prepared with the same
  arguments (recorded as JSON in `data_dir/PREPARED`); data made with other arguments is
  regenerated.

  Args:
    model_dir: the experiment's directory (the default home of the data).
    data_dir: TFDS data_dir; default `model_dir/synthetic_data`.
    num_train, num_test, height, width, fps, min_frames, max_frames, seed: see
      `data_prep.synthetic.generate`.

  Returns:
    The TFDS data_dir holding `charades/synthetic`.
  """
  # Imported here: data_prep (video encoding, TFDS builders) is only needed by this step.
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or os.path.join(model_dir, "synthetic_data")
  done_marker = os.path.join(data_dir, "PREPARED")
  arguments = {"dataset": SYNTHETIC_DATASET, "num_train": num_train, "num_test": num_test,
               "height": height, "width": width, "fps": float(fps),
               "min_frames": min_frames, "max_frames": max_frames, "seed": seed}
  if tf.io.gfile.exists(done_marker):
    with tf.io.gfile.GFile(done_marker) as f:
      text = f.read()
    try:
      recorded = json.loads(text)
    except ValueError:
      recorded = text.strip()
    if recorded == arguments:
      return data_dir
    # Data this function made from other arguments: regenerate (it owns the directory).
    logging.warning("%s holds synthetic data generated with %s; regenerating with %s.",
                    data_dir, recorded, arguments)
    tf.io.gfile.remove(done_marker)
    for name in ("release", "charades"):
      if tf.io.gfile.exists(os.path.join(data_dir, name)):
        tf.io.gfile.rmtree(os.path.join(data_dir, name))
  release = os.path.join(data_dir, "release")
  logging.info("Generating the synthetic dataset in %s.", release)
  synthetic.generate(release, seed=seed, num_train=num_train, num_test=num_test,
                     height=height, width=width, fps=fps, min_frames=min_frames,
                     max_frames=max_frames)
  prepare.prepare(SYNTHETIC_DATASET, manual_dir=release, data_dir=data_dir,
                  object_maps_dir=os.path.join(release, "Charades_v1_objects"))
  with tf.io.gfile.GFile(done_marker, "w") as f:
    f.write(json.dumps(arguments, sort_keys=True) + "\n")
  return data_dir
