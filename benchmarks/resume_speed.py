"""Resume cost of the training input pipeline: seconds until the first batch when a run
resumes at step N and at step 2N. Prints one JSON object.

  python -m benchmarks.resume_speed [--steps=150] [--data_dir=D --dataset=charades]

Two ways to continue the data order where the interrupted run stopped:
  - `skip_after_decoding`: what the trainer did before issue 13, `dataset.skip(N)` on the
    finished pipeline: every skipped batch is read, decoded and augmented, so the cost grows
    with N (about N times the cost of one batch).
  - `start_batch`: `build_dataset(start_batch=N)`, the order as a function of (seed, epoch):
    whole epochs are not read at all, and within the starting epoch skipped clips are read
    and selected but never decoded, so the cost is bounded by one epoch of reading,
    whatever N.
Both give the same batches (official/data/input_pipeline_test.py proves it for the second).

Measured (2-core VM shared with other jobs, so +-30%; 24 synthetic videos of 64-96 frames
at 256 x 340, batch 4, 16 x 224 x 224 clips, --threads=2), seconds to the first batch:

  python -m benchmarks.resume_speed --steps=155 --num_frames=16 --threads=2
  step                      0      155 (N)   310 (2N)
  start_batch               0.57   0.56      0.51     (20 and 16 clips skipped undecoded)
  skip_after_decoding       0.58   20.74     23.26
  (--steps=150, epoch-aligned: start_batch 0.33 / 0.34 s, skip 10.49 / 18.95 s at N / 2N)

Without --data_dir it first writes and prepares a synthetic Charades-layout dataset with
full-size frames (256 x 340, as `charades/full` stores them) into --work_dir
(`benchmarks.input_speed.make_synthetic`).
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import input_speed
from official import runtime
from official.data import input_pipeline

_STEPS = flags.DEFINE_integer("steps", 150, "N: the resumed step (also measured: 2N).")
_METHODS = flags.DEFINE_list("methods", ["start_batch", "skip_after_decoding"],
                             "Which ways to resume to time.")
_SEED = 7


def first_batch_seconds(data_dir, method, step):
  """Seconds from building the pipeline to its first batch, resumed at `step`."""
  begin = time.perf_counter()
  kwargs = dict(dataset_name=input_speed._DATASET.value, split="train", data_dir=data_dir,
                batch_size=input_speed._BATCH_SIZE.value,
                num_frames=input_speed._NUM_FRAMES.value,
                image_size=input_speed._IMAGE_SIZE.value, seed=_SEED, deterministic=True,
                private_threadpool_size=input_speed._THREADS.value)
  if method == "start_batch":
    ds = input_pipeline.build_dataset(start_batch=step, **kwargs)
  else:
    ds = input_pipeline.build_dataset(**kwargs).skip(step)
  features, _ = next(iter(ds))
  features["rgb"].numpy()
  return time.perf_counter() - begin


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  runtime.set_thread_counts(input_speed._THREADS.value, input_speed._THREADS.value)
  work_dir = input_speed._WORK_DIR.value or os.path.join(tempfile.gettempdir(),
                                                         "assemblenet_input_speed")
  data_dir = input_speed._DATA_DIR.value or input_speed.make_synthetic(
      work_dir, input_speed._NUM_VIDEOS.value)
  info = input_pipeline.dataset_info(input_speed._DATASET.value, data_dir)
  n = _STEPS.value
  result = {"train_videos": info.split_sizes["train"], "batch_size":
            input_speed._BATCH_SIZE.value, "num_frames": input_speed._NUM_FRAMES.value,
            "image_size": input_speed._IMAGE_SIZE.value,
            "threads": input_speed._THREADS.value, "steps": [0, n, 2 * n]}
  # Clips of the starting epoch skipped before the first batch (read, never decoded): the
  # part of the start_batch cost that varies with the step, bounded by one epoch.
  result["skipped_clips_in_epoch"] = {
      str(step): step * input_speed._BATCH_SIZE.value % result["train_videos"]
      for step in (0, n, 2 * n)}
  first_batch_seconds(data_dir, "start_batch", 0)  # Untimed: first-use costs of TF.
  for method in _METHODS.value:
    result[method] = {str(step): round(first_batch_seconds(data_dir, method, step), 2)
                      for step in (0, n, 2 * n)}
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
