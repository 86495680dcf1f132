"""Object models through the export: uint8 class-id maps in, the same probabilities as the
Keras model on the evaluation pipeline's views out."""

import os

import numpy as np
import pytest
import tensorflow as tf

from official.data import input_pipeline
from official.data import preprocessing
from official.export import serving
from official.modeling import builders

NUM_FRAMES, IMAGE_SIZE, NUM_CLASSES = 4, 32, 5
# RGB stem, object stem, one fused node per level (peer attention over both stems).
TINY_OBJECT_STRUCTURE = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 8, 1, 2, 0],
                         [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]


def _object_model():
  return builders.build_model(
      structure=TINY_OBJECT_STRUCTURE, edge_weights=None, model_type="assemblenet_plus",
      depth=26, num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES,
      attention_mode="peer")


def _clip(height, width, seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (2, NUM_FRAMES, height, width, 3), dtype=np.uint8)
  objects = rng.integers(0, 151, (2, NUM_FRAMES, height, width), dtype=np.uint8)
  return frames, objects


def _reference_probabilities(model, frames, objects):
  """The evaluation pipeline's geometry (short side to S, centre crop) on the host."""
  def views(images, method):
    flat = images.reshape((-1,) + images.shape[2:])
    crops = input_pipeline.eval_views(
        input_pipeline.short_side_resize(flat, IMAGE_SIZE, method), IMAGE_SIZE, 1)[0]
    return tf.reshape(crops, [frames.shape[0], NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, -1])
  rgb = preprocessing.normalize_frames(views(frames, "bilinear"))
  ids = tf.cast(views(objects[..., None], "nearest")[..., 0], tf.uint8)
  logits = model({"rgb": rgb, "objects": ids}, training=False)
  return tf.sigmoid(logits).numpy()


@pytest.mark.slow
def test_object_model_export_serves_the_keras_probabilities(tmp_path):
  model = _object_model()
  path = serving.export_saved_model(
      model, str(tmp_path / "export"), [f"class_{i}" for i in range(NUM_CLASSES)],
      num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, uses_objects=True)
  assert os.path.exists(os.path.join(path, "saved_model.pb"))
  served = tf.saved_model.load(path).signatures[serving.SIGNATURE]
  assert sorted(served.structured_input_signature[1]) == ["frames", "objects"]
  # Same size (no resampling) and a larger non-square clip (resize + centre crop).
  for height, width in ((IMAGE_SIZE, IMAGE_SIZE), (48, 80)):
    frames, objects = _clip(height, width)
    got = served(frames=tf.constant(frames), objects=tf.constant(objects))
    np.testing.assert_allclose(got["probabilities"].numpy(),
                               _reference_probabilities(model, frames, objects),
                               atol=1e-5)

