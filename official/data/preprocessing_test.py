import numpy as np
import tensorflow as tf

from official.data import preprocessing


def test_normalize_frames_maps_uint8_range_to_unit_interval():
  frames = tf.constant([0, 51, 255], dtype=tf.uint8)
  np.testing.assert_allclose(preprocessing.normalize_frames(frames).numpy(),
                             [-1.0, 51 / 127.5 - 1.0, 1.0], rtol=1e-6)


def test_objects_one_hot_matches_eager_and_dataset_map():
  ids = tf.constant([[0, 150], [7, 7]], dtype=tf.uint8)
  eager = preprocessing.objects_one_hot(ids).numpy()
  assert eager.shape == (2, 2, 151)
  np.testing.assert_array_equal(eager.argmax(-1), ids.numpy())
  np.testing.assert_array_equal(eager.sum(-1), np.ones((2, 2)))
  mapped = next(iter(tf.data.Dataset.from_tensors(ids).map(
      preprocessing.objects_one_hot))).numpy()
  np.testing.assert_array_equal(eager, mapped)
