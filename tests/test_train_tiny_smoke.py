"""The CI end-to-end test: `gin/experiments/tiny_smoke.gin` through the command line —
train_and_eval, then export, then the export served in a fresh process (tf.saved_model.load
and saved_model_cli) against the Keras model restored from the same checkpoint."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  return env


def _cli(*args, check=True):
  return subprocess.run([sys.executable, "-m", "official.train", *args], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=300,
                        check=check)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("tiny_smoke")
  start = time.time()
  _cli("--mode=train_and_eval", f"--model_dir={model_dir}", f"--gin_file={GIN}")
  _cli("--mode=export", f"--model_dir={model_dir}", f"--gin_file={GIN}")
  return model_dir, time.time() - start


@pytest.mark.slow
def test_tiny_smoke_trains_evaluates_and_exports(smoke_run):
  model_dir, seconds = smoke_run
  print(f"tiny_smoke train_and_eval + export: {seconds:.1f} s")
  for name in ("config.gin", "operative_config.gin", "flags.txt", "versions.json",
               "ckpt-12.index", "ckpt-6.index"):
    assert (model_dir / name).exists(), name
  assert "Experiment.train_steps = 12" in (model_dir / "operative_config.gin").read_text()
  assert "--gin_file=" in (model_dir / "flags.txt").read_text()
  metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
  assert metrics["step"] == 12 and metrics["num_videos"] == 8
  assert metrics["view_protocol"]["views_per_video"] == 2
  assert 0.0 < metrics["map"] <= 1.0
  best = json.loads((model_dir / "best" / "best.json").read_text())
  assert (best["step"], best["metric"], best["value"]) == (12, "map", metrics["map"])
  # The per-video file re-scores to the same number offline; the submission has 8 lines of
  # id + 12 scores.
  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  assert writers.rescore(str(model_dir / "eval" / "per_video_scores.jsonl"), "map") == {
      "map": metrics["map"]}
  lines = (model_dir / "eval" / "charades_submission.txt").read_text().splitlines()
  assert len(lines) == 8 and all(len(line.split()) == 13 for line in lines)
  # Rerunning the finished command resumes at step 12 and has nothing left to do.
  out = _cli("--mode=train", f"--model_dir={model_dir}", f"--gin_file={GIN}")
  assert "Resuming from" in out.stderr and "ckpt-12" in out.stderr


_VERIFY = r"""
import sys, json, numpy as np, tensorflow as tf, gin
from official import gin_flags
from official.training import experiment, strategies
export_path, model_dir, gin_file = sys.argv[1:4]
gin_flags.parse_gin([gin_file], [])
runner = experiment.Runner(experiment.Experiment(), model_dir,
                           strategies.build_strategy("one_device"))
runner.trainer.restore(tf.train.latest_checkpoint(model_dir))
clip = np.random.default_rng(7).integers(0, 256, (2, 4, 32, 32, 3)).astype(np.uint8)
np.save(model_dir + "/clip.npy", clip)
keras_probs = tf.sigmoid(runner.model({"rgb": clip.astype(np.float32) / 127.5 - 1.0},
                                      training=False)).numpy()
served = tf.saved_model.load(export_path).signatures["serving_default"](
    frames=tf.constant(clip))
names = tf.saved_model.load(export_path).signatures["class_names"]()["class_names"]
print(json.dumps({"keras": keras_probs.tolist(),
                  "served": served["probabilities"].numpy().tolist(),
                  "names": [n.decode() for n in names.numpy()]}))
