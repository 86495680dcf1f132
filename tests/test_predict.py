"""`python -m official.predict` on mp4 files the test writes (a phone video with a display
rotation among them): through `--saved_model` and through `--model_dir`, the scores equal
the exported signature's on the evaluation views the test cuts itself; a corrupt or
truncated file is a per-file error and the other files still run."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep import video as video_lib
from official.data import input_pipeline
from official.export import serving
from official.inference import views
from tests import tiny_models

ROOT, GIN, CLASS_NAMES, BINDINGS, FPS = (tiny_models.ROOT, tiny_models.GIN,
                                         tiny_models.CLASS_NAMES, tiny_models.BINDINGS,
                                         tiny_models.FPS)
NUM_FRAMES, FRAME_STRIDE, NUM_CLIPS = 4, 2, 2  # tiny_smoke.gin's evaluation views


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("predict_model")
  export_path, _ = tiny_models.make_model_dir(model_dir, GIN, BINDINGS, seed=0)
  return str(model_dir), export_path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  return tiny_models.write_test_videos(str(tmp_path_factory.mktemp("videos")))


def _signature_scores(export_path, path, clips):
  """The export's probabilities on the views cut here: the decoder at the file's rate and
  size (charades/synthetic keeps both), `clips` [C, T] indices, max over views."""
  frames = video_lib.read_video(path, None, None)[0]
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  probabilities = signature(frames=tf.constant(frames[clips]))["probabilities"].numpy()
  return probabilities, frames


def _predict(*args):
  return subprocess.run([sys.executable, "-m", "official.predict", *args], cwd=ROOT,
                        env=tiny_models.env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_export_carries_the_experiments_evaluation_views(trained):
  _, export_path = trained
  assert views.read_protocol(export_path) == views.ViewProtocol(
      num_frames=NUM_FRAMES, image_size=32, frame_stride=FRAME_STRIDE, num_clips=NUM_CLIPS,
      num_crops=1, aggregation="max", fps=None, short_side=None)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["saved_model", "model_dir"])
def test_predict_scores_equal_the_exported_signature_on_the_same_views(
    trained, videos, phone_video, tmp_path, source):
  model_dir, export_path = trained
  paths, corrupt = videos
  # --model_dir alone: its config.gin (as training writes it) is the configuration.
  model_flags = ([f"--saved_model={os.path.dirname(export_path)}"] if source == "saved_model"
                 else [f"--model_dir={model_dir}"])
  output = tmp_path / "out.jsonl"
  timeline_csv = tmp_path / "timeline.csv"
  truncated = tiny_models.write_truncated_video(str(tmp_path / "cut_short.mp4"))
  run = _predict(*model_flags, f"--video={paths[0]}", f"--video={corrupt}",
                 f"--video={truncated}", f"--video={paths[1]}", f"--video={phone_video}",
                 f"--output={output}", "--top_k=3", "--timeline",
                 f"--timeline_csv={timeline_csv}")
  # The corrupt and the truncated file fail alone: reported, counted, and the exit status
  # says so.
  assert run.returncode == 1, run.stderr[-3000:]
  assert f"error: {corrupt}: VideoReadError" in run.stderr
  assert f"error: {truncated}: TruncatedVideoError" in run.stderr
  assert "3 of 5 videos classified; 2 failed" in run.stderr
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r["video"] for r in records] == [paths[0], corrupt, truncated, paths[1],
                                           phone_video]
  assert records[1]["error"].startswith("VideoReadError")
  assert records[2]["error"].startswith("TruncatedVideoError: ")
  records = [records[0], records[3], records[4]]
  paths = paths + [phone_video]

  atol = 1e-6 if source == "saved_model" else 2e-5  # Keras model vs the saved graph
  for record, path in zip(records, paths):
    num_frames = video_lib.read_video(path, None, None)[0].shape[0]
    clips = input_pipeline.eval_clip_indices(num_frames, NUM_FRAMES, FRAME_STRIDE,
                                             NUM_CLIPS).numpy()
    per_view, _ = _signature_scores(export_path, path, clips)
    assert np.abs(per_view[0] - per_view[1]).max() > 1e-3  # the two views differ
    expected = per_view.max(axis=0)
    assert list(record["scores"]) == CLASS_NAMES
    np.testing.assert_allclose(list(record["scores"].values()), expected, atol=atol)
    assert (record["views"], record["aggregation"], record["fps"]) == (2, "max", FPS)
    assert record["num_frames"] == num_frames
    best = np.argsort(-expected, kind="stable")[:3]
    assert [t["class"] for t in record["top_k"]] == [CLASS_NAMES[i] for i in best]
    assert f"  {expected[best[0]]:.4f}  {CLASS_NAMES[best[0]]}" in run.stdout

    # Timeline: one clip every half span (4 frames = 0.5 s), each scored by the signature.
    starts = np.arange(0, num_frames - 7 + 1, 4)
    windows = (starts[:, None] + np.arange(NUM_FRAMES) * FRAME_STRIDE) % num_frames
    window_scores, _ = _signature_scores(export_path, path, windows)
    timeline = record["timeline"]
    assert [w["start_s"] for w in timeline] == list(starts / FPS)
    assert [w["end_s"] for w in timeline] == list((starts + 7) / FPS)
    np.testing.assert_allclose([list(w["scores"].values()) for w in timeline],
                               window_scores, atol=atol)
  rows = list(csv.reader(timeline_csv.open()))
  assert rows[0] == ["video", "start_s", "end_s"] + CLASS_NAMES
  assert len(rows) == 1 + sum(len(r["timeline"]) for r in records)
  assert rows[1][:3] == [paths[0], "0.000", "0.875"]


@pytest.fixture(scope="module")
def phone_video(tmp_path_factory, trained):
  """A phone video: coded as a 48 x 64 landscape picture with the display matrix of a phone
  held upright; a player shows it 64 x 48, turned 90 degrees clockwise. The decoder turns
  it upright, and upright views score differently from sideways ones."""
  _, export_path = trained
  coded = tiny_models.moving_square_video(16, 48, 64, seed=3)
  path = str(tmp_path_factory.mktemp("phone") / "phone.mp4")
  tiny_models.write_rotated_video(path, coded, FPS)
  frames = video_lib.read_video(path, None, None)[0]
  assert frames.shape == (16, 64, 48, 3)
  # Turned clockwise (H.264 blurs the square's edges: compare on average).
  assert np.abs(frames[5].astype(float) - np.rot90(coded[5], k=-1)).mean() < 5
  assert np.abs(frames[5].astype(float) - np.rot90(coded[5], k=1)).mean() > 20
  clips = input_pipeline.eval_clip_indices(16, NUM_FRAMES, FRAME_STRIDE, NUM_CLIPS).numpy()
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  upright = signature(frames=tf.constant(frames[clips]))["probabilities"].numpy()
  sideways = signature(frames=tf.constant(coded[clips]))["probabilities"].numpy()
  assert np.abs(upright.max(0) - sideways.max(0)).max() > 1e-3
  return path


@pytest.mark.slow
def test_predict_without_a_model_or_objects_is_a_clear_usage_error(trained, videos):
  _, export_path = trained
  run = _predict(f"--video={videos[0][0]}")
  assert run.returncode == 2
  assert "Pass exactly one of --saved_model=EXPORT_DIR or --model_dir=DIR" in run.stderr
  run = _predict(f"--saved_model={export_path}/missing", f"--video={videos[0][0]}")
  assert run.returncode == 2 and "holds no SavedModel" in run.stderr
  run = _predict(f"--model_dir={export_path}", f"--video={videos[0][0]}")
  assert run.returncode == 2 and "has no config.gin" in run.stderr


@pytest.mark.slow
def test_output_files_that_cannot_be_written_fail_before_any_video_is_scored(tmp_path):
  # Before: every video was scored, then writing --timeline_csv raised FileNotFoundError
  # (a traceback) and the run's work was lost; a missing --output folder also gave a
  # traceback. The paths are checked before the model is even loaded.
  video = str(tmp_path / "never_read.mp4")
  for flag in ("output", "timeline_csv"):
    missing = tmp_path / "no_such_dir" / "out"
    run = _predict("--saved_model=/nonexistent", f"--video={video}", "--timeline",
                   f"--{flag}={missing}")
    assert run.returncode == 2, run.stderr[-2000:]
    assert (f"error: --{flag}={missing}: the directory {missing.parent} does not exist"
            in run.stderr)
    assert "Traceback" not in run.stderr
  run = _predict("--saved_model=/nonexistent", f"--video={video}", f"--output={tmp_path}")
  assert run.returncode == 2 and f"--output={tmp_path} is a directory" in run.stderr


@pytest.mark.slow
def test_model_dir_neither_prepares_data_nor_calls_another_configs_checkpoint_damaged(
    trained, videos):
  model_dir, _ = trained
  # tiny_smoke.gin as it is: a self-contained experiment (prepare_data_fn) without class
  # names. Before: predict generated and prepared the synthetic dataset into
  # MODEL_DIR/synthetic_data to read the class names. Now: codes, with a warning.
  run = _predict(f"--model_dir={model_dir}", f"--gin_file={GIN}", f"--video={videos[0][0]}",
                 "--top_k=1")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "No class names" in run.stderr and "class_11" in run.stderr
  assert "  class_" in run.stdout
  assert not os.path.exists(os.path.join(model_dir, "synthetic_data"))
  # Another configuration (6 classes) than the checkpoint's. Before: "Checkpoint ... is
  # damaged and cannot be read (ValueError: Received incompatible tensor ...). No other
  # intact checkpoint ...; move the ckpt-0.* files out of it", raised as a traceback.
  run = _predict(f"--model_dir={model_dir}", f"--gin_file={GIN}",
                 "--gin_param=NUM_CLASSES = 6", f"--video={videos[0][0]}")
  assert run.returncode == 2, run.stderr[-3000:]
  assert "error: Checkpoint " in run.stderr and "does not match the model" in run.stderr
  assert "damaged" not in run.stderr and "move the" not in run.stderr
  assert "Traceback" not in run.stderr


# RGB stem, object stem, one fused node per level (peer attention over both stems).
OBJECT_BINDINGS = BINDINGS + [
    "build_model.model_type = 'assemblenet_plus'",
    "build_model.structure = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], "
    "[1, [2], 8, 1, 2, 0], [2, [3], 8, 1, 2, 0], [3, [4], 8, 1, 2, 0]]",
    "build_model.attention_mode = 'peer'",
]


@pytest.fixture(scope="module")
def object_model(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("predict_object_model")
  export_path, _ = tiny_models.make_model_dir(model_dir, GIN, OBJECT_BINDINGS, seed=1)
  return str(model_dir), export_path


@pytest.mark.slow
@pytest.mark.parametrize("source", ["saved_model", "model_dir"])
def test_object_model_reads_the_maps_folder_and_equals_the_signature(
    object_model, videos, tmp_path, source):
  model_dir, export_path = object_model
  paths, _ = videos
  # Maps for clip0 only, in the data side's layout: DIR/<name>/<name>-000001.png, one per
  # source frame; clip1 has none and fails alone.
  frames = video_lib.read_video(paths[0], None, None)[0]
  rng = np.random.default_rng(2)
  maps = rng.integers(0, 151, frames.shape[:3], dtype=np.uint8)
  maps[:, :24] = 7  # a large region of one class, so the maps matter
  folder = tmp_path / "maps" / "clip0"
  folder.mkdir(parents=True)
  for i, ids in enumerate(maps):
    (folder / f"clip0-{i + 1:06d}.png").write_bytes(video_lib.encode_png(ids))
  model_flags = ([f"--saved_model={export_path}"] if source == "saved_model"
                 else [f"--model_dir={model_dir}", f"--gin_file={GIN}"] +
                 [f"--gin_param={b}" for b in OBJECT_BINDINGS])
  output = tmp_path / "out.jsonl"
  run = _predict(*model_flags, f"--video={paths[0]}", f"--video={paths[1]}",
                 f"--object_maps={tmp_path / 'maps'}", f"--output={output}")
  assert run.returncode == 1, run.stderr[-3000:]
  assert f"error: {paths[1]}: FileNotFoundError: no numbered object maps in" in run.stderr
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert "error" in records[1]

  clips = input_pipeline.eval_clip_indices(len(frames), NUM_FRAMES, FRAME_STRIDE,
                                           NUM_CLIPS).numpy()
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  served = signature(frames=tf.constant(frames[clips]), objects=tf.constant(maps[clips]))
  expected = served["probabilities"].numpy().max(axis=0)
  # Other maps give other scores: the maps were read, not ignored.
  other = signature(frames=tf.constant(frames[clips]),
                    objects=tf.zeros(maps[clips].shape, tf.uint8))
  assert np.abs(other["probabilities"].numpy().max(axis=0) - expected).max() > 1e-3
  np.testing.assert_allclose(list(records[0]["scores"].values()), expected,
                             atol=1e-6 if source == "saved_model" else 2e-5)

  if source == "saved_model":
    run = _predict(f"--saved_model={export_path}", f"--video={paths[0]}")
    assert run.returncode == 2
    assert "The model takes object maps: pass --object_maps=DIR" in run.stderr


class _RedSegmenter(tf.Module):
  """The preparation's segmenter contract: uint8 [B, H, W, 3] -> ids [B, H, W] (red // 2)."""

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def __call__(self, frames):
    return tf.cast(frames[..., 0], tf.int32) // 2


@pytest.mark.slow
def test_object_model_with_a_segmenter_equals_the_signature_on_its_maps(
    object_model, videos, tmp_path):
  _, export_path = object_model
  paths, _ = videos
  segmenter = _RedSegmenter()
  tf.saved_model.save(segmenter, str(tmp_path / "segmenter"),
                      signatures=segmenter.__call__)
  output = tmp_path / "out.jsonl"
  run = _predict(f"--saved_model={export_path}", f"--video={paths[1]}",
                 f"--segmenter={tmp_path / 'segmenter'}", f"--output={output}")
  assert run.returncode == 0, run.stderr[-3000:]
  frames = video_lib.read_video(paths[1], None, None)[0]
  clips = input_pipeline.eval_clip_indices(len(frames), NUM_FRAMES, FRAME_STRIDE,
                                           NUM_CLIPS).numpy()
  maps = frames[..., 0] // 2
  signature = tf.saved_model.load(export_path).signatures[serving.SIGNATURE]
  expected = signature(frames=tf.constant(frames[clips]),
                       objects=tf.constant(maps[clips]))["probabilities"].numpy().max(axis=0)
  record = json.loads(output.read_text())
  np.testing.assert_allclose(list(record["scores"].values()), expected, atol=1e-6)
