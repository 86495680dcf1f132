"""`official.predict` and the export on class rankings and class names: confident classes
(probabilities saturated at 1.0 in float32) rank by their logits, not by class index; class
names that are missing, extra, repeated or empty are refused before any video is scored,
instead of scores landing under other classes' names."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from data_prep import video as video_lib
from official import predict
from official.export import serving
from official.inference import classifiers
from official.inference import views
from official.modeling import builders
from tests import tiny_models

# A tiny AssembleNet whose logits are its head's bias (kernel zero): the same for every clip.
_STRUCTURE = [[-1, 1], [-1, 1], [0, [0, 1], 8, 1, 1, 0], [1, [2], 16, 1, 2, 0],
              [2, [2, 3], 16, 1, 2, 0], [3, [4], 32, 1, 2, 0]]


def _fixed_logit_model(logits):
  model = builders.build_model(
      structure=_STRUCTURE, edge_weights=None, model_type="assemblenet", depth=26,
      num_frames=4, image_size=32, num_classes=len(logits))
  head = model.get_layer("head").classifier
  head.kernel.assign(np.zeros(head.kernel.shape))
  head.bias.assign(np.asarray(logits, np.float32))
  return model


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("clip") / "clip.mp4")
  video_lib.write_video(path, tiny_models.moving_square_video(16, 48, 64, 0), 8)
  return path


def test_confident_classes_rank_by_logit_not_by_class_index(tmp_path, clip):
  # Before: sigmoid(logit) is exactly 1.0 in float32 above a logit of about 17.3, so the
  # classes with logits 18, 20 and 30 tied and ranked by class index: --top_k=1 and every
  # timeline window named the least confident of them.
  names = ["a_logit18", "b_logit20", "c_logit30", "d_logit-5"]
  model = _fixed_logit_model([18.0, 20.0, 30.0, -5.0])
  serving.export_saved_model(model, str(tmp_path / "export"), names, num_frames=4,
                             image_size=32, uses_objects=False, version=1,
                             view_protocol=views.ViewProtocol(4, 32, 2, 2))
  classifier = classifiers.SavedModelClassifier(str(tmp_path / "export"))
  record = predict.predict_video(classifier, clip, views.ObjectMaps(False), top_k=3,
                                 timeline=True)
  assert [t["class"] for t in record["top_k"]] == ["c_logit30", "b_logit20", "a_logit18"]
  assert [t["score"] for t in record["top_k"]] == [1.0, 1.0, 1.0]  # Saturated indeed.
  assert record["timeline"]
  assert all(window["top_class"] == "c_logit30" for window in record["timeline"])
  lines = predict.format_record(record).splitlines()
  assert "c_logit30" in lines[1]
  assert all(line.endswith("c_logit30") for line in lines[4:])


def test_export_refuses_repeated_and_empty_class_names(tmp_path):
  # Before: repeated names were exported, and predict keyed its scores by name, so one
  # class's score was replaced by the other's in --output and --timeline_csv. An empty
  # name failed inside TF's table reader and left .staging_1 behind.
  model = _fixed_logit_model([2.0, -2.0, 0.0])
  export_dir = str(tmp_path / "export")
  with pytest.raises(ValueError, match=r"Class names must be unique.*'Sitting' \(classes 0 "
                     r"and 1\)"):
    serving.export_saved_model(model, export_dir, ["Sitting", "Sitting", "Standing"], num_frames=4,
                               image_size=32, uses_objects=False, version=1)
  with pytest.raises(ValueError, match=r"Class names must not be empty.*class 1"):
    serving.export_saved_model(model, export_dir, ["Sitting", " ", "Standing"], num_frames=4,
                               image_size=32, uses_objects=False, version=1)
  assert not os.path.exists(export_dir) or not os.listdir(export_dir)


def test_a_failed_export_leaves_no_staging_folder(tmp_path, monkeypatch):
  model = _fixed_logit_model([2.0, -2.0, 0.0])
  export_dir = str(tmp_path / "export")

  def failing_warmup(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(serving, "write_warmup_requests", failing_warmup)
  with pytest.raises(OSError, match="disk full"):
    serving.export_saved_model(model, export_dir, ["a", "b", "c"], num_frames=4,
                               image_size=32, uses_objects=False, version=1)
  assert os.listdir(export_dir) == []


@pytest.mark.slow
@pytest.mark.parametrize("names, message", [
    (tiny_models.CLASS_NAMES[:11], r"Expected 12 class names \(the model's outputs\). "
                                   r"Received: 11"),
    (tiny_models.CLASS_NAMES + ["action 12"], r"Expected 12 class names .* Received: 13"),
    (tiny_models.CLASS_NAMES[:11] + ["action 0"], r"unique.*'action 0' \(classes 0 and 11\)"),
])
def test_model_dir_with_wrong_class_names_fails_before_any_video(tmp_path, clip, names,
                                                                 message):
  # Before: --model_dir never checked Experiment.class_names against the model: with 11
  # names (and --top_k=2) it exited 0 with 11 of 12 scores, with 13 it stopped with a
  # KeyError after the first video.
  model_dir = str(tmp_path / "model")
  tiny_models.make_model_dir(model_dir, tiny_models.GIN, tiny_models.BINDINGS, seed=0)
  result = subprocess.run(
      [sys.executable, "-m", "official.predict", f"--model_dir={model_dir}",
       f"--gin_file={tiny_models.GIN}", *[f"--gin_param={b}" for b in tiny_models.BINDINGS],
       f"--gin_param=Experiment.class_names = {names!r}", f"--video={clip}", "--top_k=2",
       f"--output={tmp_path / 'out.jsonl'}"],
      cwd=tiny_models.ROOT, env=tiny_models.env(), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert error and re.search(message, error[0]), result.stderr[-2000:]
  assert not (tmp_path / "out.jsonl").exists()  # No video was scored.

