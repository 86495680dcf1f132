"""Example generation as an Apache Beam pipeline, one element per video.

TFDS runs a builder's generation through Beam when `_generate_examples` returns a
`beam.PTransform` and the `tfds.download.DownloadConfig` names a runner or options
(`beam_runner=`, `beam_options=`): the DirectRunner in multi-process mode on one machine,
Dataflow, Flink or Spark at scale. `VideoBuilder._generate_examples` returns
`VideoExamples` in that case; the builder itself (pickled with its config and object-map
source) encodes each video in the workers, exactly as the default path does in-process.

Skips are not lost across workers: each video's outcome (kept or not, the skip entries it
produced, the worker that encoded it) is a side output, gathered into one JSON file per
split in the temporary data directory (`<tmp data dir>/beam_outcomes/<split>.json`), which
the builder reads back after the pipeline (`read_outcomes`) and merges, in row order, into
its skip report. Skips are also Beam counters (namespace `data_prep.skips`, one per
reason), visible in the runner's monitoring while the pipeline runs.

Requires `apache-beam` (requirements-beam.txt).
"""

import json
import os
import socket

try:
  import apache_beam as beam
except ImportError as e:  # pragma: no cover  (the message is the point)
  raise ImportError("Preparing with --beam_runner/--beam_options needs Apache Beam: "
                    "pip install -r requirements-beam.txt") from e
import tensorflow as tf

from data_prep import skips

SKIP_COUNTERS_NAMESPACE = "data_prep.skips"
_OUTCOMES = "outcomes"


class VideoExamples(beam.PTransform):
  """One split's examples: `PBegin -> PCollection[(video id, example)]`.

  Args:
    builder: the `VideoBuilder` (pickled to the workers; its `example(row, report)` encodes
      one video).
    split: split name (names the outcomes file).
    rows: the split's video records, picklable dicts, in the default path's order.
    outcomes_dir: folder (local or a `tf.io.gfile` URL every worker can write) for
      `<split>.json`.
  """

  def __init__(self, builder, split, rows, outcomes_dir):
    super().__init__()
    self._builder = builder
    self._rows = list(rows)
    self._path = os.path.join(outcomes_dir, f"{split}.json")

  def expand(self, pbegin):
    results = (
        pbegin
        | "ListVideos" >> beam.Create(list(enumerate(self._rows)))
        # Breaks fusion with Create, so that the videos spread over the workers.
        | "SpreadVideos" >> beam.Reshuffle()
        | "EncodeVideos" >> beam.ParDo(_EncodeVideo(self._builder)).with_outputs(
            _OUTCOMES, main="examples"))
    _ = (results[_OUTCOMES]
         | "GatherOutcomes" >> beam.combiners.ToList()
         | "WriteOutcomes" >> beam.Map(_write_json, self._path))
    return results.examples


class _EncodeVideo(beam.DoFn):
  """`(index, row)` -> `(key, example)` when kept; always a tagged outcome
  `[index, kept, worker, skip entries]`."""

  def __init__(self, builder):
    super().__init__()
    self._builder = builder

  def process(self, element):
    index, row = element
    report = skips.SkipReport(self._builder.info.full_name)
    example = self._builder.example(row, report)
    entries = report.entries()
    for reason, _, _ in entries:
      beam.metrics.Metrics.counter(SKIP_COUNTERS_NAMESPACE, reason).inc()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    yield beam.pvalue.TaggedOutput(
        _OUTCOMES, [index, example is not None, worker, [list(e) for e in entries]])
    if example is not None:
      yield example


def _write_json(value, path):
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "w") as f:  # A retried bundle rewrites the same content.
    json.dump(value, f)


def read_outcomes(outcomes_dir, split, report):
  """Merges the skips the workers counted for `split` into `report`, in row order.

  Returns:
    `(number of videos kept, set of worker names)`.

  Raises:
    FileNotFoundError: the pipeline wrote no outcomes for `split` (it did not finish).
  """
  path = os.path.join(outcomes_dir, f"{split}.json")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"The Beam pipeline left no outcomes for split '{split}' "
                            f"({path}); it did not run to the end.")
  with tf.io.gfile.GFile(path) as f:
    outcomes = sorted(json.load(f), key=lambda outcome: outcome[0])
  for _, _, _, entries in outcomes:
    report.merge(entries)
  return sum(1 for _, kept, _, _ in outcomes if kept), {w for _, _, w, _ in outcomes}


def skip_counters(pipeline_result):
  """`{reason: count}` of the Beam skip counters (committed values where the runner has
  them), or `{}` when the runner reports no metrics."""
  try:
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(SKIP_COUNTERS_NAMESPACE))
  except (NotImplementedError, AttributeError):
    return {}
  counts = {}
  for counter in query["counters"]:
    value = counter.committed if counter.committed is not None else counter.attempted
    counts[counter.key.metric.name] = counts.get(counter.key.metric.name, 0) + value
  return dict(sorted(counts.items()))
