""".keras files written with plain `keras.layers.Conv2D` spatial convs (the package before
the training-speed work of issue 18) load into the current code, and the other way round.

A .keras file addresses a layer held in a list (the fusion's projections, the lite blocks'
1x1 convs) by its class name, so the package's conv class must keep Conv2D's file paths:
with a differently named subclass every such layer failed to load ("expected 1 variables,
but received 0") or kept its fresh initial weights. The old code is reproduced by making
`conv_2plus1d.spatial_conv` return `keras.layers.Conv2D` while the model is built.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import builders
from official.modeling.layers import conv_2plus1d

FRAMES, SIZE, CLASSES = 2, 16, 5
# RGB and object stems of different widths: the fusion projects them (layers in a list).
STRUCTURE = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 8, 1, 2, 0],
             [2, [3], 8, 1, 2, 0], [3, [1, 4], 8, 1, 2, 0]]


@contextlib.contextmanager
def _plain_keras_convs():
  factory = conv_2plus1d.spatial_conv

  def plain(filters, kernel_size, strides, name, dtype=None):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides,
                               padding="same" if strides == 1 else "valid", use_bias=False,
                               name=name, dtype=dtype)

  conv_2plus1d.spatial_conv = plain
  try:
    yield
  finally:
    conv_2plus1d.spatial_conv = factory


def _model(model_type):
  if model_type == "assemblenet_plus_lite":
    return builders.build_model(model_type=model_type, structure="asnp_lite_objects",
                                edge_weights=None, depth=None, num_frames=FRAMES, image_size=SIZE,
                                num_classes=CLASSES)
  return builders.build_model(structure=STRUCTURE, edge_weights=None, model_type=model_type,
                              depth=26, num_frames=FRAMES, image_size=SIZE,
                              num_classes=CLASSES, attention_mode="peer")


def _inputs():
  rng = np.random.default_rng(0)
  return {"rgb": tf.constant(rng.uniform(-1, 1, (2, FRAMES, SIZE, SIZE, 3)), tf.float32),
          "objects": tf.constant(rng.integers(0, 151, (2, FRAMES, SIZE, SIZE)), tf.uint8)}


def _randomize(model):
  rng = np.random.default_rng(1)
  model.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32)
                     for w in model.get_weights()])


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["assemblenet_plus", "assemblenet_plus_lite"])
@pytest.mark.parametrize("writer_is_old", [True, False])
def test_keras_files_load_across_the_conv_class_change(tmp_path, model_type, writer_is_old):
  path = str(tmp_path / "model.keras")
  writer = _plain_keras_convs() if writer_is_old else contextlib.nullcontext()
  reader = contextlib.nullcontext() if writer_is_old else _plain_keras_convs()
  with writer:
    model = _model(model_type)
    _randomize(model)
    want = model(_inputs(), training=False).numpy()
    model.save(path)
  with reader:
    loaded = keras.models.load_model(path)
  inner_convs = [layer for layer in loaded._flatten_layers()  # pylint: disable=protected-access
                 if isinstance(layer, keras.layers.Conv2D)]
  assert inner_convs  # the comparison covers list-held convs (projections / lite 1x1s)
  for saved, restored in zip(model.weights, loaded.weights):
    assert saved.path == restored.path
    np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
  np.testing.assert_allclose(loaded(_inputs(), training=False).numpy(), want, atol=1e-5)
