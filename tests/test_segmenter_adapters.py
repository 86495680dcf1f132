"""The segmenters users can obtain (a KerasHub ADE-20K segmenter, a TF1 frozen DeepLab
graph) behind the object-map contract, alone and through `data_prep.prepare` on the
synthetic release. No weights are downloaded: the models are tiny and built here."""

import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import prepare
from data_prep import segmenters
from data_prep import synthetic
from data_prep import video


def _tiny_segformer(num_classes, image_size=64):
  """A randomly initialised SegFormer (MiT encoder, 4 levels) with its preprocessor."""
  encoder = keras_hub.models.MiTBackbone(
      layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1],
      layerwise_sr_ratios=[2, 1, 1, 1], max_drop_path_rate=0.0,
      layerwise_patch_sizes=[3, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
      image_shape=(image_size, image_size, 3), hidden_dims=[4, 8, 12, 16])
  backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
  converter = keras_hub.layers.SegFormerImageConverter(
      image_size=(image_size, image_size), scale=1 / 255.0)
  preprocessor = keras_hub.models.SegFormerImageSegmenterPreprocessor(
      image_converter=converter)
  return keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=num_classes,
                                                  preprocessor=preprocessor)


def _deeplab_graph(path, num_classes=151, fixed_batch=1):
  """A frozen graph with DeepLab's tensor names: scores one-hot at red // 2, on the frame
  downsampled 2x (as DeepLab's output stride), argmax -> SemanticPredictions."""
  graph = tf.Graph()
  with graph.as_default():
    images = tf.compat.v1.placeholder(tf.uint8, [fixed_batch, None, None, 3],
                                      name="ImageTensor")
    red = tf.cast(images[:, ::2, ::2, 0], tf.int32) // 2
    scores = tf.one_hot(red, num_classes)  # [B, H/2, W/2, num_classes]
    tf.identity(tf.argmax(scores, axis=3), name="SemanticPredictions")
  tf.io.write_graph(graph.as_graph_def(), os.path.dirname(path), os.path.basename(path),
                    as_text=False)
  return str(path)


def _frames(num=5, height=12, width=18, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num, height, width, 3)).astype(np.uint8)


def _nearest(ids, height, width):
  return tf.image.resize(ids[..., None], (height, width), method="nearest")[..., 0].numpy()


