import itertools
import os
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import prepare
from data_prep import synthetic
from official.data import input_pipeline as ip
from official.data import preprocessing

H, W = 32, 48  # Synthetic frame size of the end-to-end fixture.


def test_train_clip_indices_stride_range_and_looping():
  starts = set()
  for s in range(50):
    idx = ip.train_clip_indices(100, 4, 3, tf.constant([s, 7])).numpy()
    np.testing.assert_array_equal(np.diff(idx), [3, 3, 3])
    assert 0 <= idx[0] <= 90
    starts.add(idx[0])
  assert len(starts) > 20
  # Shorter than the clip: start at 0 and loop.
  np.testing.assert_array_equal(ip.train_clip_indices(5, 8, 1, tf.constant([1, 2])),
                                [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(ip.train_clip_indices(5, 3, 2, tf.constant([1, 2])),
                                [0, 2, 4])


def test_eval_clip_indices_evenly_spaced_and_looping():
  np.testing.assert_array_equal(ip.eval_clip_indices(20, 4, 2, 3),
                                [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]])
  np.testing.assert_array_equal(ip.eval_clip_indices(20, 4, 2, 1), [[6, 8, 10, 12]])
  np.testing.assert_array_equal(ip.eval_clip_indices(3, 4, 1, 2),
                                [[0, 1, 2, 0], [0, 1, 2, 0]])


def test_clip_labels_hand_computed():
  # fps 2: frames 4..7 cover [2.0, 4.0) s.
  labels = ip.clip_labels(tf.constant([0, 1, 2, 3, 1]),
                          tf.constant([0.0, 1.0, 3.9, 4.0, 9.0]),
                          tf.constant([2.0, 2.5, 8.0, 5.0, 9.5]),
                          tf.constant([4, 5, 6, 7]), 2.0, 5)
  # [0, 2] touches the clip only at 2.0 (no overlap); [4, 5] starts at its end.
  np.testing.assert_array_equal(labels, [0, 1, 1, 0, 0])


def test_clip_labels_equal_union_of_overlapping_segments():
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(0, 6))
    labels = rng.integers(0, 7, n)
    starts = rng.uniform(0, 10, n).astype(np.float32)
    ends = (starts + rng.uniform(0, 4, n)).astype(np.float32)
    fps = float(rng.choice([6.0, 12.0, 24.0]))
    first, stride = int(rng.integers(0, 100)), int(rng.integers(1, 4))
    indices = first + stride * np.arange(8)
    t0, t1 = first / fps, (indices[-1] + 1) / fps
    expected = np.zeros(7)
    for label, s, e in zip(labels, starts, ends):
      if s < np.float32(t1) and e > np.float32(t0):
        expected[label] = 1
    got = ip.clip_labels(tf.constant(labels, tf.int64), starts, ends, indices, fps, 7)
    np.testing.assert_array_equal(got, expected)


PALETTE = np.array([[20, 20, 20], [230, 30, 30], [30, 220, 40], [40, 40, 230],
                    [230, 230, 40], [200, 200, 200]], np.uint8)


