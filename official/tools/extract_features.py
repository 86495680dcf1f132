r"""Per-video backbone features of a trained model, as `.npy` files plus an index.

  python -m official.tools.extract_features --model_dir=DIR [--gin_file=F] --out=OUT \
      (--split=test | --video=a.mp4 [--video=b.mp4 ...]) [--per_node] [--keep_views] \
      [--object_maps=DIR | --segmenter=SAVEDMODEL]

The feature of a view is the pooled pre-logit vector the classifier's Dense reads
(`official/inference/features.py`; `logits = feature @ kernel + bias`); a video's feature is
the mean over its evaluation views (`--keep_views`: all views, `[V, D]`). `--per_node` adds
every node's output averaged over space and time.

`--split` reads the experiment's prepared dataset through its evaluation pipeline (the views
`--mode=eval` scores); `--video` decodes files as `official.predict` does. Writes

  OUT/<video_id>.npy                 float32 [D] (or [V, D] with --keep_views)
  OUT/<video_id>.node_<k>.npy        float32 [C_k] (or [V, C_k]), with --per_node
  OUT/index.jsonl                    one line per video: video_id, source, views, shape,
                                     file, node files, labels (split: positive class ids)
  OUT/errors.jsonl                   files that could not be read (then exit status 1)

A file's `video_id` is its name without extension; a name that cannot name a feature file
(a hidden `.name.mp4`, a folder `dir/`) is a usage error before any work.
"""

import collections
import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
import tqdm

from official import gin_flags
from official import runtime

FLAGS = flags.FLAGS
INDEX_FILE = "index.jsonl"
ERRORS_FILE = "errors.jsonl"


def define_flags():
  flags.DEFINE_string("model_dir", None, "Training directory (checkpoints).")
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (default: latest).")
  gin_flags.define_gin_flags()
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_string("split", None, "A split of the experiment's prepared dataset, e.g. "
                      "'test' or 'train[:10%]'.")
  flags.DEFINE_multi_string("video", [], "Video file (repeatable).")
  flags.DEFINE_bool("per_node", False, "Also write every node's pooled output.")
  flags.DEFINE_bool("keep_views", False, "Write every view's features instead of their "
                    "mean.")
  flags.DEFINE_string("object_maps", None, "Object models with --video: per-frame PNG id "
                      "maps, DIR/<name>/<name>-000001.png.")
  flags.DEFINE_string("segmenter", None, "Object models with --video: ADE-20K segmenter.")
  flags.DEFINE_integer("batch_size", 8, "Views per model call (--video).")


class FeatureWriter:
  """Writes each video's features and its index line."""

  def __init__(self, out, keep_views):
    os.makedirs(out, exist_ok=True)
    self.out = out
    self.keep_views = keep_views
    self._index = open(os.path.join(out, INDEX_FILE), "w")  # pylint: disable=consider-using-with
    self.written = 0

  def write(self, video_id, source, view_features, labels=None):
    """`view_features`: {name: `[V, C]`} of one video."""
    record = {"video_id": video_id, "source": source,
              "views": int(len(view_features["pre_logits"]))}
    nodes = {}
    for name, values in view_features.items():
      values = np.asarray(values, np.float32)
      values = values if self.keep_views else values.mean(axis=0)
      file = f"{video_id}.npy" if name == "pre_logits" else f"{video_id}.{name}.npy"
      np.save(os.path.join(self.out, file), values)
      if name == "pre_logits":
        record.update(file=file, shape=list(values.shape))
      else:
        nodes[name] = file
    if nodes:
      record["nodes"] = nodes
    if labels is not None:
      record["labels"] = [int(i) for i in np.flatnonzero(labels)]
    self._index.write(json.dumps(record) + "\n")
    self.written += 1

  def close(self):
    self._index.close()


def video_id_problem(video_id):
  """Why `video_id` cannot name a feature file (a string), or None when it can."""
  if not video_id:
    return "it is empty"
  if "/" in video_id:
    return "it holds a path separator"
  if video_id.startswith("."):
    return "it starts with '.' (a hidden file, or '.'/'..')"
  return None


def _check_video_id(video_id):
  problem = video_id_problem(video_id)
  if problem:
    raise ValueError(f"Video id {video_id!r} cannot name a feature file: {problem}.")
  return video_id


def file_video_id(path):
  """The video id of a file: its name without extension ('' for a path ending in '/')."""
  return os.path.splitext(os.path.basename(path))[0]