"""


@pytest.mark.slow
def test_export_round_trip_in_fresh_process(smoke_run, tmp_path):
  model_dir, _ = smoke_run
  versions = os.listdir(model_dir / "export")
  assert len(versions) == 1 and versions[0].isdigit()
  export_path = str(model_dir / "export" / versions[0])
  assert sorted(os.listdir(export_path)) == ["assets", "assets.extra", "fingerprint.pb",
                                             "saved_model.pb", "variables"]
  out = subprocess.run([sys.executable, "-c", _VERIFY, export_path, str(model_dir), GIN],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
                       check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(result["served"], result["keras"], rtol=0, atol=1e-6)
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  assert result["names"] == list(synthetic.CLASSES)
  assert (model_dir / "export" / versions[0] / "assets" / "class_names.txt").read_text() \
      == "".join(n + "\n" for n in synthetic.CLASSES)

  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  show = subprocess.run([cli, "show", "--dir", export_path, "--tag_set", "serve",
                         "--signature_def", "serving_default"], env=_env(),
                        capture_output=True, text=True, timeout=120, check=True).stdout
  # Any shape is accepted by the signature and checked in the graph (tests/test_serving_inputs.py).
  assert "inputs['frames'] tensor_info:\n      dtype: DT_UINT8\n      shape: unknown_rank" \
      in show
  assert "outputs['probabilities']" in show and "outputs['logits']" in show
  run = subprocess.run([cli, "run", "--dir", export_path, "--tag_set", "serve",
                        "--signature_def", "serving_default", "--inputs",
                        f"frames={model_dir / 'clip.npy'}", "--outdir", str(tmp_path)],
                       env=_env(), capture_output=True, text=True, timeout=120, check=True)
  del run
  np.testing.assert_allclose(np.load(tmp_path / "probabilities.npy"), result["keras"],
                             rtol=0, atol=1e-6)

  # The warm-up request is a PredictionLog TF Serving can replay.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  records = list(tf.data.TFRecordDataset(
      os.path.join(export_path, "assets.extra", "tf_serving_warmup_requests")))
  log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
  request = log.predict_log.request
  assert request.model_spec.signature_name == "serving_default"
  assert tf.make_ndarray(request.inputs["frames"]).shape == (1, 4, 32, 32, 3)


@pytest.mark.slow
def test_bad_checkpoint_and_empty_model_dir_give_clear_errors(tmp_path):
  out = _cli("--mode=export", f"--model_dir={tmp_path}", f"--gin_file={GIN}", check=False)
  assert out.returncode == 1
  assert f"No checkpoint in model_dir {tmp_path}" in out.stderr
  out = _cli("--mode=eval", f"--model_dir={tmp_path}", f"--gin_file={GIN}",
             f"--checkpoint={tmp_path}/ckpt-7", check=False)
  assert out.returncode == 1
  assert f"--checkpoint={tmp_path}/ckpt-7 is not a checkpoint" in out.stderr


@pytest.mark.slow
def test_accuracy_over_multi_label_data_is_refused_before_training(tmp_path):
  # The synthetic dataset is Charades-like: several actions per video, or none. Accuracy
  # would arg-max each video's actions to its lowest class id and report a plausible number.
  out = _cli("--mode=train_and_eval", f"--model_dir={tmp_path}", f"--gin_file={GIN}",
             "--gin_param=Experiment.eval_metric = 'mean_class_accuracy'", check=False)
  assert out.returncode == 2, out.stderr[-3000:]
  assert ("Experiment.eval_metric = 'mean_class_accuracy', but the dataset "
          "charades/synthetic is multi-label") in out.stdout + out.stderr
  assert not list(tmp_path.glob("ckpt-*"))


def test_a_model_only_gin_file_is_a_configuration_error_naming_what_to_add(tmp_path):
  # gin raises a RuntimeError for missing required bindings; it ended as exit 1 (a run
  # failure) with gin's bare message, not as the configuration error it is.
  out = _cli("--mode=train", f"--model_dir={tmp_path / 'run'}",
             "--gin_file=gin/experiments/charades_assemblenet50.gin", check=False)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "gin configuration:" in lines[0], out.stderr[-3000:]
  assert "'input_fn'" in lines[0] and "gin/base/data_charades.gin" in lines[0]


def test_the_model_only_hint_names_only_the_files_not_given(tmp_path):
  out = _cli("--mode=train", f"--model_dir={tmp_path / 'run'}",
             "--gin_file=gin/experiments/charades_assemblenet50.gin",
             "--gin_file=gin/base/train.gin", check=False)
  line = [line for line in out.stderr.splitlines() if line.startswith("error: ")][0]
  assert out.returncode == 2, out.stderr[-3000:]
  assert "--gin_file=gin/base/data_charades.gin" in line
  assert "--gin_file=gin/base/train.gin" not in line
