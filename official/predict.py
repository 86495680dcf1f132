r"""Classifies video files with an exported SavedModel or a trained checkpoint.

  python -m official.predict --saved_model=EXPORT_DIR --video=a.mp4 [--video=b.mp4 ...]
  python -m official.predict --model_dir=DIR [--gin_file=gin/experiments/F.gin] --video=a.mp4
      [--top_k=5] [--timeline [--timeline_step_s=S] [--timeline_csv=T.csv]]
      [--output=results.jsonl] [--object_maps=DIR | --segmenter=SAVEDMODEL]

Each file is decoded as data preparation decodes the experiment's dataset (the package's
decoder: upright, frames picked by time, at the dataset's frame rate and short side; a
dataset that keeps the files' rate or size, `fps`/`short_side` null, is decoded at the
file's average rate, so that timeline seconds are true for variable-rate video, and at the
views' side S when the picture is over twice that: `official/inference/views.py`), cut
into the experiment's evaluation views (`num_clips` x `num_crops`, `official/inference/
views.py`) and scored; a video's score is the max (or mean: `Experiment.view_aggregation`)
of its views' probabilities, as in evaluation. With `--saved_model` the views come from the
export's `assets.extra/view_protocol.json`, and each view goes through `serving_default` as a
TF Serving client would send it. `--fps`, `--num_clips`, `--num_crops`, `--frame_stride`
and `--aggregation` override the protocol.

`--timeline` adds sliding-window scores: one clip (with its crops) starting every
`--timeline_step_s` seconds (default half a clip's span), with its start and end in seconds.

Object models need the object maps of each file: `--object_maps=DIR` holds
`DIR/<name>/<name>-000001.png ...` (one uint8 ADE-20K id map per source frame, `<name>` the
file name without extension: the layout data preparation reads), or `--segmenter` runs an
ADE-20K segmentation SavedModel (the preparation's segmenter contract) on the frames.

With `--model_dir`, class names are `Experiment.class_names` or the prepared dataset's
(a self-contained experiment's: where its training prepared it); no data is ever prepared:
without either, scores are named `class_<i>` (a warning says so). A checkpoint written
with another configuration than the gin files given is an `error:` (exit status 2).

`--output` and `--timeline_csv` are checked before the model loads and opened before the
first video is scored, and written as each video is done. A file that cannot be decoded,
lacks object maps (or has maps of another shape than its frames) or whose segmenter fails
is reported (stderr, and an `error` record in `--output`) and the other files still run;
the exit status is 1 when any file failed, 0 otherwise.
"""

import csv
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from official import gin_flags
from official import runtime

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string("video", [], "Video file to classify (repeatable).")
  flags.DEFINE_string("saved_model", None, "Export directory (MODEL_DIR/export) or one "
                      "version of it.")
  flags.DEFINE_string("model_dir", None, "Training directory; its gin config is --gin_file, "
                      "else the DIR/config.gin training wrote.")
  flags.DEFINE_string("checkpoint", None, "With --model_dir: checkpoint prefix or directory "
                      "(default: the latest).")
  gin_flags.define_gin_flags()
  flags.DEFINE_integer("top_k", 5, "Classes printed per video.")
  flags.DEFINE_string("output", None, "Write one JSON record per video (all scores, top-k, "
                      "timeline, errors) to this .jsonl file.")
  flags.DEFINE_bool("timeline", False, "Add sliding-window scores over time.")
  flags.DEFINE_float("timeline_step_s", None, "Seconds between timeline windows' starts "
                     "(default: half a clip's span).")
  flags.DEFINE_string("timeline_csv", None, "With --timeline: also write the windows as CSV "
                      "(video, start_s, end_s, one column per class).")
  flags.DEFINE_string("object_maps", None, "Object models: folder of per-frame PNG id maps, "
                      "DIR/<name>/<name>-000001.png.")
  flags.DEFINE_string("segmenter", None, "Object models: ADE-20K segmentation SavedModel.")
  flags.DEFINE_integer("batch_size", 8, "Views per model call.")
  flags.DEFINE_float("fps", None, "Override: decode at this frame rate.")
  flags.DEFINE_integer("num_clips", None, "Override: clips per video.")
  flags.DEFINE_integer("num_crops", None, "Override: crops per clip.")
  flags.DEFINE_integer("frame_stride", None, "Override: stored frames between clip frames.")
  flags.DEFINE_enum("aggregation", None, ["max", "mean"], "Override: view aggregation.")