def extract_split(classifier, extractor, writer):
  """Features of every video of the experiment's evaluation split (views grouped by id)."""
  per_video = collections.defaultdict(lambda: collections.defaultdict(list))
  labels = {}
  progress = tqdm.tqdm(unit="view", desc="views", file=sys.stderr)
  for features, batch_labels in classifier.evaluation_dataset():
    ids = [v.decode("utf-8") for v in features.pop("video_id").numpy()]
    inputs = {k: features[k] for k in ("rgb", "objects") if k in features}
    for name, values in extractor(inputs).items():
      for video_id, value in zip(ids, values):
        per_video[video_id][name].append(value)
    for video_id, label in zip(ids, batch_labels.numpy()):
      labels[video_id] = label
    progress.update(len(ids))
  progress.close()
  for video_id in sorted(per_video):
    writer.write(_check_video_id(video_id), "split", per_video[video_id], labels[video_id])


def extract_files(classifier, extractor, writer, paths, object_maps):
  """Features of each file; returns the errors [{video, error}] of files that failed."""
  from data_prep import video as video_lib  # pylint: disable=g-import-not-at-top
  from official.inference import views  # pylint: disable=g-import-not-at-top
  errors = []
  for path in tqdm.tqdm(paths, unit="video", desc="videos", file=sys.stderr):
    video_id = _check_video_id(file_video_id(path))  # Checked by `main` up front.
    try:
      video = views.decode(path, classifier.protocol)
      maps = object_maps(path, video)
    except (video_lib.VideoReadError, FileNotFoundError, ValueError, OSError) as e:
      errors.append({"video": path, "error": f"{type(e).__name__}: {e}"})
      print(f"error: {path}: {errors[-1]['error']}", file=sys.stderr, flush=True)
      continue
    indices = views.clip_indices(len(video.frames), classifier.protocol)
    outputs = collections.defaultdict(list)
    for batch in classifier.model_inputs(video.frames, maps, indices):
      for name, values in extractor(batch).items():
        outputs[name].extend(values)
    writer.write(video_id, path, outputs)
  return errors


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  if not FLAGS.model_dir or not FLAGS.out:
    raise app.UsageError("Pass --model_dir (and --gin_file unless it holds the config.gin "
                         "training wrote) and --out.")
  if bool(FLAGS.split) == bool(FLAGS.video):
    raise app.UsageError("Pass either --split=SPLIT or --video=FILE (repeatable).")
  stems = [file_video_id(p) for p in FLAGS.video]
  bad = [f"{p} ({video_id_problem(s)})" for p, s in zip(FLAGS.video, stems)
         if video_id_problem(s)]
  if bad:  # Before any work: a bad id would otherwise stop the run halfway.
    raise app.UsageError(f"These files' names cannot name a feature file (the video id is "
                         f"the name without extension): {'; '.join(bad)}. Rename them or "
                         "pass a file rather than a folder.")
  duplicates = sorted({s for s in stems if stems.count(s) > 1})
  if duplicates:
    raise app.UsageError(f"Files share a name (their video id): {duplicates}; rename or "
                         "run them separately.")
  # pylint: disable=g-import-not-at-top
  from official.inference import classifiers
  from official.inference import features as features_lib
  from official.inference import views
  from official.training import checkpointing
  # pylint: enable=g-import-not-at-top
  bindings = gin_flags.gin_bindings_from_flags()
  if FLAGS.split:
    bindings.append(f"Experiment.eval_split = {FLAGS.split!r}")
  try:
    classifier = classifiers.CheckpointClassifier(
        FLAGS.model_dir, classifiers.gin_files_of(FLAGS.model_dir, FLAGS.gin_file), bindings,
        FLAGS.checkpoint, batch_size=FLAGS.batch_size)
    object_maps = None
    if FLAGS.video:
      object_maps = views.ObjectMaps(classifier.uses_objects, FLAGS.object_maps,
                                     FLAGS.segmenter)
  except (ValueError, FileNotFoundError, OSError, checkpointing.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  extractor = features_lib.FeatureExtractor(classifier.model, per_node=FLAGS.per_node)
  writer = FeatureWriter(FLAGS.out, FLAGS.keep_views)
  errors = []
  try:
    if FLAGS.split:
      extract_split(classifier, extractor, writer)
    else:
      errors = extract_files(classifier, extractor, writer, FLAGS.video, object_maps)
  finally:
    writer.close()
  if errors:
    with open(os.path.join(FLAGS.out, ERRORS_FILE), "w") as f:
      f.writelines(json.dumps(e) + "\n" for e in errors)
  print(f"Wrote the features of {writer.written} videos to {FLAGS.out} "
        f"({INDEX_FILE}); {len(errors)} failed.")
  return 1 if errors else 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
