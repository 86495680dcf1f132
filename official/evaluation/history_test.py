"""Evaluation history and progress: one record per evaluated step, TensorBoard scalars, an
ETA."""

import json

from absl import logging
import tensorflow as tf

from official.evaluation import history


def test_records_are_kept_per_step_and_listed(tmp_path):
  eval_dir = str(tmp_path / "eval")
  assert history.evaluated_steps(eval_dir) == []
  history.write_record(eval_dir, {"map": 0.25, "step": 6}, 6, checkpoint="/m/ckpt-6")
  history.write_record(eval_dir, {"map": 0.5, "step": 12}, 12)
  assert history.evaluated_steps(eval_dir) == [6, 12]
  first = json.loads((tmp_path / "eval" / "history" / "metrics-6.json").read_text())
  assert first == {"map": 0.25, "step": 6, "checkpoint": "/m/ckpt-6"}
  (tmp_path / "eval" / "history" / "metrics-7.json.tmp").write_text("{")  # Not a record.
  assert history.evaluated_steps(eval_dir) == [6, 12]


def test_read_records_leaves_out_unreadable_ones(tmp_path):
  # best/ is reconciled with these records (checkpointing.BestCheckpointKeeper).
  eval_dir = str(tmp_path / "eval")
  assert history.read_records(eval_dir) == {}
  history.write_record(eval_dir, {"map": 0.25}, 6, checkpoint="/m/ckpt-6")
  history.write_record(eval_dir, {"map": 0.5}, 12)
  (tmp_path / "eval" / "history" / "metrics-18.json").write_text("")  # Cut by a crash.
  assert history.read_records(eval_dir) == {
      6: {"map": 0.25, "step": 6, "checkpoint": "/m/ckpt-6"}, 12: {"map": 0.5, "step": 12}}


def test_scalars_reach_tensorboard(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path))
  history.write_scalars(writer, {"map": 0.25, "num_videos": 8, "top1": float("nan")}, 6)
  values = {}
  for path in tmp_path.iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  assert values == {("map", 6): 0.25}  # NaN and non-metric fields are not written.


def test_progress_line_counts_views_and_videos_with_an_eta(monkeypatch):
  clock = iter([100.0, 110.0, 110.0, 110.0])  # start, call, its line, line
  monkeypatch.setattr(history.time, "perf_counter", lambda: next(clock))
  logged = []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: logged.append(fmt % args))
  progress = history.Progress(total_views=600, views_per_video=30, every_seconds=5.0)
  progress(200)  # 10 s after the start: 20 views/s, 400 views to go.
  assert logged == ["Evaluation: 200/600 views (6/20 videos), 20.0 views/s, ETA 0:00:20"]
  assert progress.line() == (
      "Evaluation: 200/600 views (6/20 videos), 20.0 views/s, ETA 0:00:20")


def test_progress_without_a_total_has_no_eta(monkeypatch):
  clock = iter([0.0, 4.0])
  monkeypatch.setattr(history.time, "perf_counter", lambda: next(clock))
  progress = history.Progress()
  assert progress.line() == "Evaluation: 0 views, 0.0 views/s, ETA ?"


def test_records_of_the_former_map_are_named(tmp_path, caplog):
  # Before dd7dc77 a test video without actions counted as a negative in every class; the
  # same scores now give an equal or higher mAP, so a resumed run's best/ and final
  # evaluation would compare across two definitions without a word.
  eval_dir = str(tmp_path)
  history.write_record(eval_dir, {"map": 0.61, "step": 100}, 100)
  history.write_record(eval_dir, {"map": 0.62, "num_videos_without_actions": 3,
                                  "step": 200}, 200)
  history.write_record(eval_dir, {"mean_class_accuracy": 0.5, "step": 300}, 300)
  records = history.read_records(eval_dir)
  assert sorted(records) == [100, 200, 300]
  named = [r.getMessage() for r in caplog.records if "former" in r.getMessage()]
  assert len(named) == 1 and "step(s) 100 " in named[0] and "200" not in named[0]
  caplog.clear()
  history.write_record(str(tmp_path / "new"), {"map": 0.62, "num_videos_without_actions": 0,
                                               "step": 200}, 200)
  history.read_records(str(tmp_path / "new"))
  assert not [r for r in caplog.records if "former" in r.getMessage()]
