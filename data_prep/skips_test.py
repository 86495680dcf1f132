"""The skip summary's totals: inputs skipped, repairs made, and inputs excluded by the
protocol are three counts, not one."""

import json

from data_prep import skips


def _report():
  report = skips.SkipReport("charades/full")
  report.skip(skips.MISSING_VIDEO, "/r/Charades_v1_480/A1.mp4")
  report.repair(skips.REVERSED_ACTION, "train.csv:2", "video A2: ends swapped")
  report.repair(skips.BAD_LENGTH, "train.csv:2", "video A2: length 'oops'")
  report.note(skips.NOT_IN_SPLIT, "Walk_p03_r00_v01_c03.mp4")
  return report


def test_totals_count_skipped_repaired_and_excluded_inputs_apart(tmp_path):
  # The headline counted repairs and a protocol's expected exclusions as
  # skipped: one missing video read "4 input(s) skipped".
  summary = json.load(open(_report().write(tmp_path)))
  assert (summary["total_skipped"], summary["total_repaired"],
          summary["total_excluded"]) == (1, 2, 1)
  assert summary["by_reason"] == {"bad_length": 1, "missing_video": 1, "not_in_split": 1,
                                  "reversed_action": 1}
  headline = skips.format_summary(summary).splitlines()[0]
  assert headline == ("charades/full: 1 input(s) skipped, 2 repair(s) made, "
                      "1 excluded by the protocol")


def test_merged_entries_keep_their_kind():
  # A Beam worker's entries are merged by reason; the kind follows the reason.
  merged = skips.SkipReport("charades/full")
  merged.merge(_report().entries())
  assert merged.as_dict() == _report().as_dict()


def test_a_reason_is_counted_under_one_kind_only():
  report = skips.SkipReport("charades/full")
  for wrong in (lambda: report.repair(skips.MISSING_VIDEO, "x"),
                lambda: report.note(skips.REVERSED_ACTION, "x"),
                lambda: report.skip(skips.EXCLUDED_CLASS, "x")):
    try:
      wrong()
    except ValueError as e:
      assert "counted as" in str(e)
    else:
      raise AssertionError("a reason counted under another kind was accepted")
