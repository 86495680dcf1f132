"""Input pipeline throughput: clips/s of the training and evaluation pipelines, with and
without object maps, per CPU core. Prints one JSON object.

  python -m benchmarks.input_speed [--data_dir=D --dataset=charades] [--threads=1]

Without --data_dir it first writes and prepares a synthetic Charades-layout dataset with
full-size frames (short side 256, as `charades/full` stores them) into --work_dir.
`--threads=N` runs the pipeline and TensorFlow's op pools on N threads, so
`clips_per_s / N` is the throughput per core (run on an otherwise idle machine).

Measured (2-core shared x86 VM, AVX2, --threads=1, batch 4, synthetic 256 x 340 frames of
~9.4 KB JPEG each; natural Charades frames are larger and decode slower), clips/s per core
at 32 x 224 x 224:
  train 18.3 | train + objects, ids 14.6 (12.3 with --threads=2) |
  train + objects, float32 one-hot 1.0 (batch 2: writing 970 MB per clip dominates) |
  eval 10.9 views/s | eval + objects, ids 10.4 views/s.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags

from data_prep import prepare
from data_prep import synthetic
from official import runtime
from official.data import input_pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Prepared TFDS data (else synthetic).")
_DATASET = flags.DEFINE_string("dataset", "charades/synthetic", "TFDS name.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the synthetic data goes.")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 24, "Synthetic videos to generate.")
_THREADS = flags.DEFINE_integer("threads", 1, "Threads for the pipeline and TF ops.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 32, "T.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "S.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Clips per batch.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Timed batches per case.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches per case.")
_CASES = flags.DEFINE_list(
    "cases", ["train", "train_objects", "eval", "eval_objects"],
    "Which pipelines to time.")


def make_synthetic(work_dir, num_videos):
  """Synthetic release at Charades' stored size (256 x 340), prepared with object maps."""
  release = os.path.join(work_dir, "release")
  data_dir = os.path.join(work_dir, "data")
  if not os.path.exists(os.path.join(data_dir, "charades", "synthetic")):
    synthetic.generate(release, seed=0, num_train=num_videos, num_test=max(2, num_videos // 4),
                       height=256, width=340, min_frames=64, max_frames=96)
    prepare.prepare("charades/synthetic", release, data_dir,
                    object_maps_dir=os.path.join(release, "Charades_v1_objects"))
  return data_dir


def time_case(case, data_dir):
  is_training = case.startswith("train")
  use_objects = "objects" in case
  kwargs = dict(
      dataset_name=_DATASET.value, split="train" if is_training else "test",
      data_dir=data_dir, is_training=is_training, batch_size=_BATCH_SIZE.value,
      num_frames=_NUM_FRAMES.value, image_size=_IMAGE_SIZE.value, use_objects=use_objects,
      seed=0,
      private_threadpool_size=_THREADS.value, num_parallel_calls=_THREADS.value)
  if not is_training:
    kwargs["repeat"] = True
    kwargs["drop_remainder"] = True
  dataset = input_pipeline.build_dataset(**kwargs)
  iterator = iter(dataset)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    features, _ = next(iterator)
    _ = features["rgb"].shape  # The batch is materialised on the host.
  seconds = time.perf_counter() - start
  clips_per_s = _BATCHES.value * _BATCH_SIZE.value / seconds
  return {"case": case, "clips_per_s": round(clips_per_s, 2),
          "clips_per_s_per_core": round(clips_per_s / _THREADS.value, 2)}


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  runtime.set_thread_counts(_THREADS.value, _THREADS.value)
  data_dir = _DATA_DIR.value
  if data_dir is None:
    work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="input_speed_")
    data_dir = make_synthetic(work_dir, _NUM_VIDEOS.value)
  results = [time_case(case, data_dir) for case in _CASES.value]
  print(json.dumps({
      "dataset": _DATASET.value, "data_dir": data_dir, "threads": _THREADS.value,
      "cpu_count": os.cpu_count(), "clip": [_NUM_FRAMES.value, _IMAGE_SIZE.value,
                                            _IMAGE_SIZE.value],
      "batch_size": _BATCH_SIZE.value, "results": results}, indent=1))


if __name__ == "__main__":
  app.run(main)