def predict_video(classifier, path, object_maps, top_k, timeline_step_s=None,
                  timeline=False):
  """Classifies one file; returns its JSON record.

  Record: `video`, `duration_s`, `fps` (of the decoded frames), `num_frames`, `views`,
  `aggregation`, `scores` {class name: probability} in class order, `top_k` [{class,
  index, score}] (`ranking`), and with `timeline`: `timeline` [{`start_s`, `end_s`,
  `scores` {class name: probability}, `top_class`}], one per window.

  Raises:
    data_prep.video.VideoReadError: the file cannot be decoded.
    FileNotFoundError, ValueError: missing or invalid object maps.
  """
  from official.inference import views  # pylint: disable=g-import-not-at-top
  protocol = classifier.protocol
  video = views.decode(path, protocol)
  maps = object_maps(path, video)
  num = len(video.frames)
  view_scores, view_logits = classifier.view_outputs(video.frames, maps,
                                                     views.clip_indices(num, protocol))
  scores = views.aggregate(view_scores, protocol.aggregation, protocol.views_per_video)[0]
  logits = views.aggregate(view_logits, protocol.aggregation, protocol.views_per_video)[0]
  order = ranking(scores, logits)[:top_k]
  record = {
      "video": path, "duration_s": video.duration, "fps": video.fps, "num_frames": num,
      "views": protocol.views_per_video, "aggregation": protocol.aggregation,
      "scores": dict(zip(classifier.class_names, scores.tolist())),
      "top_k": [{"class": classifier.class_names[i], "index": int(i),
                 "score": float(scores[i])} for i in order],
  }
  if timeline:
    step = (views.half_clip_step(protocol) if timeline_step_s is None
            else max(1, int(round(timeline_step_s * video.fps))))
    indices = views.timeline_indices(num, protocol, step)
    window_scores, window_logits = (
        views.aggregate(outputs, protocol.aggregation, protocol.num_crops)
        for outputs in classifier.view_outputs(video.frames, maps, indices))
    start_s, end_s = views.clip_seconds(indices, video.fps)
    record["timeline"] = [
        {"start_s": float(a), "end_s": float(b),
         "scores": dict(zip(classifier.class_names, s.tolist())),
         "top_class": classifier.class_names[ranking(s, z)[0]]}
        for a, b, s, z in zip(start_s, end_s, window_scores, window_logits)]
  return record


def ranking(scores, logits):
  """Class indices, highest score first; equal scores by their (aggregated) logits, then by
  class index.

  The probabilities are float32, where a sigmoid is exactly 1.0 above a logit of about
  17.3: confident classes tie on the score and would otherwise rank by class index.
  (Evaluation computes its scores in float64 instead, `trainer.Trainer`.)
  """
  return np.lexsort((-np.asarray(logits, np.float64), -np.asarray(scores, np.float64)))


def format_record(record):
  if "error" in record:
    return f"{record['video']}: error: {record['error']}"
  lines = [f"{record['video']} ({record['duration_s']:.1f} s, {record['views']} views, "
           f"{record['aggregation']})"]
  lines += [f"  {t['score']:.4f}  {t['class']}" for t in record["top_k"]]
  for window in record.get("timeline", []):
    best = window["top_class"]
    lines.append(f"  [{window['start_s']:7.2f} - {window['end_s']:7.2f} s]  "
                 f"{window['scores'][best]:.4f}  {best}")
  return "\n".join(lines)


class TimelineCsv:
  """`--timeline_csv`: one row per window (video, start_s, end_s, one column per class),
  written as each video is scored."""

  def __init__(self, path, class_names):
    self._file = open(path, "w", newline="")  # pylint: disable=consider-using-with
    self._class_names = list(class_names)
    self._writer = csv.writer(self._file)
    self._writer.writerow(["video", "start_s", "end_s"] + self._class_names)

  def write(self, record):
    for window in record.get("timeline", []):
      self._writer.writerow([record["video"], f"{window['start_s']:.3f}",
                             f"{window['end_s']:.3f}"] +
                            [f"{window['scores'][name]:.6f}" for name in self._class_names])
    self._file.flush()

  def close(self):
    self._file.close()


