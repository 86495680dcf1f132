"""What evaluations have been done: one metrics file per evaluated step, TensorBoard scalars,
and progress with an ETA while an evaluation runs.

`eval/metrics.json` (`writers.write_evaluation`) holds the latest evaluation;
`eval/history/metrics-<step>.json` keeps every one. A history record is written last, after
the metrics, the submission file and `best/`, so it marks an evaluation as complete: a run
resumed after a kill re-runs any due evaluation that has no record (`Trainer.train`).
"""

import json
import math
import os
import re
import time

from absl import logging
import tensorflow as tf

from official.evaluation import writers

HISTORY_DIR = "history"
SCALARS = ("map", "mean_class_accuracy", "top1")
_RECORD_RE = re.compile(r"^metrics-(\d+)\.json$")


def record_path(eval_dir, step):
  """`eval_dir/history/metrics-<step>.json`."""
  return os.path.join(eval_dir, HISTORY_DIR, f"metrics-{int(step)}.json")


def write_record(eval_dir, record, step, checkpoint=None):
  """Writes the history record of the evaluation at `step` (atomically) and returns its path.

  Args:
    eval_dir: the evaluation directory (`MODEL_DIR/eval`).
    record: the metrics dict `write_evaluation` returned (JSON-serialisable).
    step: the evaluated training step.
    checkpoint: the evaluated checkpoint's path, recorded beside the metrics.
  """
  tf.io.gfile.makedirs(os.path.join(eval_dir, HISTORY_DIR))
  record = dict(record, step=int(step))
  if checkpoint is not None:
    record["checkpoint"] = checkpoint
  path = record_path(eval_dir, step)
  writers.write_json(path, record)
  return path


def evaluated_steps(eval_dir):
  """Sorted steps with a history record in `eval_dir`."""
  directory = os.path.join(eval_dir, HISTORY_DIR)
  if not tf.io.gfile.isdir(directory):
    return []
  return sorted(int(m.group(1)) for m in map(_RECORD_RE.match, tf.io.gfile.listdir(directory))
                if m)


def read_records(eval_dir):
  """`{step: record}` of every readable history record in `eval_dir`; an unreadable one (cut
  by a crash or a full disk) is left out with a warning."""
  records = {}
  for step in evaluated_steps(eval_dir):
    path = record_path(eval_dir, step)
    try:
      with tf.io.gfile.GFile(path) as f:
        record = json.load(f)
    except (ValueError, tf.errors.OpError) as e:
      logging.warning("Evaluation record %s is unreadable (%s); left out.", path, e)
      continue
    if isinstance(record, dict):
      records[step] = record
  former = sorted(step for step, record in records.items()
                  if writers.former_map_definition(record))
  if former:
    logging.warning(
        "%s: the evaluation(s) of step(s) %s computed mAP with the former definition, which "
        "counted a test video without actions as a negative in every class; newer ones "
        "rank such videos last, as the official Charades scorer does, which gives the same "
        "scores an equal or higher mAP. Best-checkpoint keeping and the final evaluation "
        "compare values of both: re-evaluate those checkpoints (--mode=eval "
        "--checkpoint=...) or start the run afresh to compare on one definition.",
        eval_dir, ", ".join(map(str, former)))
  return records


def write_scalars(writer, record, step):
  """The headline metrics of `record` as TensorBoard scalars at `step` (`writer`: a
  `tf.summary` writer)."""
  with writer.as_default():
    for name in SCALARS:
      if isinstance(record.get(name), float) and math.isfinite(record[name]):
        tf.summary.scalar(name, tf.constant(record[name], tf.float32), step=int(step))
  writer.flush()


class Progress:
  """Logs views (and videos) done, the rate and an ETA while an evaluation runs.

  Call with the number of views scored so far after each batch; logs at most every
  `every_seconds` (and at the end, `done()`).

  Args:
    total_views: views the evaluation will score (None: unknown, no ETA).
    views_per_video: views of one video, to report videos too (None: views only).
    every_seconds: seconds between log lines.
  """

  def __init__(self, total_views=None, views_per_video=None, every_seconds=30.0):
    self.total_views = total_views
    self.views_per_video = views_per_video
    self.every_seconds = every_seconds
    self._start = time.perf_counter()
    self._last_log = self._start
    self.views = 0

  def __call__(self, views):
    self.views = views
    now = time.perf_counter()
    if now - self._last_log >= self.every_seconds:
      self._last_log = now
      logging.info("%s", self.line())

  def line(self):
    """The progress line, e.g. 'Evaluation: 1200/55890 views (40/1863 videos), 21.4
    views/s, ETA 0:43:17'."""
    elapsed = time.perf_counter() - self._start
    rate = self.views / elapsed if elapsed > 0 else float("nan")
    done = f"{self.views}" + (f"/{self.total_views}" if self.total_views else "") + " views"
    if self.views_per_video:
      videos = self.views // self.views_per_video
      total_videos = (f"/{self.total_views // self.views_per_video}" if self.total_views
                      else "")
      done += f" ({videos}{total_videos} videos)"
    eta = "?"
    if self.total_views and rate > 0 and math.isfinite(rate):
      seconds = int(max(self.total_views - self.views, 0) / rate)
      eta = f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"Evaluation: {done}, {rate:.1f} views/s, ETA {eta}"

  def done(self):
    logging.info("%s (done in %.1f s).", self.line(), time.perf_counter() - self._start)
