"""Frame conversion shared by training, evaluation and serving.

Every path that turns stored uint8 frames into model input calls `normalize_frames`, so the
exported serving graph sees exactly what the model saw in training. Object maps need no
conversion: the model takes the stored uint8 class ids.
"""

import tensorflow as tf

NUM_OBJECT_CLASSES = 151  # ADE-20K's 150 classes + "other" (id 0).


def normalize_frames(frames):
  """uint8 RGB `[..., 3]` -> float32 in [-1, 1]."""
  return tf.cast(frames, tf.float32) / 127.5 - 1.0
