"""Bookkeeping for input that preparation skips (or keeps with a repair) instead of
crashing on.

Every skipped or repaired input is logged with a warning that names it, counted under a
reason, printed in a summary at the end of preparation and written as JSON beside the
prepared data (`<data_dir>/<dataset>/<config>/<version>/skip_summary.json`). When
preparation stops (a split without any usable video), the summary goes to
`<data_dir>/<dataset>/<config>/skip_summary.failed.json` instead.
"""

import collections
import json
import os

from absl import logging

SUMMARY_FILENAME = "skip_summary.json"
# Written beside the (absent) data when preparation stops: <data_dir>/<name>/<config>/.
FAILED_SUMMARY_FILENAME = "skip_summary.failed.json"

# Reasons used by the builders (a reader of the JSON sees these keys).
MISSING_VIDEO = "missing_video"
CORRUPT_VIDEO = "corrupt_video"
TRUNCATED_VIDEO = "truncated_video"  # Decodes to clearly less than its declared duration.
MALFORMED_ROW = "malformed_row"
MALFORMED_ACTION = "malformed_action"  # The row's other actions are kept.
REVERSED_ACTION = "reversed_action"  # Kept with its ends swapped.
BAD_LENGTH = "bad_length"  # The video's duration is used instead.
VIDEO_FROM_FRAMES = "video_from_frames"  # A broken mp4 replaced by its JPEG frames.
UNKNOWN_CLASS = "unknown_class"
DUPLICATE_ID = "duplicate_id"
UNPARSABLE_NAME = "unparsable_name"
EXCLUDED_CLASS = "excluded_class"
NOT_IN_SPLIT = "not_in_split"
MISSING_OBJECT_MAPS = "missing_object_maps"
SEGMENTER_FAILED = "segmenter_failed"

# What a counted input became, by reason: repaired (`SkipReport.repair`: an annotation
# fixed while reading, or a video decoded from its frames), excluded as the protocol says
# (`SkipReport.note`); every other reason is a skip. The summary totals each kind apart.
# A repair is counted where it is made: a row repaired while the annotations are read can
# still be skipped later (its video missing), and then counts under both.
REPAIRED = frozenset({REVERSED_ACTION, BAD_LENGTH, VIDEO_FROM_FRAMES})
EXCLUDED = frozenset({EXCLUDED_CLASS, NOT_IN_SPLIT})


def kind(reason):
  """'repaired', 'excluded' or 'skipped': what an input counted under `reason` became."""
  return "repaired" if reason in REPAIRED else "excluded" if reason in EXCLUDED else "skipped"


class SkipReport:
  """Counts skipped inputs per reason and remembers which files they were.

  `skip()` logs a warning; `repair()` logs a warning for an input kept with a fix (a
  reversed action, a bad length); `note()` records an expected exclusion (for example a clip of a
  class that a cross-view protocol does not use) at info level. All are counted, each under
  its reason; the summary totals skipped, repaired and excluded inputs apart (`kind`).

  Raises (each method): ValueError for a reason of another kind (`REPAIRED`, `EXCLUDED`).
  """

  def __init__(self, dataset_name):
    self.dataset_name = dataset_name
    self._files = collections.defaultdict(list)
    self._details = collections.defaultdict(list)

  def skip(self, reason, path, detail=""):
    _check_kind(reason, "skipped")
    logging.warning("Skipping %s (%s)%s", path, reason, f": {detail}" if detail else "")
    self._add(reason, path, detail)

  def repair(self, reason, path, detail=""):
    """Counts an input kept after a repair (for example an action with swapped ends)."""
    _check_kind(reason, "repaired")
    logging.warning("Repairing %s (%s)%s", path, reason, f": {detail}" if detail else "")
    self._add(reason, path, detail)

  def note(self, reason, path, detail=""):
    _check_kind(reason, "excluded")
    logging.info("Excluding %s (%s)%s", path, reason, f": {detail}" if detail else "")
    self._add(reason, path, detail)

  def _add(self, reason, path, detail):
    self._files[reason].append(os.fspath(path))
    self._details[reason].append(detail)

  def entries(self):
    """Every counted input as `(reason, path, detail)` string triples, in the order of
    `as_dict()` (reasons sorted, each reason's inputs in the order they were counted)."""
    return [(r, p, d) for r, f in sorted(self._files.items())
            for p, d in zip(f, self._details[r])]

  def merge(self, entries):
    """Counts `entries()` of another report (a Beam worker's) without logging them again:
    each was logged where it was met."""
    for reason, path, detail in entries:
      self._add(reason, path, detail)

  def count(self, reason):
    return len(self._files.get(reason, ()))

  @property
  def total(self):
    """Inputs counted under any reason: skipped, repaired or excluded."""
    return sum(len(v) for v in self._files.values())

  def as_dict(self):
    totals = collections.Counter()
    for reason, files in self._files.items():
      totals[kind(reason)] += len(files)
    return {
        "dataset": self.dataset_name,
        "total_skipped": totals["skipped"],
        "total_repaired": totals["repaired"],
        "total_excluded": totals["excluded"],
        "by_reason": {r: len(f) for r, f in sorted(self._files.items())},
        "files": {
            r: [{"path": p, "detail": d} for p, d in zip(f, self._details[r])]
            for r, f in sorted(self._files.items())
        },
    }

  def format(self):
    return format_summary(self.as_dict())

  def write(self, directory):
    """Writes the summary as JSON into `directory`; returns the file path."""
    return self.write_to(os.path.join(os.fspath(directory), SUMMARY_FILENAME))

  def write_to(self, path):
    """Writes the summary as JSON to the file `path`; returns it."""
    with open(path, "w") as f:
      json.dump(self.as_dict(), f, indent=1)
    return path


def _check_kind(reason, expected):
  if kind(reason) != expected:
    raise ValueError(f"Reason {reason!r} is counted as {kind(reason)}, not {expected} "
                     "(data_prep/skips.py: REPAIRED, EXCLUDED).")


def read_summary(directory):
  """The summary `SkipReport.write` left in `directory`, or None."""
  path = os.path.join(os.fspath(directory), SUMMARY_FILENAME)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def format_summary(summary):
  """Human-readable lines of an `as_dict()` summary."""
  # Summaries written before the totals were split hold total_skipped alone.
  lines = [f"{summary['dataset']}: {summary['total_skipped']} input(s) skipped"
           + (f", {summary['total_repaired']} repair(s) made, "
              f"{summary['total_excluded']} excluded by the protocol"
              if "total_repaired" in summary else "")]
  for reason, files in summary["files"].items():
    shown = ", ".join(os.path.basename(f["path"]) or f["path"] for f in files[:5])
    more = f" (+{len(files) - 5} more)" if len(files) > 5 else ""
    lines.append(f"  {reason}: {len(files)}  [{shown}{more}]")
  return "\n".join(lines)
