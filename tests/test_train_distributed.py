"""Distributed training and resumption, each run in fresh processes (logical devices and
worker clusters must be set up before TensorFlow initialises; kill -9 needs a process)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "stand_in_training.py")


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def _train(tmp_path, name, *args, env=None):
  out = tmp_path / f"{name}.npz"
  subprocess.run([sys.executable, SCRIPT, f"--model_dir={tmp_path / name}", f"--out={out}",
                  *args], check=True, env=env or _env(), timeout=240, cwd=ROOT)
  return dict(np.load(out))


def _assert_same_weights(a, b, atol):
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.mark.slow
def test_mirrored_two_cpus_equals_one_device_with_same_global_batch(tmp_path):
  one = _train(tmp_path, "one", "--strategy=one_device", "--steps=2", "--batch=8", "--ema")
  two = _train(tmp_path, "two", "--strategy=mirrored", "--devices=2", "--steps=2",
               "--batch=8", "--ema")
  # Training moved the weights (so equality is not trivial) ...
  assert np.abs(one["bn/beta"]).max() > 1e-3
  assert np.abs(one["bn/moving_mean"]).max() > 1e-5
  # ... identically, up to float32 summation order: gradients summed over replicas, batch
  # norm statistics synchronised over the global batch, EMA updated once per step.
  _assert_same_weights(one, two, atol=1e-7)


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes(tmp_path):
  command = [sys.executable, SCRIPT, "--strategy=multi_worker", "--steps=3", "--batch=8",
             f"--model_dir={tmp_path / 'mw'}", f"--out={tmp_path / 'mw.npz'}"]
  for status, out in _run_cluster([command, command], tmp_path, timeout=240):
    assert status == 0, out[-3000:]
    assert "replicas=2 step=3" in out
  # Only the chief keeps checkpoints; the other worker's scratch copy is gone.
  assert sorted(f for f in os.listdir(tmp_path / "mw") if f.startswith("ckpt-3")) == [
      "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
  assert not [f for f in os.listdir(tmp_path / "mw") if f.startswith(".worker")]
  # Two workers x one CPU replica = one device with the same global batch.
  single = _train(tmp_path, "single", "--strategy=one_device", "--steps=3", "--batch=8")
  _assert_same_weights(single, dict(np.load(tmp_path / "mw.npz")), atol=1e-7)


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
  args = ["--strategy=one_device", "--steps=60", "--batch=4", "--checkpoint_interval=10",
          "--delay=0.05", "--ema"]
  model_dir = tmp_path / "resumed"
  proc = subprocess.Popen([sys.executable, SCRIPT, f"--model_dir={model_dir}",
                           f"--out={tmp_path / 'resumed.npz'}", *args],
                          env=_env(), cwd=ROOT)
  deadline = time.time() + 120
  while not (model_dir / "ckpt-20.index").exists():
    assert proc.poll() is None, "training ended before it could be killed"
    assert time.time() < deadline
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / "resumed.npz").exists()
  killed_at = max(int(f[5:-6]) for f in os.listdir(model_dir) if f.endswith(".index"))
  assert 20 <= killed_at < 60

  resumed = _train(tmp_path, "resumed", *args)  # The same command again.
  uninterrupted = _train(tmp_path, "uninterrupted", *args)
  _assert_same_weights(uninterrupted, resumed, atol=0)


def _run_cluster(commands, tmp_path, timeout):
  """Runs one command per worker of a local two-worker cluster; returns (status, output)
  pairs. Outputs go to files: two workers writing into pipes read one after the other
  would block each other (one stalls on a full pipe, the other waits for it in a
  collective)."""
  ports = _free_ports(len(commands))
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs, logs = [], []
  for index, command in enumerate(commands):
    logs.append(open(tmp_path / f"worker_{index}.log", "w+"))
    procs.append(subprocess.Popen(
        command, cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT, text=True,
        env=_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                       "task": {"type": "worker", "index": index}}))))
  try:
    deadline = time.time() + timeout
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.time()))
  finally:
    for p in procs:
      p.kill()
  results = []
  for p, log in zip(procs, logs):
    log.seek(0)
    results.append((p.wait(), log.read()))
    log.close()
  return results


def _check(*args, **env):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "distributed_checks.py"),
                        *args], env=_env(**env), cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
  lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
  assert out.returncode == 0 and lines, out.stderr[-3000:]
  return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_a_float16_overflow_on_any_replica_skips_the_step_on_all(tmp_path):
  # Keras' LossScaleOptimizer decided on the first replica's gradients alone: an overflow
  # on replica 1 went into the weights (training stopped on non-finite weights), and under
  # MultiWorkerMirroredStrategy the workers disagreed and hung in the all-reduce.
  one = _check("loss_scale", "1", "1")
  assert one["error"] is None and one["finite"] and one["moved"], one
  for replica in (0, 1):
    two = _check("loss_scale", "2", str(replica))
    assert two == one, (replica, two, one)
  # Two worker processes, the overflow on the second one's half of the batch.
  command = [sys.executable, os.path.join(ROOT, "tests", "distributed_checks.py"),
             "loss_scale", "multi_worker", "1"]
  for _, out in _run_cluster([command, command], tmp_path, timeout=120):
    result = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert result and json.loads(result[-1][len("RESULT "):]) == one, out[-3000:]


@pytest.mark.slow
def test_evaluation_with_an_empty_replica_batch_scores_every_view():
  # 5 views in batches of 4 on 2 replicas: the last batch leaves replica 1 without a view.
  # With oneDNN's kernels (TF's default on AVX-512 CPUs) a conv of an empty batch fails.
  result = _check("empty_replica_eval", TF_ENABLE_ONEDNN_OPTS="1")
  assert "error" not in result["1"] and "error" not in result["2"], result
  assert result["2"]["ids"] == result["1"]["ids"] == ["v0", "v1", "v2", "v3", "v4"]
  np.testing.assert_allclose(result["2"]["scores"], result["1"]["scores"], rtol=1e-5,
                             atol=1e-6)


@pytest.mark.slow
def test_a_batch_that_does_not_divide_over_the_replicas_is_a_configuration_error(tmp_path):
  # It was a ValueError from the trainer's constructor: a traceback, exit 1.
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "distributed_checks.py"), "train",
       "--mode=train", "--strategy=mirrored", f"--model_dir={tmp_path / 'run'}",
       "--gin_file=gin/experiments/tiny_smoke.gin",
       "--gin_param=Experiment.train_batch_size = 3"],
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Experiment.train_batch_size" in errors[0], errors
  assert "2 replicas" in errors[0]


@pytest.mark.slow
def test_multi_worker_train_and_eval_of_a_self_preparing_experiment(tmp_path):
  # Every worker prepared the synthetic data into the shared model_dir at once (the second
  # one stopped on the first one's preparation lock). Then the evaluation set was split
  # between the workers by position in each worker's own, unordered, stream: views were
  # scored twice or never ("6 of 7 videos do not have 2 views", after training).
  command = [sys.executable, "-m", "official.train", "--mode=train_and_eval",
             "--strategy=multi_worker", f"--model_dir={tmp_path / 'mw'}",
             "--gin_file=gin/experiments/tiny_smoke.gin",
             "--gin_param=Experiment.train_steps = 4",
             "--gin_param=Experiment.eval_batch_size = 6"]
  for status, out in _run_cluster([command, command], tmp_path, timeout=300):
    assert status == 0, out[-3000:]
  with open(tmp_path / "mw" / "eval" / "per_video_scores.jsonl") as f:
    videos = [json.loads(line)["video_id"] for line in f]
  assert len(videos) == len(set(videos)) == 8
  metrics = json.loads((tmp_path / "mw" / "eval" / "metrics.json").read_text())
  assert metrics["num_videos_scored"] == 8 and metrics["num_videos_missing"] == 0


@pytest.mark.slow
def test_a_failed_preparation_on_the_chief_stops_every_worker_with_a_message(tmp_path):
  # An error other than ValueError (here a TypeError from a bad gin value) left the chief
  # before the barrier: the other worker died later with a raw collective traceback.
  command = [sys.executable, "-m", "official.train", "--mode=train", "--strategy=multi_worker",
             f"--model_dir={tmp_path / 'mw'}", "--gin_file=gin/experiments/tiny_smoke.gin",
             "--gin_param=prepare_synthetic_charades.num_train = 'sixteen'"]
  (chief_status, _), (status, out) = _run_cluster([command, command], tmp_path, timeout=120)
  assert chief_status != 0 and status == 1, out[-3000:]
  assert "error: The chief worker failed to prepare the data" in out, out[-3000:]


@pytest.mark.slow
def test_workers_share_each_global_batch_and_resume_it(tmp_path):
  # tf.data's default sharding found the TFRecord readers under build_dataset's per-epoch
  # flat_map and gave the workers alternate epochs: a run resumed at step s skipped to
  # global batch s of a stream each worker had only half read, so clips were never trained.
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(str(tmp_path / "release"), seed=2, num_train=10, num_test=1, height=16,
                     width=16, min_frames=8, max_frames=10)
  prepare.prepare("charades/synthetic", str(tmp_path / "release"), str(tmp_path / "data"))
  command = [sys.executable, os.path.join(ROOT, "tests", "distributed_checks.py"),
             "shard_resume", str(tmp_path / "data")]
  results = []
  for status, out in _run_cluster([command, command], tmp_path, timeout=120):
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert status == 0 and lines, out[-3000:]
    results.append(json.loads(lines[-1][len("RESULT "):]))
  for worker in results:
    assert worker["6"] == worker["0"]  # The resumed steps are the uninterrupted ones.
  for step in range(6):
    # Two clips each, together one global batch of 4 (the 10 videos' clips differ).
    halves = [results[0]["0"][step], results[1]["0"][step]]
    assert len(halves[0]) == len(halves[1]) == 2 and len(set(halves[0] + halves[1])) == 4


@pytest.mark.slow
def test_xla_with_several_replicas_is_a_configuration_error(tmp_path):
  # The compiled forward and backward pass holds the synchronised batch norm's all-reduce,
  # which TF cannot run there: the first step failed with a 2 KB merge_call message.
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "distributed_checks.py"), "train",
       "--mode=train", "--strategy=mirrored", f"--model_dir={tmp_path / 'run'}",
       "--gin_file=gin/experiments/tiny_smoke.gin", "--gin_param=Experiment.jit_compile = True"],
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Experiment.jit_compile" in errors[0], errors
  assert not list((tmp_path / "run").glob("ckpt-*"))


@pytest.mark.slow
def test_multi_worker_export_is_written_once_by_the_chief(tmp_path):
  model_dir = tmp_path / "run"
  train = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={model_dir}",
       "--gin_file=gin/experiments/tiny_smoke.gin", "--gin_param=Experiment.train_steps = 2"],
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert train.returncode == 0, train.stderr[-3000:]
  command = [sys.executable, "-m", "official.train", "--mode=export",
             "--strategy=multi_worker", f"--model_dir={model_dir}",
             "--gin_file=gin/experiments/tiny_smoke.gin"]
  (chief_status, chief_out), (status, out) = _run_cluster([command, command], tmp_path, 180)
  assert chief_status == 0 and status == 0, (chief_out + out)[-3000:]
  # Every worker exported a version of its own (TF Serving serves the newest).
  assert len(os.listdir(model_dir / "export")) == 1
  assert "SavedModel: written by the chief" in out


def _tiny_cluster_command(tmp_path, *args):
  return [sys.executable, "-m", "official.train", "--strategy=multi_worker",
          f"--model_dir={tmp_path / 'mw'}", "--gin_file=gin/experiments/tiny_smoke.gin", *args]


@pytest.mark.slow
def test_multi_worker_continuous_evaluation_is_refused(tmp_path):
  # Each worker polled for new checkpoints on its own, so the workers evaluated different
  # checkpoints in one all-gather and the mix was recorded as one step's mAP.
  command = _tiny_cluster_command(tmp_path, "--mode=continuous_eval", "--eval_timeout=5")
  for status, out in _run_cluster([command, command], tmp_path, timeout=120):
    assert status == 2 and "Traceback" not in out, out[-3000:]
    assert "error: gin configuration: --mode=continuous_eval runs on one worker" in out


@pytest.mark.slow
def test_a_chief_refused_by_the_model_dir_lock_stops_every_worker_with_a_message(tmp_path):
  from official.training import model_dir_lock  # pylint: disable=g-import-not-at-top
  (tmp_path / "mw").mkdir()
  holder = model_dir_lock.ModelDirLock(str(tmp_path / "mw"), "train")
  holder.acquire()
  try:
    command = _tiny_cluster_command(tmp_path, "--mode=train")
    (chief_status, chief_out), (status, out) = _run_cluster([command, command], tmp_path,
                                                            timeout=120)
  finally:
    holder.release()
  assert chief_status == 1 and "is in use by another run" in chief_out, chief_out[-3000:]
  assert status == 1 and "Traceback" not in out, out[-3000:]
  assert "error: The chief worker could not start" in out


@pytest.mark.slow
def test_a_failed_export_on_the_chief_fails_every_worker(tmp_path):
  # The other worker exited 0, saying the chief had written the SavedModel.
  train = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={tmp_path / 'mw'}",
       "--gin_file=gin/experiments/tiny_smoke.gin", "--gin_param=Experiment.train_steps = 2"],
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert train.returncode == 0, train.stderr[-3000:]
  (tmp_path / "not_a_folder").write_text("")
  command = _tiny_cluster_command(tmp_path, "--mode=export",
                                  f"--export_dir={tmp_path / 'not_a_folder'}")
  (chief_status, _), (status, out) = _run_cluster([command, command], tmp_path, timeout=180)
  assert chief_status != 0 and status == 1, out[-3000:]
  assert "error: The chief worker's export failed" in out and "SavedModel:" not in out
