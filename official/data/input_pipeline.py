"""tf.data input pipelines over the prepared Charades / Toyota Smarthome TFDS datasets.

`VideoInput` is the gin boundary of the input side (`VideoInput.*` bindings: which dataset,
clip and views); the runner builds its datasets with `VideoInput.dataset(...)`, passing what
it owns itself (split, batch size, seed, determinism, whether the model takes objects).
Contract (docs/architecture.md, "Input pipeline"): `build_dataset` yields `(features,
labels)` batches with
  features['rgb']      float32 [B, T, S, S, 3], `preprocessing.normalize_frames` applied;
  features['objects']  uint8 [B, T, S, S] object class ids, as stored (the model's
                       object stem one-hot encodes and pools them);
  features['video_id'] string [B], evaluation only (one element per clip x crop view);
  labels               float32 [B, num_classes]: Charades multi-hot (training: union of
                       the segments overlapping the sampled clip; evaluation: the video's
                       labels), Smarthome one-hot.

Only the sampled frames are decoded: frames and object maps are read undecoded
(`tfds.decode.SkipDecoding`), the clip's entries gathered, then decoded. Training RGB is
decoded straight into the crop window (`decode_and_crop_jpeg`). Videos shorter than a clip
loop. Randomness is stateless, seeded per element from (`seed`, element index), so a seeded
pipeline with `deterministic=True` yields the same batches on every run.
"""

import dataclasses
import os
from typing import Optional

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from official import errors
from official.data import preprocessing

