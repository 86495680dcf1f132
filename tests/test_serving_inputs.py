"""The exported `serving_default` checks its inputs: a TF Serving client that sends a wrong
shape, a wrong channel count, an unbatched clip, objects that disagree with the frames or
object ids outside ADE-20K gets an error naming the input and what was expected, not an
error from deep inside the graph (or, for ids, silently wrong scores)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from official.export import serving
from official.modeling import builders

NUM_FRAMES, IMAGE_SIZE, NUM_CLASSES = 4, 32, 5
# RGB stem, object stem, one fused node per level (peer attention over both stems).
TINY_OBJECT_STRUCTURE = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [2], 8, 1, 2, 0],
                         [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]


@pytest.fixture(scope="module")
def export_path(tmp_path_factory):
  model = builders.build_model(
      structure=TINY_OBJECT_STRUCTURE, edge_weights=None, model_type="assemblenet_plus",
      depth=26, num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES,
      attention_mode="peer")
  return serving.export_saved_model(
      model, str(tmp_path_factory.mktemp("serving") / "export"),
      [f"class_{i}" for i in range(NUM_CLASSES)], num_frames=NUM_FRAMES,
      image_size=IMAGE_SIZE, uses_objects=True, version=1)


@pytest.fixture(scope="module")
def serve(export_path):
  # The Python signature runs the graph with whatever shape it gets, as TF Serving does.
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  return lambda frames, objects: signature(frames=tf.constant(frames),
                                           objects=tf.constant(objects))


def _inputs(frames_shape, objects_shape, max_id=150, seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, frames_shape, dtype=np.uint8)
  objects = rng.integers(0, max_id + 1, objects_shape, dtype=np.uint8)
  return frames, objects


def test_valid_inputs_still_serve(serve):
  frames, objects = _inputs((2, NUM_FRAMES, 40, 48, 3), (2, NUM_FRAMES, 40, 48))
  probabilities = serve(frames, objects)["probabilities"].numpy()
  assert probabilities.shape == (2, NUM_CLASSES)
  assert np.all((probabilities > 0) & (probabilities < 1))


def test_wrong_frame_count_names_frames_and_the_expected_shape(serve):
  # Before: "Input to reshape is a tensor with 24576 values, but the requested shape has
  # 12288" from a Reshape node.
  frames, objects = _inputs((1, 8, 32, 32, 3), (1, 8, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`frames` must have 4 frames per clip .*\[batch, 4, height, "
                           r"width, 3\].*\[1 8 32 32 3\]"):
    serve(frames, objects)


def test_one_channel_frames_name_frames_and_rgb(serve):
  # Before: "Input to reshape is a tensor with 4096 values, but the requested shape has
  # 12288".
  frames, objects = _inputs((1, NUM_FRAMES, 32, 32, 1), (1, NUM_FRAMES, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`frames` must be RGB with 3 channels .*\[1 4 32 32 1\]"):
    serve(frames, objects)


def test_unbatched_clip_names_frames_and_the_batch_axis(serve):
  # Before: "input must be 4-dimensional[128,32,3]" from ResizeBilinear (or [128,32,1]
  # from the objects' ResizeNearestNeighbor, whichever ran first).
  frames, objects = _inputs((NUM_FRAMES, 32, 32, 3), (NUM_FRAMES, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`frames` must be a batch of clips \[batch, 4, height, width, "
                           r"3\] \(rank 5\).*add a batch axis.*\[4 32 32 3\]"):
    serve(frames, objects)


def test_unbatched_objects_name_objects(serve):
  # Before: "input must be 4-dimensional[128,32,1]" from ResizeNearestNeighbor.
  frames, objects = _inputs((1, NUM_FRAMES, 32, 32, 3), (NUM_FRAMES, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`objects` must be a batch of class-id maps \[batch, 4, height, "
                           r"width\] \(rank 4\).*\[4 32 32\]"):
    serve(frames, objects)


def test_objects_batch_disagreeing_with_frames_names_objects(serve):
  # Before: "Shapes of all inputs must match: values[0].shape = [8,151] != values[1].shape
  # = [4,151]" from a fusion layer's stack.
  frames, objects = _inputs((2, NUM_FRAMES, 32, 32, 3), (1, NUM_FRAMES, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`objects` must have the batch size and frame count of `frames`"
                           r".*\[1 4 32 32\].*\[2 4 32 32 3\]"):
    serve(frames, objects)


def test_objects_frame_count_disagreeing_with_frames_names_objects(serve):
  # Before: "Input to reshape is a tensor with 3072 values, but the requested shape has
  # 4096".
  frames, objects = _inputs((1, NUM_FRAMES, 32, 32, 3), (1, 3, 32, 32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`objects` must have the batch size and frame count of `frames`"
                           r".*\[1 3 32 32\]"):
    serve(frames, objects)


@pytest.mark.parametrize("objects_size", [(48, 40), (32, 40)])
def test_objects_of_another_height_or_width_than_frames_name_objects(serve, objects_size):
  # Before: served; maps and frames are resized and cropped independently, so a map of
  # another shape (a phone clip's maps in the coded, transposed orientation) put its ids on
  # other pixels than the frames'.
  frames, objects = _inputs((1, NUM_FRAMES, 40, 48, 3), (1, NUM_FRAMES) + objects_size)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`objects` must have the height and width of `frames`"
                           r".*\[1 4 " + " ".join(map(str, objects_size)) + r"\]"):
    serve(frames, objects)


@pytest.mark.parametrize("frames_shape", [(0, NUM_FRAMES, 32, 32, 3),
                                          (1, NUM_FRAMES, 0, 0, 3),
                                          (1, NUM_FRAMES, 0, 32, 3)])
def test_empty_batch_or_pictures_name_frames(serve, frames_shape):
  # Before: an empty batch failed in a convolution ("input depth must be evenly divisible
  # by filter depth: 8 vs 64"), 0-size pictures in ResizeBilinear ("input image must be of
  # non-zero size"): neither named the input.
  frames, objects = _inputs(frames_shape, frames_shape[:4])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`frames` must hold at least one clip of pictures at least "
                           r"1 x 1 pixels"):
    serve(frames, objects)


def test_object_ids_above_ade20k_are_an_error_naming_objects(serve):
  # Before: served without complaint, the out-of-range ids' one-hot rows all zero (the
  # pixels counted as no object at all), i.e. plausible but wrong scores.
  frames, objects = _inputs((1, NUM_FRAMES, 32, 32, 3), (1, NUM_FRAMES, 32, 32))
  objects[0, 2, 5, 7] = 200
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"`objects` must hold object class ids below 151 .*200"):
    serve(frames, objects)


def test_warmup_request_is_valid_and_served(export_path, serve):
  records = list(tf.data.TFRecordDataset(
      f"{export_path}/assets.extra/{serving.WARMUP_FILE}"))
  request = prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request
  inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
  assert sorted(inputs) == ["frames", "objects"]
  probabilities = serve(inputs["frames"], inputs["objects"])["probabilities"].numpy()
  assert probabilities.shape == (1, NUM_CLASSES) and np.all(np.isfinite(probabilities))


def test_exports_without_a_view_protocol_read_the_clip_from_the_warmup(export_path, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from official.inference import classifiers  # pylint: disable=g-import-not-at-top
  from official.inference import views  # pylint: disable=g-import-not-at-top
  # Exported without one: the default protocol, one centre clip at the file's rate.
  assert views.read_protocol(export_path) == views.ViewProtocol(NUM_FRAMES, IMAGE_SIZE)
  old_export = tmp_path / "7"
  shutil.copytree(export_path, old_export)
  os.remove(old_export / "assets.extra" / views.PROTOCOL_FILE)
  classifier = classifiers.SavedModelClassifier(str(tmp_path), {"num_clips": 2})
  assert classifier.path == str(old_export)
  assert classifier.protocol == views.ViewProtocol(NUM_FRAMES, IMAGE_SIZE, num_clips=2)
  assert classifier.uses_objects and classifier.class_names[0] == "class_0"
  frames, objects = _inputs((9, 40, 48, 3), (9, 40, 48))
  clips = views.clip_indices(9, classifier.protocol)
  expected = tf.saved_model.load(export_path).signatures[serving.SIGNATURE](
      frames=tf.constant(frames[clips]), objects=tf.constant(objects[clips]))
  np.testing.assert_array_equal(classifier.view_scores(frames, objects, clips),
                                expected["probabilities"].numpy())