def _block_clip(num_frames=3, height=48, width=64, block=8, seed=0):
  """Frames of uniform 8x8 blocks and the object map made from the frames themselves."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, len(PALETTE), (num_frames, height // block, width // block))
  ids = np.repeat(np.repeat(ids, block, axis=1), block, axis=2).astype(np.uint8)
  frames = PALETTE[ids]
  maps = np.argmin(  # Segment each pixel to its nearest palette colour.
      ((frames[..., None, :].astype(int) - PALETTE.astype(int)) ** 2).sum(-1), axis=-1)
  # 4:4:4 chroma keeps the saturated block colours within a few levels through JPEG.
  encoded = tf.stack([tf.io.encode_jpeg(f, quality=100, chroma_downsampling=False)
                      for f in frames])
  encoded_maps = tf.stack([tf.io.encode_png(m[..., None].astype(np.uint8)) for m in maps])
  return encoded, encoded_maps


def _segment(rgb):
  # Each pixel to its nearest palette colour: the object map the RGB itself implies.
  return np.argmin(((rgb[..., None, :] - PALETTE.astype(float)) ** 2).sum(-1), axis=-1)


def _interior(maps):
  # Pixels whose 3x3 neighbourhood in the map holds one id (away from block edges).
  padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
  same = np.ones(maps.shape, bool)
  for dy, dx in itertools.product(range(3), range(3)):
    same &= padded[:, dy:dy + maps.shape[1], dx:dx + maps.shape[2]] == maps
  return same


def test_augmentation_keeps_rgb_and_object_maps_aligned():
  # Bilinear RGB and nearest-neighbour maps differ only where blocks meet, so the RGB's
  # own segmentation equals the augmented map almost everywhere, and exactly away from
  # block edges; misaligned maps fail both (next test).
  encoded, encoded_maps = _block_clip()
  flips = set()
  for s in range(12):
    seed = tf.constant([s, 1], tf.int64)
    rgb, maps = ip.augment_train_clip(encoded, encoded_maps, seed, 40)
    rgb, maps = rgb.numpy(), maps.numpy()
    assert rgb.shape == (3, 40, 40, 3) and maps.shape == (3, 40, 40)
    segmented = _segment(rgb)
    assert (segmented == maps).mean() > 0.97
    interior = _interior(maps)
    assert interior.mean() > 0.3
    np.testing.assert_array_equal(segmented[interior], maps[interior])
    # The flip decision is shared: the flipped output mirrors the unflipped one exactly.
    rgb_nf, maps_nf = ip.augment_train_clip(encoded, encoded_maps, seed, 40,
                                            random_flip=False)
    flipped = not np.array_equal(maps, maps_nf.numpy())
    flips.add(flipped)
    if flipped:
      np.testing.assert_array_equal(maps, maps_nf.numpy()[:, :, ::-1])
      np.testing.assert_array_equal(rgb, rgb_nf.numpy()[:, :, ::-1])
  assert flips == {True, False}


def test_misaligned_maps_are_detected_by_the_alignment_check():
  # The check above is sharp: maps off by a flip or by two pixels fail it.
  encoded, encoded_maps = _block_clip()
  rgb, maps = ip.augment_train_clip(encoded, encoded_maps, tf.constant([0, 1], tf.int64), 40,
                                    random_flip=False)
  segmented, maps = _segment(rgb.numpy()), maps.numpy()
  for wrong in (maps[:, :, ::-1], np.roll(maps, 2, axis=2)):
    assert (segmented == wrong).mean() < 0.9
    interior = _interior(wrong)
    assert (segmented[interior] != wrong[interior]).mean() > 0.1


def test_augmentation_same_eagerly_and_in_dataset_map():
  encoded, encoded_maps = _block_clip()
  seed = tf.constant([5, 9], tf.int64)
  eager = ip.augment_train_clip(encoded, encoded_maps, seed, 24)
  mapped = next(iter(tf.data.Dataset.from_tensors((encoded, encoded_maps, seed)).map(
      lambda f, m, s: ip.augment_train_clip(f, m, s, 24))))
  for a, b in zip(eager, mapped):
    np.testing.assert_array_equal(a, b)


def test_nearest_resize_equals_tf_image_resize_nearest():
  maps = tf.constant(np.random.default_rng(0).integers(0, 151, (2, 19, 29)), tf.uint8)
  for size in (7, 19, 40):
    expected = tf.image.resize(maps[..., None], [size, size], method="nearest")[..., 0]
    np.testing.assert_array_equal(ip.nearest_resize(maps, size), expected)


def test_eval_views_crop_along_the_long_side():
  # Pixel value = its column (wide image) or row (tall image).
  wide = tf.broadcast_to(tf.range(10)[None, None, :, None], [1, 4, 10, 1])
  views = ip.eval_views(wide, 4, 3).numpy()
  np.testing.assert_array_equal(views[:, 0, 0, :, 0], [[0, 1, 2, 3], [3, 4, 5, 6],
                                                       [6, 7, 8, 9]])
  tall = tf.broadcast_to(tf.range(8)[None, :, None, None], [1, 8, 4, 1])
  views = ip.eval_views(tall, 4, 1).numpy()
  np.testing.assert_array_equal(views[0, 0, :, 0, 0], [2, 3, 4, 5])


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
  release = str(tmp_path_factory.mktemp("release"))
  synthetic.generate(release, seed=1, num_train=4, num_test=2, height=H, width=W,
                     min_frames=12, max_frames=20)
  data_dir = str(tmp_path_factory.mktemp("data"))
  prepare.prepare("charades/synthetic", release, data_dir,
                  object_maps_dir=f"{release}/Charades_v1_objects")
  raw = {split: {ex["video_id"].decode(): ex for ex in tfds.as_numpy(
      ip.load_builder("charades/synthetic", data_dir).as_dataset(split=split))}
         for split in ("train", "test")}
  return data_dir, raw


@pytest.mark.slow
def test_dataset_info(synthetic_data):
  info = ip.dataset_info("charades/synthetic", synthetic_data[0])
  assert (info.num_classes, info.class_names) == (12, synthetic.CLASSES)
  assert info.split_sizes == {"train": 4, "test": 2}
  assert info.multi_label and info.has_object_maps


@pytest.mark.slow
def test_eval_views_are_exact_crops_of_the_sampled_frames(synthetic_data):
  data_dir, raw = synthetic_data
  ds = ip.build_dataset("charades/synthetic", "test", data_dir, is_training=False,
                        batch_size=4, num_frames=5, frame_stride=2, image_size=H,
                        use_objects=True, num_clips=2, num_crops=3)
  views = {}
  for features, labels in ds:
    for i, video_id in enumerate(features["video_id"].numpy()):
      views.setdefault(video_id.decode(), []).append(
          (features["rgb"][i].numpy(), features["objects"][i].numpy(), labels[i].numpy()))
  assert sorted(views) == sorted(raw["test"])
  for video_id, got in views.items():
    ex = raw["test"][video_id]
    clips = ip.eval_clip_indices(ex["num_frames"], 5, 2, 2).numpy()
    expected = {}
    for c, k in itertools.product(range(2), range(3)):
      left = [0, 8, 16][k]  # W - H = 16: left, centre and right crops.
      expected[(c, k)] = (
          preprocessing.normalize_frames(ex["frames"][clips[c], :, left:left + H]).numpy(),
          ex["object_maps"][clips[c], :, left:left + H, 0])
    # Views may arrive in any order (parallel, non-deterministic pipeline): match each to
    # the exact crop it must be; together they are every clip x crop exactly once.
    matched = []
    for rgb, objects, labels in got:
      keys = [key for key, (frames, _) in expected.items()
              if np.abs(rgb - frames).max() < 1e-6]
      assert len(keys) == 1
      matched.append(keys[0])
      assert objects.dtype == np.uint8
      np.testing.assert_array_equal(objects, expected[keys[0]][1])
      np.testing.assert_array_equal(labels, np.isin(np.arange(12), ex["labels"]))
    assert sorted(matched) == sorted(expected)


@pytest.mark.slow
def test_train_clips_deterministic_labels_and_object_ids(synthetic_data):
  data_dir, raw = synthetic_data
  args = dict(dataset_name="charades/synthetic", split="train", data_dir=data_dir,
              batch_size=2, num_frames=6, image_size=24, use_objects=True, seed=3,
              deterministic=True, shuffle_buffer=4)
  first = list(ip.build_dataset(**args).take(3))
  second = list(ip.build_dataset(**args).take(3))
  all_labels = np.zeros(12)
  for (f1, l1), (f2, l2) in zip(first, second):
    np.testing.assert_array_equal(f1["rgb"], f2["rgb"])
    np.testing.assert_array_equal(f1["objects"], f2["objects"])
    np.testing.assert_array_equal(l1, l2)
    assert f1["rgb"].shape == (2, 6, 24, 24, 3) and f1["objects"].shape == (2, 6, 24, 24)
    assert -1.0 <= f1["rgb"].numpy().min() and f1["rgb"].numpy().max() <= 1.0
    assert f1["objects"].dtype == tf.uint8
    # Background ids (wall 1 / floor 4) are always in view.
    assert set(np.unique(f1["objects"])) & {1, 4}
    all_labels += l1.numpy().sum(0)
  # Clips that cover the whole (looped) video carry every label of the video.
  whole = ip.build_dataset(**dict(args, num_frames=40, batch_size=4, use_objects=False))
  features, labels = next(iter(whole))
  expected = sorted(tuple(np.isin(np.arange(12), ex["labels"]).astype(float))
                    for ex in raw["train"].values())
  assert sorted(tuple(l) for l in labels.numpy()) == expected
  assert "objects" not in features and "video_id" not in features


@pytest.mark.slow
def test_objects_requested_without_object_maps_is_an_error(tmp_path):
  release = str(tmp_path / "release")
  synthetic.generate(release, seed=2, num_train=1, num_test=1, height=H, width=W,
                     min_frames=8, max_frames=8, write_object_maps=False)
  prepare.prepare("charades/synthetic", release, str(tmp_path / "data"))
  with pytest.raises(ValueError, match="without object maps"):
    ip.build_dataset("charades/synthetic", "train", str(tmp_path / "data"), use_objects=True)


@pytest.mark.slow
def test_data_gin_files_configure_the_video_input(synthetic_data):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  expected = {"data_charades": ("charades", 157), "data_smarthome_cs": (
      "toyota_smarthome/cs", 31), "data_smarthome_cv1": ("toyota_smarthome/cv1", 19),
              "data_smarthome_cv2": ("toyota_smarthome/cv2", 19),
              "data_synthetic": ("charades/synthetic", len(synthetic.CLASSES))}
  cwd = os.getcwd()
  os.chdir(root)  # Gin includes are relative to the repository root.
  try:
    for name, (dataset, num_classes) in expected.items():
      gin.clear_config()
      gin.parse_config_files_and_bindings(
          [f"gin/base/{name}.gin"], [f"VideoInput.data_dir = '{synthetic_data[0]}'"])
      video_input = ip.VideoInput()
      assert video_input.dataset_name == dataset
      assert gin.query_parameter("%NUM_CLASSES") == num_classes
    # The synthetic settings build a working evaluation pipeline: 4 clips x 1 crop.
    features, labels = next(iter(video_input.dataset(
        split="test", is_training=False, batch_size=4, use_objects=False, seed=0,
        deterministic=True)))
    assert features["rgb"].shape == (4, 16, 64, 64, 3) and labels.shape == (4, 12)
    assert len(set(features["video_id"].numpy())) == 1
    assert video_input.info().num_classes == len(synthetic.CLASSES)
  finally:
    gin.clear_config()
    os.chdir(cwd)


def _train_batches(data_dir, count, start_batch=0):
  # 4 training videos, batches of 3: batches straddle epochs.
  ds = ip.build_dataset("charades/synthetic", "train", data_dir, batch_size=3, num_frames=3,
                        image_size=16, seed=5, deterministic=True, shuffle_buffer=2,
                        start_batch=start_batch)
  return [(f["rgb"].numpy(), l.numpy()) for f, l in ds.take(count)]


@pytest.mark.slow
def test_resumed_training_order_equals_the_uninterrupted_one(synthetic_data):
  data_dir, _ = synthetic_data
  uninterrupted = _train_batches(data_dir, 8)
  # Epochs differ (clips, crops and shuffle order come from the epoch), so equality below
  # is not that of a repeated epoch: 12 clips = 3 epochs of the 4 videos.
  assert not np.array_equal(uninterrupted[0][0], uninterrupted[4][0])
  for start in (1, 4, 6):
    resumed = _train_batches(data_dir, 8 - start, start_batch=start)
    for k, ((rgb, labels), (rgb_0, labels_0)) in enumerate(zip(resumed,
                                                               uninterrupted[start:])):
      np.testing.assert_array_equal(rgb, rgb_0, err_msg=f"start {start}, batch {k}")
      np.testing.assert_array_equal(labels, labels_0)


@pytest.mark.slow
def test_resume_cost_does_not_grow_with_the_step(synthetic_data):
  # Skipping happens on epochs (free) and on undecoded clips: starting at batch 10**6 (a
  # million decoded batches the old dataset.skip would produce) costs what batch 0 does.
  import time  # pylint: disable=g-import-not-at-top
  data_dir, _ = synthetic_data
  timings = {}
  for start in (0, 10**6, 2 * 10**6):
    begin = time.perf_counter()
    _train_batches(data_dir, 1, start_batch=start)
    timings[start] = time.perf_counter() - begin
  assert timings[2 * 10**6] < 3 * timings[0] + 2.0, timings


def test_shuffle_epoch_is_a_seeded_permutation_that_moves_clips_between_windows():
  def shuffled(epoch):
    ds = ip.shuffle_epoch(tf.data.Dataset.range(40), 8, tf.constant([3, epoch], tf.int64))
    return [int(x) for x in ds]
  first = shuffled(0)
  assert sorted(first) == list(range(40)) and first != list(range(40))
  assert shuffled(0) == first  # A function of the seed alone.
  second = shuffled(1)
  assert sorted(second) == list(range(40)) and second != first
  # Shuffling stays local (a window of 8 plus the epoch's offset) ...
  assert max(abs(position - value) for position, value in enumerate(first)) < 16
  # ... but the clips that share the first 8 positions differ between epochs.
  assert set(first[:8]) != set(second[:8])


@pytest.fixture(scope="module")
def twenty_four_videos(tmp_path_factory):
  release = str(tmp_path_factory.mktemp("release24"))
  synthetic.generate(release, seed=2, num_train=24, num_test=12, height=16, width=16,
                     min_frames=8, max_frames=10)
  data_dir = str(tmp_path_factory.mktemp("data24"))
  # 12 files of 2 videos, as a large dataset has many files (Charades: dozens).
  tfds.builder("charades/synthetic", data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=release, num_shards=12))
  return data_dir


def _video_stream(monkeypatch, data_dir, delay=0.0, **kwargs):
  """build_dataset's training clips, each made of its video's first frames, uncropped: the
  clip's bytes name the video. `delay`: random waits (s) in the parallel clip selection."""
  rng = np.random.default_rng(0)

  def first_frames(video_frames, num_frames, frame_stride, seed):
    del frame_stride, seed
    if delay:
      wait = lambda n: (time.sleep(rng.random() * delay), n)[1]
      video_frames = tf.py_function(wait, [video_frames], tf.int32)
    return tf.range(num_frames, dtype=tf.int32) % video_frames

  monkeypatch.setattr(ip, "train_clip_indices", first_frames)
  monkeypatch.setattr(ip, "random_crop_window", lambda h, w, *_: (0, 0, h, w))
  options = dict(batch_size=1, num_frames=2, image_size=16, random_flip=False, seed=3)
  options.update(kwargs)
  ds = ip.build_dataset("charades/synthetic", "train", data_dir, **options)
  return (features["rgb"].numpy().tobytes() for features, _ in ds)