def test_deeplab_frozen_graph_batches_one_frame_at_a_time_and_resizes_back(tmp_path):
  path = _deeplab_graph(tmp_path / "frozen_inference_graph.pb")
  frames = _frames()
  segmenter = segmenters.load("deeplab:" + path, batch_size=4)
  assert segmenter.batch_size == 1  # DeepLab's exports fix the batch at 1.
  maps = segmenter(frames)
  assert maps.dtype == np.uint8 and maps.shape == (5, 12, 18)
  np.testing.assert_array_equal(maps, _nearest(frames[:, ::2, ::2, 0] // 2, 12, 18))
  unbatched = _deeplab_graph(tmp_path / "any_batch.pb", fixed_batch=None)
  np.testing.assert_array_equal(segmenters.load("deeplab:" + unbatched, 3)(frames), maps)


def test_deeplab_class_count_150_shifts_and_other_counts_are_refused(tmp_path):
  frames = _frames() // 2  # red // 2 < 64: a valid id either way.
  path = _deeplab_graph(tmp_path / "ade150.pb", num_classes=150)
  np.testing.assert_array_equal(segmenters.load("deeplab:" + path)(frames),
                                _nearest(frames[:, ::2, ::2, 0] // 2 + 1, 12, 18))
  path = _deeplab_graph(tmp_path / "voc.pb", num_classes=21)
  with pytest.raises(ValueError, match="predicts 21 classes.*150.*151"):
    segmenters.load("deeplab:" + path)
  with pytest.raises(ValueError, match="ImageTensor:0"):
    graph = tf.Graph()
    with graph.as_default():
      tf.identity(tf.compat.v1.placeholder(tf.uint8, [None, 3]), name="x")
    tf.io.write_graph(graph.as_graph_def(), str(tmp_path), "other.pb", as_text=False)
    segmenters.load("deeplab:" + str(tmp_path / "other.pb"))
  (tmp_path / "text.pb").write_text("not a graph")
  with pytest.raises(ValueError, match="not a readable frozen GraphDef"):
    segmenters.load("deeplab:" + str(tmp_path / "text.pb"))


def test_keras_hub_preset_dir_shifts_150_classes_and_keeps_the_whole_frame(tmp_path):
  model = _tiny_segformer(150)
  model.save_to_preset(str(tmp_path / "preset"))
  frames = _frames(num=5, height=20, width=36)  # Not square: no crop may happen.
  segmenter = segmenters.load("keras_hub:" + str(tmp_path / "preset"), batch_size=2)
  maps = segmenter(frames)
  assert maps.dtype == np.uint8 and maps.shape == (5, 20, 36)
  # KerasHub's own predict (which applies the preset's preprocessor) on whole frames
  # stretched to the model's 64 x 64 input, argmax + 1, back to the frame size.
  stretched = tf.image.resize(tf.cast(frames, tf.float32), (64, 64)).numpy()
  scores = model.predict(stretched, verbose=0)
  np.testing.assert_array_equal(maps, _nearest(np.argmax(scores, -1) + 1, 20, 36))
  assert maps.min() >= 1


def test_keras_hub_model_with_another_class_count_is_refused(tmp_path):
  _tiny_segformer(10).save_to_preset(str(tmp_path / "preset10"))
  with pytest.raises(ValueError, match="predicts 10 classes.*150.*151"):
    segmenters.load("keras_hub:" + str(tmp_path / "preset10"))


def test_a_deeplab_graph_whose_class_count_cannot_be_read_is_refused(tmp_path):
  # Before: an unreadable count (scores without a static last dimension) was taken as 151,
  # so a 150-class graph gave every pixel the id of the neighbouring class.
  graph = tf.Graph()
  with graph.as_default():
    images = tf.compat.v1.placeholder(tf.uint8, [1, None, None, 3], name="ImageTensor")
    depth = tf.compat.v1.placeholder_with_default(150, [])
    scores = tf.one_hot(tf.cast(images[..., 0], tf.int32) // 2, depth)
    tf.identity(tf.argmax(scores, axis=3), name="SemanticPredictions")
  tf.io.write_graph(graph.as_graph_def(), str(tmp_path), "frozen.pb", as_text=False)
  with pytest.raises(ValueError, match=r"class count .* cannot be read"):
    segmenters.load("deeplab:" + str(tmp_path / "frozen.pb"))


def test_a_keras_hub_preset_without_an_image_converter_is_refused(tmp_path):
  # Before: without a preprocessor the frames went in as 0..255 floats, which an ADE-20K
  # SegFormer or DeepLabV3 (0..1 or ImageNet-normalised input) turns into plausible but
  # wrong maps, without a word.
  model = _tiny_segformer(151)
  bare = keras_hub.models.SegFormerImageSegmenter(backbone=model.backbone, num_classes=151)
  bare.save_to_preset(str(tmp_path / "bare"))
  with pytest.raises(ValueError, match="no image converter"):
    segmenters.load("keras_hub:" + str(tmp_path / "bare"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("release"))
  synthetic.generate(root, seed=3, num_train=2, num_test=1, height=24, width=32,
                     min_frames=8, max_frames=9, write_object_maps=False)
  return root


def _prepared_maps(release, data_dir, segmenter):
  builder = prepare.prepare("charades/synthetic", release, data_dir, segmenter=segmenter,
                            segmenter_batch_size=3)
  assert builder.info.metadata["object_maps"] == "segmenter"
  maps = {}
  for split in ("train", "test"):
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
      maps[example["video_id"].decode()] = example["object_maps"][..., 0]
  assert sorted(maps) == ["TE00000", "TR00000", "TR00001"]
  return builder, maps


def _decoded(release, video_id):
  # The synthetic config keeps the source rate and size: what the builder segments.
  return video.read_video(os.path.join(release, "Charades_v1_480", video_id + ".mp4")).frames


@pytest.mark.slow
def test_prepare_with_a_deeplab_frozen_graph(release, tmp_path):
  spec = "deeplab:" + _deeplab_graph(tmp_path / "frozen_inference_graph.pb")
  builder, maps = _prepared_maps(release, str(tmp_path / "data"), spec)
  for video_id, stored in maps.items():
    frames = _decoded(release, video_id)
    assert stored.shape == frames.shape[:3]
    np.testing.assert_array_equal(stored, _nearest(frames[:, ::2, ::2, 0] // 2, 24, 32))
  record = builder.info.metadata["preparation"]["object_maps"]
  assert record["adapter"] == "deeplab_frozen_graph" and record["file_bytes"] > 0


@pytest.mark.slow
def test_prepare_with_a_keras_hub_preset(release, tmp_path):
  model = _tiny_segformer(150)
  model.save_to_preset(str(tmp_path / "preset"))
  spec = "keras_hub:" + str(tmp_path / "preset")
  builder, maps = _prepared_maps(release, str(tmp_path / "data"), spec)
  for video_id, stored in maps.items():
    frames = _decoded(release, video_id)
    scores = model.predict(tf.image.resize(tf.cast(frames, tf.float32), (64, 64)).numpy(),
                           verbose=0)
    np.testing.assert_array_equal(stored, _nearest(np.argmax(scores, -1) + 1, 24, 32))
  record = builder.info.metadata["preparation"]["object_maps"]
  assert record["adapter"] == "keras_hub" and "config.json" in record["file_bytes"]
  # Another model in the same preset directory makes the prepared data stale.
  _tiny_segformer(150, image_size=128).save_to_preset(str(tmp_path / "preset"))
  with pytest.raises(ValueError, match="object maps: prepared with"):
    prepare.prepare("charades/synthetic", release, str(tmp_path / "data"), segmenter=spec)