@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What trainers and exporters need to know about a prepared dataset.

  Attributes:
    name: TFDS name with config, e.g. 'charades/full'.
    num_classes: label count.
    class_names: human-readable class names in label order.
    split_sizes: {split: number of videos}.
    multi_label: True for Charades (multi-hot labels), False for Smarthome (one-hot).
    has_object_maps: whether object maps were prepared.
    fps: frame rate of the stored frames from the dataset config (None: source rate).
    annotated_videos: {split: [(video_id, [class ids])]}, every annotated video of each
      split in the annotation's order, prepared or not (TFDS metadata `annotations`);
      empty for data prepared before the package recorded it.
  """
  name: str
  num_classes: int
  class_names: tuple
  split_sizes: dict
  multi_label: bool
  has_object_maps: bool
  fps: Optional[float]
  annotated_videos: dict = dataclasses.field(default_factory=dict)


def load_builder(name, data_dir=None):
  """The TFDS builder of a prepared dataset ('charades', 'toyota_smarthome/cs', ...)."""
  import data_prep  # pylint: disable=g-import-not-at-top,unused-import  (registers builders)
  return tfds.builder(name, data_dir=data_dir)


class DataNotPreparedError(FileNotFoundError):
  """The dataset is not prepared where the configuration says; the message gives the
  `python -m data_prep.prepare` command that prepares it."""


def check_prepared(name, data_dir=None):
  """Checks, before anything is built, that dataset `name` is prepared under `data_dir`.

  The prepared datasets are manual TFDS datasets: TFDS's own advice to call
  `download_and_prepare()` does not apply, `data_prep.prepare` does.

  Args:
    name: TFDS name, e.g. 'charades/full'.
    data_dir: TFDS data_dir (None: TFDS's default, ~/tensorflow_datasets).

  Raises:
    DataNotPreparedError: the directory does not exist or holds no prepared `name`.
  """
  builder = load_builder(name, data_dir)
  where = data_dir or os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
  command = (f"python -m data_prep.prepare --dataset={name} --manual_dir=<the unpacked "
             f"release> --data_dir={where} (see the README, \"Data\"), or set "
             "VideoInput.data_dir to where it was prepared")
  if not tf.io.gfile.isdir(where):
    raise DataNotPreparedError(f"data_dir {where} does not exist, so dataset {name} cannot "
                               f"be read. Prepare it with: {command}.")
  if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    raise DataNotPreparedError(f"data_dir {where} holds no prepared {name} (no "
                               f"{builder.data_dir}/dataset_info.json). Prepare it with: "
                               f"{command}.")


def _label_feature(builder):
  features = builder.info.features
  if "segments" in features:
    return features["labels"].feature
  return features["label"]


def dataset_info(name, data_dir=None):
  """Returns the `DatasetInfo` of the prepared dataset `name` under `data_dir`."""
  builder = load_builder(name, data_dir)
  label = _label_feature(builder)
  metadata = builder.info.metadata or {}
  class_names = tuple(metadata.get("class_names") or label.names)
  return DatasetInfo(
      name=builder.info.full_name.rsplit("/", 1)[0],
      num_classes=label.num_classes,
      class_names=class_names,
      split_sizes={k: v.num_examples for k, v in builder.info.splits.items()},
      multi_label="segments" in builder.info.features,
      has_object_maps=metadata.get("object_maps", "none") != "none",
      fps=getattr(builder.builder_config, "fps", None),
      annotated_videos={split: [(vid, list(labels)) for vid, labels in videos]
                        for split, videos in metadata.get("annotations", {}).items()},
  )


# ---------------------------------------------------------------------------------------
# Clip sampling and labels.


def clip_span(num_frames, frame_stride):
  """Stored frames a clip covers from its first to its last sampled frame."""
  return (num_frames - 1) * frame_stride + 1


def train_clip_indices(video_frames, num_frames, frame_stride, seed):
  """Random clip: `num_frames` indices `frame_stride` apart, looping short videos.

  Args:
    video_frames: int32 scalar, frames in the video (> 0).
    seed: int32/int64 [2] stateless seed.

  Returns:
    int32 [num_frames].
  """
  video_frames = tf.cast(video_frames, tf.int32)
  max_start = tf.maximum(video_frames - clip_span(num_frames, frame_stride), 0)
  start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
  return (start + tf.range(num_frames, dtype=tf.int32) * frame_stride) % video_frames


def eval_clip_indices(video_frames, num_frames, frame_stride, num_clips):
  """`num_clips` clips with evenly spaced starts covering the video -> int32 [num_clips, T]."""
  video_frames = tf.cast(video_frames, tf.int32)
  max_start = tf.maximum(video_frames - clip_span(num_frames, frame_stride), 0)
  if num_clips == 1:
    starts = tf.reshape(max_start // 2, [1])
  else:
    starts = tf.cast(tf.round(tf.linspace(0.0, tf.cast(max_start, tf.float32), num_clips)),
                     tf.int32)
  offsets = tf.range(num_frames, dtype=tf.int32) * frame_stride
  return (starts[:, None] + offsets[None, :]) % video_frames


def clip_labels(segment_labels, segment_starts, segment_ends, indices, fps, num_classes):
  """Multi-hot union of the segments that overlap the clip.

  The clip covers [min(indices) / fps, (max(indices) + 1) / fps) seconds: stored frame k
  shows time k / fps. A segment [start, end] overlaps when start < clip_end and
  end > clip_start.

  Returns:
    float32 [num_classes].
  """
  fps = tf.cast(fps, tf.float32)
  clip_start = tf.cast(tf.reduce_min(indices), tf.float32) / fps
  clip_end = tf.cast(tf.reduce_max(indices) + 1, tf.float32) / fps
  overlaps = (segment_starts < clip_end) & (segment_ends > clip_start)
  return multi_hot(tf.boolean_mask(segment_labels, overlaps), num_classes)


def multi_hot(labels, num_classes):
  """int [N] (possibly empty, repeated) -> float32 [num_classes] with ones at `labels`."""
  hot = tf.reduce_sum(tf.one_hot(tf.cast(labels, tf.int32), num_classes), axis=0)
  return tf.minimum(hot, 1.0)


# ---------------------------------------------------------------------------------------
# Decoding and spatial augmentation (identical for RGB and object maps).


def _decode_jpegs(encoded):
  # [T] string -> [T, H, W, 3] uint8
  return tf.map_fn(lambda x: tf.io.decode_jpeg(x, channels=3), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _decode_pngs(encoded):
  # [T] string -> [T, H, W] uint8
  maps = tf.map_fn(lambda x: tf.io.decode_png(x, channels=1), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8))
  return maps[..., 0]


def random_crop_window(height, width, seed, area_range, aspect_ratio_range):
  """Random resized crop window (Inception-style) -> (top, left, crop_h, crop_w) int32."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 1]),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=aspect_ratio_range,
      area_range=area_range,
      max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


def augment_train_clip(encoded_frames, encoded_maps, seed, image_size,
                       area_range=(0.08, 1.0), aspect_ratio_range=(0.5, 2.0),
                       random_flip=True):
  """Decodes a clip into one random resized crop + flip, shared by RGB and object maps.

  Args:
    encoded_frames: string [T], JPEG frames of the clip.
    encoded_maps: string [T] PNG class-id maps of the same frames, or None.
    seed: int [2] stateless seed.
    image_size: output side S.

  Returns:
    (rgb float32 [T, S, S, 3] in [0, 255], maps uint8 [T, S, S] or None).
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.io.extract_jpeg_shape(encoded_frames[0])
  top, left, crop_h, crop_w = random_crop_window(shape[0], shape[1], crop_seed,
                                                 area_range, aspect_ratio_range)
  window = tf.stack([top, left, crop_h, crop_w])
  rgb = tf.map_fn(lambda x: tf.io.decode_and_crop_jpeg(x, window, channels=3),
                  encoded_frames,
                  fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  rgb = tf.image.resize(rgb, [image_size, image_size], method="bilinear", antialias=False)
  maps = None
  if encoded_maps is not None:
    maps = _decode_pngs(encoded_maps)
    # Maps are stored at the frame resolution; crop the same window in relative terms so
    # a map of another size (never produced by data_prep) would still stay aligned.
    map_h, map_w = tf.shape(maps)[1], tf.shape(maps)[2]
    scale_h = tf.cast(map_h, tf.float32) / tf.cast(shape[0], tf.float32)
    scale_w = tf.cast(map_w, tf.float32) / tf.cast(shape[1], tf.float32)
    m_top = tf.cast(tf.round(tf.cast(top, tf.float32) * scale_h), tf.int32)
    m_left = tf.cast(tf.round(tf.cast(left, tf.float32) * scale_w), tf.int32)
    m_h = tf.maximum(1, tf.cast(tf.round(tf.cast(crop_h, tf.float32) * scale_h), tf.int32))
    m_w = tf.maximum(1, tf.cast(tf.round(tf.cast(crop_w, tf.float32) * scale_w), tf.int32))
    maps = nearest_resize(maps[:, m_top:m_top + m_h, m_left:m_left + m_w], image_size)
  if random_flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    rgb = tf.cond(flip, lambda: tf.reverse(rgb, axis=[2]), lambda: rgb)
    if maps is not None:
      maps = tf.cond(flip, lambda: tf.reverse(maps, axis=[2]), lambda: maps)
  return rgb, maps


def nearest_resize(maps, image_size):
  """Nearest-neighbour resize of uint8 maps [T, h, w] -> [T, S, S] by two gathers.

  Samples at pixel centres like `tf.image.resize(..., 'nearest')` (half-pixel centres,
  the convention of the bilinear RGB resize), at a fraction of its cost.
  """
  def centres(length):
    scale = tf.cast(length, tf.float32) / image_size
    index = tf.floor((tf.range(image_size, dtype=tf.float32) + 0.5) * scale)
    return tf.minimum(tf.cast(index, tf.int32), length - 1)
  rows = centres(tf.shape(maps)[1])
  cols = centres(tf.shape(maps)[2])
  return tf.gather(tf.gather(maps, rows, axis=1), cols, axis=2)


def short_side_resize(images, image_size, method):
  """Resizes `[N, H, W, C]` so the short side is `image_size` (shared with serving)."""
  # [N, H, W, C] -> [N, H', W', C] with min(H', W') = image_size
  shape = tf.cast(tf.shape(images)[1:3], tf.float32)
  scale = image_size / tf.reduce_min(shape)
  new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), image_size)
  return tf.image.resize(images, new_size, method=method)


def _crop_offsets(length, image_size, num_crops):
  # Evenly spaced along one axis: 1 crop = centre, 3 = start / centre / end.
  if num_crops == 1:
    return tf.reshape((length - image_size) // 2, [1])
  return tf.cast(tf.round(tf.linspace(0.0, tf.cast(length - image_size, tf.float32),
                                      num_crops)), tf.int32)


def eval_views(images, image_size, num_crops):
  """Resizes the short side to S, then takes `num_crops` S x S crops along the long side.

  Args:
    images: [N, H, W, C] (all frames of all clips of one video).

  Returns:
    [num_crops, N, S, S, C].
  """
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  long_is_width = width >= height
  long_side = tf.maximum(height, width)
  offsets = _crop_offsets(long_side, image_size, num_crops)
  views = []
  for k in range(num_crops):
    top = tf.where(long_is_width, (height - image_size) // 2, offsets[k])
    left = tf.where(long_is_width, offsets[k], (width - image_size) // 2)
    views.append(images[:, top:top + image_size, left:left + image_size])
  return tf.stack(views)


# ---------------------------------------------------------------------------------------
# The pipeline.


# Epochs of a repeating training stream (as good as endless: 2**62 epochs).
_NO_END = 2**62


def shuffle_epoch(clips, window, epoch_seed):
  """Shuffles one epoch's clips within windows of `window` clips, statelessly.

  A function of `epoch_seed` alone (int64 [2], e.g. (seed, epoch)), so epoch e is shuffled
  the same in every process: the property that lets a resumed run continue the order
  (`tf.data.Dataset.shuffle` keeps its state in the iterator). The window boundaries move by
  a random offset each epoch, so the clips that share a window change from epoch to epoch.

  Args:
    clips: finite dataset of fixed-shape elements.
    window: clips shuffled together (`build_dataset.shuffle_buffer`).
    epoch_seed: int64 [2] stateless seed.
  """
  if window < 2:
    return clips
  offset = tf.random.stateless_uniform([], epoch_seed, 0, window, dtype=tf.int64)

  def permute(index, batch):
    # [n, ...] -> [n, ...] in an order drawn from (epoch_seed, window index)
    window_seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
    n = tf.shape(tf.nest.flatten(batch)[0])[0]
    order = tf.argsort(tf.random.stateless_uniform([n], window_seed))
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda t: tf.gather(t, order), batch))

  windows = clips.take(offset).batch(window).concatenate(clips.skip(offset).batch(window))
  return windows.enumerate().flat_map(permute)


# Folded into (seed, epoch) for the epoch's file order; `shuffle_epoch` folds in window
# indices from 0 up, so the streams do not meet.
_FILE_ORDER_STREAM = 2**40


def epoch_examples(builder, split, decoders, epoch_seed, cycle_length=4,
                   num_parallel_calls=tf.data.AUTOTUNE):
  """One epoch of `split`'s examples, its files read in an order drawn from `epoch_seed`.

  TFDS shuffles a split's files once per seed, or again for each pass over its dataset
  (`shuffle_reshuffle_each_iteration`), which makes pass e's order depend on how many passes
  this process has made: a resumed run would repeat epoch 0's order. Here the order of
  epoch e is a function of (seed, e) alone, so epochs differ and a resumed run continues
  the same sequence. The files (TFDS's file instructions, slices such as 'train[:90%]'
  included) are read `cycle_length` at a time, one record from each in turn, and parsed
  with TFDS's own deserializer.

  Args:
    builder: the prepared dataset's TFDS builder (TFRecord files, as `data_prep` writes).
    split: split name, TFDS slicing allowed.
    decoders: TFDS decoders for `deserialize_example`.
    epoch_seed: int64 [2] stateless seed, e.g. (seed, epoch).
    cycle_length: files read at a time.
    num_parallel_calls: parallelism of the parsing.

  Returns:
    A finite `tf.data.Dataset` of the split's examples, in a fixed order for the seed.

  Raises:
    ValueError: the data are not TFRecord files.
  """
  file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
  if file_format != "tfrecord":
    raise ValueError(f"{builder.data_path} holds {file_format} files; training reads the "
                     "TFRecord files that `python -m data_prep.prepare` writes. Prepare the "
                     "dataset with it.")
  instructions = builder.info.splits[split].file_instructions
  files = tf.constant([os.fspath(i.filename) for i in instructions])
  skips = tf.constant([i.skip for i in instructions], tf.int64)
  takes = tf.constant([i.take for i in instructions], tf.int64)
  file_seed = tf.random.experimental.stateless_fold_in(epoch_seed, _FILE_ORDER_STREAM)
  order = tf.argsort(tf.random.stateless_uniform([len(instructions)], file_seed))
  records = tf.data.Dataset.from_tensor_slices(
      (tf.gather(files, order), tf.gather(skips, order), tf.gather(takes, order)))
  records = records.interleave(
      lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take),
      cycle_length=cycle_length, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  features = builder.info.features
  return records.map(lambda record: features.deserialize_example(record, decoders=decoders),
                     num_parallel_calls=num_parallel_calls, deterministic=True)


def _video_labels(example, num_classes, multi_label):
  if multi_label:
    return multi_hot(example["labels"], num_classes)
  return tf.one_hot(tf.cast(example["label"], tf.int32), num_classes)


def build_dataset(dataset_name=gin.REQUIRED,
                  split="train",
                  data_dir=None,
                  is_training=True,
                  batch_size=8,
                  num_frames=32,
                  frame_stride=1,
                  image_size=224,
                  use_objects=False,
                  num_clips=10,
                  num_crops=3,
                  area_range=(0.08, 1.0),
                  aspect_ratio_range=(0.5, 2.0),
                  random_flip=True,
                  shuffle_buffer=64,
                  repeat=None,
                  deterministic=False,
                  seed=None,
                  num_parallel_calls=tf.data.AUTOTUNE,
                  private_threadpool_size=0,
                  drop_remainder=None,
                  start_batch=0):
  """Builds the training or evaluation `tf.data.Dataset` of `(features, labels)` batches.

  The training order is a function of (`seed`, epoch): epoch e reads the split's files in
  an order drawn from (`seed`, e) (`epoch_examples`), samples clip k of the stream with the
  stateless seed (`seed`, k) and shuffles within windows of `shuffle_buffer` clips drawn
  from (`seed`, e) (`shuffle_epoch`). `start_batch` starts that order at a later
  batch without producing the earlier ones: whole epochs are never read, and within the
  starting epoch the skipped clips are only read and selected, not decoded or augmented. So
  a resumed run sees exactly the batches an uninterrupted one would (with
  `deterministic=True`), at a cost bounded by one epoch of reading, whatever the step.

  Args:
    dataset_name: TFDS name: 'charades' (= 'charades/full'), 'charades/synthetic',
      'toyota_smarthome/cs', 'toyota_smarthome/cv1', 'toyota_smarthome/cv2'.
    split: 'train', 'test' (Charades) or 'train' / 'validation' / 'test' (Smarthome); TFDS
      slicing such as 'train[:90%]' works.
    data_dir: TFDS data_dir the dataset was prepared into.
    is_training: random clips and crops, shuffling, repetition (training) or the fixed
      `num_clips` x `num_crops` views per video tagged with `video_id` (evaluation).
    batch_size: clips (training) or views (evaluation) per batch.
    num_frames: T, frames per clip.
    frame_stride: stored frames between consecutive clip frames.
    image_size: S, output side.
    use_objects: add features['objects'], uint8 class ids [B, T, S, S], from the stored
      object maps (nearest-neighbour resized and cropped with the frames).
    num_clips, num_crops: evaluation views per video (clips evenly spaced in time; crops
      evenly spaced along the long side after resizing the short side to S).
    area_range, aspect_ratio_range: random resized crop (training).
    random_flip: random horizontal flip (training).
    shuffle_buffer: training shuffle window, in clips (`shuffle_epoch`). Records of one
      file otherwise keep their order, so for a split of one file (a small dataset) this
      window is all the mixing within an epoch: make it a good part of the split there.
    repeat: repeat forever; defaults to `is_training`.
    deterministic: fixed element order (with `seed`, identical batches across runs).
    seed: seed of file shuffling, element shuffling and augmentation; None = random.
    num_parallel_calls: parallelism of the decoding map.
    private_threadpool_size: >0 gives the pipeline its own thread pool of that size
      (benchmarks use it to measure throughput per core).
    drop_remainder: drop a last partial batch; defaults to `is_training`.
    start_batch: training only: the first batch to yield (batches already trained on);
      not a gin parameter, the trainer sets it on resume.

  Returns:
    A `tf.data.Dataset` of `(features, labels)`.

  Raises:
    errors.ConfigError: an argument of the wrong type or range, naming `build_dataset.<arg>`.
    ValueError: object maps requested but not prepared; `start_batch` in evaluation.
  """
  for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride),
                      ("image_size", image_size), ("batch_size", batch_size),
                      ("shuffle_buffer", shuffle_buffer)):
    errors.check_int(f"build_dataset.{name}", value)
  if not is_training:
    errors.check_int("build_dataset.num_clips", num_clips)
    errors.check_int("build_dataset.num_crops", num_crops)
    if start_batch:
      raise ValueError(f"start_batch is for training only. Received: {start_batch}")
  errors.check_int("start_batch", start_batch, minimum=0)
  builder = load_builder(dataset_name, data_dir)
  info = dataset_info(dataset_name, data_dir)
  if use_objects and not info.has_object_maps:
    raise ValueError(f"{info.name} in {builder.data_dir} was prepared without object maps; "
                     "rerun data_prep.prepare with --segmenter or --object_maps_dir.")
  repeat = is_training if repeat is None else repeat
  drop_remainder = is_training if drop_remainder is None else drop_remainder
  if seed is None:
    seed = int(np.random.SeedSequence().entropy % (2**31))
  num_classes, multi_label = info.num_classes, info.multi_label

  decoders = {"frames": tfds.decode.SkipDecoding(),
              "object_maps": tfds.decode.SkipDecoding()}
  num_examples = builder.info.splits[split].num_examples
  if is_training and num_examples < 1:
    raise ValueError(f"Split {split!r} of {info.name} in {builder.data_dir} is empty.")

  def select(index, example):
    # Cheap stage: pick the clip's undecoded frames so the shuffle buffer holds T frames,
    # not whole videos.
    element_seed = tf.stack([tf.constant(seed, tf.int64), index])
    video_frames = tf.shape(example["frames"])[0]
    if is_training:
      indices = train_clip_indices(video_frames, num_frames, frame_stride, element_seed)
      if multi_label:
        segments = example["segments"]
        labels = clip_labels(segments["label"], segments["start"], segments["end"],
                             indices, example["fps"], num_classes)
      else:
        labels = _video_labels(example, num_classes, multi_label)
    else:
      # [num_clips, T] -> [num_clips * T]
      indices = tf.reshape(eval_clip_indices(video_frames, num_frames, frame_stride,
                                             num_clips), [-1])
      labels = _video_labels(example, num_classes, multi_label)
    out = {"frames": tf.gather(example["frames"], indices), "labels": labels,
           "seed": element_seed, "video_id": example["video_id"]}
    if use_objects:
      tf.debugging.assert_equal(tf.shape(example["object_maps"])[0], video_frames,
                                message="object maps must match frames one to one")
      out["maps"] = tf.gather(example["object_maps"], indices)
    return out

  def decode_train(element):
    rgb, maps = augment_train_clip(
        element["frames"], element.get("maps"), element["seed"], image_size, area_range,
        aspect_ratio_range, random_flip)
    features = {"rgb": preprocessing.normalize_frames(rgb)}
    if maps is not None:
      features["objects"] = maps
    return features, element["labels"]

  def decode_eval(element):
    views = num_clips * num_crops
    rgb = short_side_resize(_decode_jpegs(element["frames"]), image_size, "bilinear")
    # [crops, clips*T, S, S, 3] -> [crops, clips, T, S, S, 3] -> [clips*crops, T, S, S, 3]
    rgb = tf.reshape(eval_views(rgb, image_size, num_crops),
                     [num_crops, num_clips, num_frames, image_size, image_size, 3])
    rgb = tf.reshape(tf.transpose(rgb, [1, 0, 2, 3, 4, 5]),
                     [views, num_frames, image_size, image_size, 3])
    features = {"rgb": preprocessing.normalize_frames(rgb),
                "video_id": tf.fill([views], element["video_id"])}
    if "maps" in element:
      maps = _decode_pngs(element["maps"])[..., None]
      maps = short_side_resize(maps, image_size, "nearest")
      maps = tf.reshape(eval_views(maps, image_size, num_crops),
                        [num_crops, num_clips, num_frames, image_size, image_size])
      features["objects"] = tf.reshape(tf.transpose(maps, [1, 0, 2, 3, 4]),
                                       [views, num_frames, image_size, image_size])
    labels = tf.tile(element["labels"][None], [views, 1])
    return features, labels

  if is_training:
    first_epoch, offset = divmod(start_batch * batch_size, num_examples)

    def epoch_clips(epoch):
      epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
      examples = epoch_examples(builder, split, decoders, epoch_seed,
                                num_parallel_calls=num_parallel_calls)
      # Clip k = epoch * num_examples + j of the stream: its seed depends on k alone.
      clips = examples.enumerate().map(lambda j, example: (epoch * num_examples + j, example))
      # Always in order, whatever `deterministic`: the epoch's stream is read more than
      # once (`shuffle_epoch`'s first window, the resume skip below), and two unordered
      # reads disagree on which clips come first: some would be repeated, others dropped.
      # Selection only slices undecoded frames; the decoding map below may reorder.
      clips = clips.map(select, num_parallel_calls=num_parallel_calls, deterministic=True)
      return shuffle_epoch(clips, shuffle_buffer, epoch_seed)

    ds = tf.data.Dataset.range(first_epoch, _NO_END if repeat else 1).flat_map(epoch_clips)
    # The batches already trained on end here, before decoding (see the docstring).
    ds = ds.skip(offset)
    ds = ds.map(decode_train, num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
  else:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(try_autocache=False,
                                                        interleave_cycle_length=1))
    ds = ds.enumerate()
    ds = ds.map(select, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.map(decode_eval, num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
    ds = ds.unbatch()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  # `deterministic` is set on the maps it may reorder, not as the pipeline's option: that
  # option would also let the stages that must stay in order (above) reorder.
  options = tf.data.Options()
  if private_threadpool_size:
    options.threading.private_threadpool_size = private_threadpool_size
  return ds.with_options(options)



# build_dataset's arguments that the runner sets from the experiment (see `VideoInput`).
RUNNER_ARGUMENTS = {
    "split": "Experiment.train_split / eval_split / final_eval_split; bind those",
    "is_training": "the mode (training or evaluation); nothing to bind",
    "batch_size": "Experiment.train_batch_size / Experiment.eval_batch_size; bind those",
    "seed": "the --seed flag; pass that",
    "deterministic": "Experiment.deterministic; bind that",
    "use_objects": ("the model: objects are read when its structure has an object stem; "
                    "nothing to bind"),
    "start_batch": "the resumed step; nothing to bind",
    "repeat": "the mode (training repeats, evaluation does not); nothing to bind",
    "drop_remainder": "the mode (training drops a last partial batch); nothing to bind",
}


@gin.configurable
class VideoInput:
  """The input side of an experiment: which prepared dataset, which clips, which views.

  The gin boundary of the data (`VideoInput.dataset_name = 'charades'`, ...). Its settings
  are `build_dataset`'s, less the ones the runner sets from the experiment
  (`RUNNER_ARGUMENTS`: split, batch size, seed, determinism, objects, resume), which are no
  parameters here, so binding one is an error at parse time instead of a value the runner
  silently overrides. The runner reads the settings from this object, never from gin.

  Args:
    dataset_name: TFDS name ('charades', 'charades/synthetic', 'toyota_smarthome/cs', ...).
    data_dir: TFDS data_dir the dataset was prepared into (None: TFDS' default, or the one
      a self-contained experiment's `prepare_data_fn` returns).
    num_frames, frame_stride, image_size, num_clips, num_crops, area_range,
    aspect_ratio_range, random_flip, shuffle_buffer, num_parallel_calls,
    private_threadpool_size: see `build_dataset`.

  Raises:
    errors.ConfigError: a value of the wrong type or range, naming `VideoInput.<arg>`.
  """

  def __init__(self, dataset_name=gin.REQUIRED, data_dir=None, num_frames=32,
               frame_stride=1, image_size=224, num_clips=10, num_crops=3,
               area_range=(0.08, 1.0), aspect_ratio_range=(0.5, 2.0), random_flip=True,
               shuffle_buffer=64, num_parallel_calls=tf.data.AUTOTUNE,
               private_threadpool_size=0):
    if not isinstance(dataset_name, str) or not dataset_name:
      raise errors.ConfigError(
          f"VideoInput.dataset_name must be a TFDS name such as 'charades'. Received: "
          f"{dataset_name!r}")
    if data_dir is not None and not isinstance(data_dir, str):
      raise errors.ConfigError(
          f"VideoInput.data_dir must be a path (a string) or None. Received: {data_dir!r}")
    for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride),
                        ("image_size", image_size), ("num_clips", num_clips),
                        ("num_crops", num_crops), ("shuffle_buffer", shuffle_buffer)):
      errors.check_int(f"VideoInput.{name}", value)
    self.dataset_name = dataset_name
    self.data_dir = data_dir
    self.num_frames = num_frames
    self.frame_stride = frame_stride
    self.image_size = image_size
    self.num_clips = num_clips
    self.num_crops = num_crops
    self.area_range = tuple(area_range)
    self.aspect_ratio_range = tuple(aspect_ratio_range)
    self.random_flip = random_flip
    self.shuffle_buffer = shuffle_buffer
    self.num_parallel_calls = num_parallel_calls
    self.private_threadpool_size = private_threadpool_size

  @property
  def views_per_video(self):
    """Evaluation views of each video: `num_clips * num_crops`."""
    return self.num_clips * self.num_crops

  def resolve_data_dir(self, data_dir=None):
    """`data_dir` when given (a self-contained experiment's), else `VideoInput.data_dir`."""
    return self.data_dir if data_dir is None else data_dir

  def info(self, data_dir=None):
    """`DatasetInfo` of the prepared dataset."""
    return dataset_info(self.dataset_name, self.resolve_data_dir(data_dir))

  def check_prepared(self, data_dir=None):
    """Raises `DataNotPreparedError` (naming the preparation command) when the dataset is
    not prepared."""
    check_prepared(self.dataset_name, self.resolve_data_dir(data_dir))

  def dataset(self, split, is_training, batch_size, use_objects, seed, deterministic,
              start_batch=0, data_dir=None):
    """`build_dataset` with these settings and the runner's arguments."""
    return build_dataset(
        dataset_name=self.dataset_name, split=split,
        data_dir=self.resolve_data_dir(data_dir), is_training=is_training,
        batch_size=batch_size, num_frames=self.num_frames, frame_stride=self.frame_stride,
        image_size=self.image_size, use_objects=use_objects, num_clips=self.num_clips,
        num_crops=self.num_crops, area_range=self.area_range,
        aspect_ratio_range=self.aspect_ratio_range, random_flip=self.random_flip,
        shuffle_buffer=self.shuffle_buffer, deterministic=deterministic, seed=seed,
        num_parallel_calls=self.num_parallel_calls,
        private_threadpool_size=self.private_threadpool_size, start_batch=start_batch)