@pytest.mark.slow
@pytest.mark.parametrize("start_batch", [0, 5])
def test_unordered_pipeline_still_yields_each_video_once_per_epoch(
    twenty_four_videos, monkeypatch, start_batch):
  # With deterministic=False parallel stages may finish elements out of order. The epoch's
  # clip stream is read more than once (shuffle_epoch's windows, the resume skip), so an
  # unordered stream there repeated some videos and dropped others. Random delays in the
  # clip selection provoke the reordering that uneven videos and busy cores give.
  stream = _video_stream(monkeypatch, twenty_four_videos, delay=0.01, shuffle_buffer=8,
                         deterministic=False, num_parallel_calls=8, start_batch=start_batch)
  clips = list(itertools.islice(stream, 48 - start_batch))
  # Epoch 1 (clips 24-47) is whole whatever the start; epoch 0 from the start batch on.
  distinct = [len(set(clips[24 - start_batch:])), len(set(clips[:24 - start_batch]))]
  assert distinct == [24, 24 - start_batch]


@pytest.mark.slow
def test_each_epoch_reads_the_files_in_another_seeded_order(twenty_four_videos, monkeypatch):
  # The files were read in one order in every epoch (TFDS's seeded order, fixed so that a
  # resumed run continues it); only the window shuffle moved clips, by less than two
  # windows, so each epoch repeated the last one's order and batch-mates.
  stream = _video_stream(monkeypatch, twenty_four_videos, shuffle_buffer=2,
                         deterministic=True)
  clips = list(itertools.islice(stream, 24 * 4))
  epochs = [clips[24 * e:24 * (e + 1)] for e in range(4)]
  assert all(sorted(epoch) == sorted(epochs[0]) for epoch in epochs)
  rank = {clip: k for k, clip in enumerate(epochs[0])}
  for epoch in epochs[1:]:
    correlation = np.corrcoef(np.arange(24), [rank[clip] for clip in epoch])[0, 1]
    assert correlation < 0.7, correlation
  # Still a function of (seed, epoch): the same again, and a resumed run continues it.
  again = _video_stream(monkeypatch, twenty_four_videos, shuffle_buffer=2,
                        deterministic=True, start_batch=30)
  assert list(itertools.islice(again, 66)) == clips[30:]