def check_output_path(flag, path):
  """Raises ValueError naming `--flag` when `path` cannot be written: checked before any
  model is loaded, so a typo does not cost a run's work."""
  if not path:
    return
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise ValueError(f"--{flag}={path} is a directory; pass a file name.")
  if not os.path.isdir(folder):
    raise ValueError(f"--{flag}={path}: the directory {folder} does not exist; create it "
                     "first.")
  if not os.access(folder, os.W_OK) or (os.path.exists(path) and
                                        not os.access(path, os.W_OK)):
    raise ValueError(f"--{flag}={path} is not writable.")


def build_classifier():
  """The classifier the flags ask for (raises ValueError on a bad combination)."""
  from official.inference import classifiers  # pylint: disable=g-import-not-at-top
  overrides = {"fps": FLAGS.fps, "num_clips": FLAGS.num_clips, "num_crops": FLAGS.num_crops,
               "frame_stride": FLAGS.frame_stride, "aggregation": FLAGS.aggregation}
  if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
    raise ValueError("Pass exactly one of --saved_model=EXPORT_DIR or --model_dir=DIR "
                     "(with --gin_file).")
  if FLAGS.saved_model:
    return classifiers.SavedModelClassifier(FLAGS.saved_model, overrides, FLAGS.batch_size)
  return classifiers.CheckpointClassifier(
      FLAGS.model_dir, classifiers.gin_files_of(FLAGS.model_dir, FLAGS.gin_file),
      gin_flags.gin_bindings_from_flags(), FLAGS.checkpoint, overrides, FLAGS.batch_size)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  if not FLAGS.video:
    raise app.UsageError("Pass at least one --video=FILE.")
  if FLAGS.timeline_csv and not FLAGS.timeline:
    raise app.UsageError("--timeline_csv needs --timeline.")
  if FLAGS.timeline_step_s is not None and not FLAGS.timeline_step_s > 0:
    raise app.UsageError(f"--timeline_step_s must be positive. Received: "
                         f"{FLAGS.timeline_step_s}")
  if FLAGS.top_k < 1:
    raise app.UsageError(f"--top_k must be at least 1. Received: {FLAGS.top_k}")
  # pylint: disable=g-import-not-at-top
  from data_prep import video as video_lib
  from official.inference import views
  from official.training import checkpointing
  # pylint: enable=g-import-not-at-top
  output = timeline_csv = None
  try:
    check_output_path("output", FLAGS.output)
    check_output_path("timeline_csv", FLAGS.timeline_csv)
    classifier = build_classifier()
    object_maps = views.ObjectMaps(classifier.uses_objects, FLAGS.object_maps,
                                   FLAGS.segmenter)
    if not classifier.class_names:  # Resolved now: missing names are a usage error.
      raise ValueError(f"{classifier} has no class names.")
    # Opened before any video is scored: a file that cannot be written fails now.
    if FLAGS.output:
      output = open(FLAGS.output, "w")  # pylint: disable=consider-using-with
    if FLAGS.timeline_csv:
      timeline_csv = TimelineCsv(FLAGS.timeline_csv, classifier.class_names)
  except (ValueError, FileNotFoundError, OSError, checkpointing.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    if output:
      output.close()
    return 2
  logging.info("Views: %s", classifier.protocol)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (loaded by now anyway)
  records, failed = [], 0
  try:
    for path in FLAGS.video:
      start = time.perf_counter()
      try:
        record = predict_video(classifier, path, object_maps, FLAGS.top_k,
                               FLAGS.timeline_step_s, FLAGS.timeline)
      except (video_lib.VideoReadError, FileNotFoundError, ValueError, OSError,
              tf.errors.InvalidArgumentError) as e:
        # InvalidArgumentError: the export's input checks (e.g. object ids it refuses).
        failed += 1
        record = {"video": path, "error": f"{type(e).__name__}: {e}"}
        print(f"error: {path}: {record['error']}", file=sys.stderr, flush=True)
      else:
        record["seconds"] = time.perf_counter() - start
        print(format_record(record), flush=True)
      records.append(record)
      if output:
        output.write(json.dumps(record) + "\n")
        output.flush()
      if timeline_csv:
        timeline_csv.write(record)
  finally:
    for f in (output, timeline_csv):
      if f:
        f.close()
  if failed:
    print(f"{len(records) - failed} of {len(records)} videos classified; {failed} failed "
          "(see the errors above).", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
