import numpy as np
import tensorflow as tf

from official.data import preprocessing


def test_normalize_frames_maps_uint8_range_to_unit_interval():
  frames = tf.constant([0, 51, 255], dtype=tf.uint8)
  np.testing.assert_allclose(preprocessing.normalize_frames(frames).numpy(),
                             [-1.0, 51 / 127.5 - 1.0, 1.0], rtol=1e-6)



def test_normalize_frames_is_the_same_eagerly_and_in_a_dataset_map():
  frames = tf.constant(np.arange(0, 256, 5, dtype=np.uint8).reshape(1, 4, 13))
  mapped = next(iter(tf.data.Dataset.from_tensors(frames).map(
      preprocessing.normalize_frames))).numpy()
  np.testing.assert_array_equal(preprocessing.normalize_frames(frames).numpy(), mapped)
