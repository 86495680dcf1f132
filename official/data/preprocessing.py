"""Frame and object-map conversions shared by training, evaluation and serving.

Every path that turns stored uint8 frames into model input calls these functions, so the
exported serving graph sees exactly what the model saw in training.
"""

import tensorflow as tf

NUM_OBJECT_CLASSES = 151  # ADE-20K's 150 classes + "other" (id 0).


def normalize_frames(frames):
  """uint8 RGB `[..., 3]` -> float32 in [-1, 1]."""
  return tf.cast(frames, tf.float32) / 127.5 - 1.0


def objects_one_hot(class_ids, depth=NUM_OBJECT_CLASSES):
  """uint8/int class-id maps `[..., H, W]` -> float32 one-hot `[..., H, W, depth]`."""
  return tf.one_hot(tf.cast(class_ids, tf.int32), depth, dtype=tf.float32)
