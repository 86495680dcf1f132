"""Unit tests of the trainer library: schedules, optimiser weight decay, losses, strategies,
checkpoint resolution, NaN stop, gin errors."""

import math
import os
import subprocess
import sys
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from official.training import checkpointing
from official.training import losses
from official.training import optimization
from official.training import strategies
from official.training import trainer as trainer_lib


def test_warmup_then_cosine_values():
  schedule = optimization.build_learning_rate(12, base_learning_rate=0.4, schedule="cosine",
                                              warmup_steps=2)
  assert float(schedule(0)) == 0.0
  assert float(schedule(1)) == pytest.approx(0.2)
  assert float(schedule(2)) == pytest.approx(0.4)
  assert float(schedule(7)) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
  assert float(schedule(12)) == pytest.approx(0.0, abs=1e-7)


def test_exponential_and_constant_schedules():
  schedule = optimization.build_learning_rate(100, base_learning_rate=1.0,
                                              schedule="exponential", decay_steps=10,
                                              decay_rate=0.5, staircase=True)
  assert float(schedule(25)) == 0.25
  schedule = optimization.build_learning_rate(100, base_learning_rate=0.3,
                                              schedule="constant")
  assert float(schedule(77)) == pytest.approx(0.3)
  with pytest.raises(ValueError, match="Received: 'linear'"):
    optimization.build_learning_rate(10, base_learning_rate=1.0, schedule="linear")


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_really_applies_and_skips_excluded(name):
  kernel = keras.Variable(np.full((2,), 2.0, np.float32), name="kernel")
  gamma = keras.Variable(np.full((2,), 2.0, np.float32), name="gamma")
  optimizer = optimization.build_optimizer(0.1, name=name, weight_decay=0.5)
  optimizer.apply_gradients([(tf.zeros(2), kernel), (tf.zeros(2), gamma)])
  # Zero gradient: only the decoupled decay moves the kernel, w -= lr * wd * w.
  np.testing.assert_allclose(kernel.numpy(), [1.9, 1.9], rtol=1e-6)
  np.testing.assert_array_equal(gamma.numpy(), [2.0, 2.0])


def test_nesterov_and_unknown_optimizer():
  assert optimization.build_optimizer(0.1, name="sgd", nesterov=True).nesterov
  with pytest.raises(ValueError, match="Received: 'adam'"):
    optimization.build_optimizer(0.1, name="adam")


def test_losses_match_hand_computation():
  logits = tf.constant([[0.0, 2.0]])
  sigmoid = losses.build_loss("sigmoid_cross_entropy")(tf.constant([[1.0, 0.0]]), logits)
  expected = (math.log(2.0) + math.log(1 + math.exp(2.0))) / 2
  assert float(sigmoid[0]) == pytest.approx(expected, rel=1e-6)
  smooth = losses.build_loss("softmax_cross_entropy", label_smoothing=0.2)(
      tf.constant([[1.0, 0.0]]), logits)
  log_p = np.log(np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum())
  assert float(smooth[0]) == pytest.approx(-(0.9 * log_p[0] + 0.1 * log_p[1]), rel=1e-6)


@pytest.mark.slow
def test_tpu_without_reachable_tpu_fails_fast_with_clear_message(tmp_path):
  # A fresh process: the abandoned connection attempt keeps TensorFlow's context locked.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root)
  # What the command costs before it reaches the TPU (interpreter, TensorFlow, gin), timed
  # on this machine now: the bound below is on the TPU wait itself, whatever the load.
  start = time.time()
  subprocess.run([sys.executable, "-c", "import official.train, official.training.experiment"],
                 cwd=root, env=env, check=True, timeout=120)
  startup_s = time.time() - start
  start = time.time()
  out = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={tmp_path}",
       "--strategy=tpu", "--tpu=grpc://127.0.0.1:9",
       f"--gin_file={root}/gin/experiments/tiny_smoke.gin"],
      cwd=root, env=env, capture_output=True, text=True, timeout=180)
  assert out.returncode == 1
  assert ("error: No TPU reachable at --tpu='grpc://127.0.0.1:9' within 10 s. Check the "
          "TPU name or grpc:// address and that the TPU is up.") in out.stderr
  # The 10 s TPU timeout plus gin parsing, not gRPC's minutes of retries.
  assert time.time() - start - startup_s < 30


def test_unknown_strategy():
  with pytest.raises(ValueError, match="Received: 'gpu'"):
    strategies.build_strategy("gpu")


def test_resolve_checkpoint_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"No checkpoint in model_dir {tmp_path}"):
    checkpointing.resolve_checkpoint(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="ckpt-3.index does not exist"):
    checkpointing.resolve_checkpoint(str(tmp_path), str(tmp_path / "ckpt-3"))
  with pytest.raises(FileNotFoundError, match="directory without any checkpoint"):
    checkpointing.resolve_checkpoint(str(tmp_path), str(tmp_path))
  path = tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / "ckpt"))
  assert checkpointing.resolve_checkpoint(str(tmp_path)) == path
  assert checkpointing.resolve_checkpoint("unused", str(tmp_path)) == path


def tiny_trainer(model_dir, learning_rate, steps, checkpoint_interval=2):
  """A Trainer of a 2-class Dense over [1, 2, 2, 3] clips (shared with checkpointing_test)."""
  strategy = strategies.build_strategy("one_device")
  with strategy.scope():
    rgb = keras.Input((1, 2, 2, 3), name="rgb")
    model = keras.Model({"rgb": rgb}, keras.layers.Dense(2)(keras.layers.Flatten()(rgb)))
    optimizer = optimization.build_optimizer(learning_rate, name="sgd", momentum=0.0)
  return trainer_lib.Trainer(strategy, model, optimizer, losses.build_loss(),
                             str(model_dir), global_batch_size=2, train_steps=steps,
                             checkpoint_interval=checkpoint_interval, log_interval=1)


def _dataset(scale=1.0):
  x = np.ones((2, 1, 2, 2, 3), np.float32) * scale
  return tf.data.Dataset.from_tensors(({"rgb": x}, np.ones((2, 2), np.float32))).repeat()


def _assemblenet_trainer(model_dir, seed):
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  strategy = strategies.build_strategy("one_device")
  with strategy.scope():
    model = builders.build_model(
        structure=[[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [0, 2], 4, 1, 2, 0],
                   [2, [3], 4, 1, 2, 0], [3, [2, 4], 4, 1, 2, 0]],
        edge_weights=None, model_type="assemblenet_plus", depth=26, num_frames=2,
        image_size=32, num_classes=3, attention_mode="peer")
    optimizer = optimization.build_optimizer(0.1, name="sgd")
  return trainer_lib.Trainer(strategy, model, optimizer, losses.build_loss(),
                             str(model_dir), global_batch_size=2, train_steps=1)


def test_checkpoint_restores_every_model_variable_batch_norm_statistics_included(tmp_path):
  saved = _assemblenet_trainer(tmp_path, seed=1)
  rng = np.random.default_rng(0)
  for variable in saved.model.variables:
    variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))
  path = saved.checkpoint().save(str(tmp_path / "ckpt"))
  restored = _assemblenet_trainer(tmp_path, seed=2)  # Other initial values.
  restored.restore(path)
  statistics = [v.path for v in restored.model.variables if "moving_" in v.path]
  assert len(statistics) > 10
  for before, after in zip(saved.model.variables, restored.model.variables):
    assert before.path == after.path
    np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  trainer = tiny_trainer(tmp_path, 0.1, 10)
  x = np.ones((6, 2, 1, 2, 2, 3), np.float32)
  x[4] = np.nan  # The 5th batch poisons the loss.
  dataset = tf.data.Dataset.from_tensor_slices(({"rgb": x}, np.ones((6, 2, 2), np.float32)))
  with pytest.raises(trainer_lib.NonFiniteLossError,
                     match=r"Loss is nan at step 5: training stopped. The last good "
                           r"checkpoint is .*ckpt-4;"):
    trainer.train(dataset)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
  restored = tiny_trainer(tmp_path, 0.1, 10)
  assert restored.restore(tf.train.latest_checkpoint(str(tmp_path))) == 4
  assert all(np.all(np.isfinite(w.numpy())) for w in restored.model.weights)


def test_missing_model_input_is_named(tmp_path):
  trainer = tiny_trainer(tmp_path, 0.1, 1)
  trainer.input_keys = ("rgb", "objects")
  with pytest.raises(ValueError, match=r"lacks \['objects'\]"):
    trainer.train(_dataset())


def test_video_ids_survive_the_int_encoding():
  ids = ["Drink.Fromcup_p17_r02_v09_c01", "46GP8", "é"]
  codes = trainer_lib.encode_video_ids(tf.constant(ids)).numpy()
  assert codes.shape == (3, trainer_lib.MAX_VIDEO_ID_LENGTH)
  assert trainer_lib.decode_video_ids(codes) == ids


def test_unknown_gin_binding_is_an_error_naming_it():
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  try:
    with pytest.raises(ValueError, match="Experiment.train_stepz"):
      gin_flags.parse_gin([], ["Experiment.train_stepz = 3"])
    gin.clear_config()
    with pytest.raises(ValueError, match="No configurable matching 'Experimnt'"):
      gin_flags.parse_gin([], ["Experimnt.train_steps = 3"])
    gin.clear_config()
    # Before: `eval/build_dataset.num_clips` was honoured; one VideoInput ignores scopes.
    with pytest.raises(ValueError, match=r"Scoped VideoInput bindings \(eval/VideoInput"):
      gin_flags.parse_gin([], ["eval/VideoInput.num_clips = 3"])
    gin.clear_config()
    with pytest.raises(ValueError, match="build_model.use_object_input no longer exists"):
      gin_flags.parse_gin([], ["build_model.use_object_input = True"])
  finally:
    gin.clear_config()


def test_deterministic_with_xla_is_a_clear_error():
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="deterministic = True cannot be combined with "
                                       "Experiment.jit_compile = True"):
    experiment.Experiment(model_fn=None, input_fn=None, train_batch_size=1,
                          eval_batch_size=1, train_steps=1, jit_compile=True,
                          deterministic=True)


def test_resume_starts_the_data_order_at_the_resumed_step(tmp_path):
  # A dataset callable gets the batches already trained on, so the pipeline skips them
  # before decoding (build_dataset(start_batch=)) instead of producing them again.
  starts = []

  def dataset_fn(start_batch):
    starts.append(start_batch)
    return _dataset()

  assert tiny_trainer(tmp_path, 0.1, 2).train(dataset_fn) == 2
  assert tiny_trainer(tmp_path, 0.1, 4).train(dataset_fn) == 4
  assert starts == [0, 2]


def test_due_evaluation_without_a_result_runs_on_resume(tmp_path):
  tiny_trainer(tmp_path, 0.1, 2).train(_dataset())  # Killed before evaluating step 2.
  evaluated = []
  resumed = tiny_trainer(tmp_path, 0.1, 4)
  resumed.train(_dataset(), evaluate_fn=evaluated.append, eval_interval=2,
                is_evaluated=lambda step: False)
  assert evaluated == [2, 4]
  evaluated.clear()
  # Step 4's result was written: a rerun has nothing to do.
  tiny_trainer(tmp_path, 0.1, 4).train(_dataset(), evaluate_fn=evaluated.append,
                                        eval_interval=2, is_evaluated=lambda step: True)
  assert not evaluated


_FULL_DISK = r"""
import errno, sys
from absl import app
from official import train
from official.training import experiment

def run_mode(*unused_args, **unused_kwargs):
  raise OSError(errno.ENOSPC, "No space left on device", "/m/eval/metrics.json.tmp")

experiment.run_mode = run_mode
train.gin_flags.parse_gin = lambda *args, **kwargs: None
sys.argv = ["train", "--model_dir=/m"]
app.run(lambda argv: sys.exit(train.main(argv)))
"""


@pytest.mark.slow
def test_full_disk_outside_checkpoints_is_one_error_line():
  # A fresh process: official.train's flags (--mode) clash with other mains' in this one.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = subprocess.run([sys.executable, "-c", _FULL_DISK], cwd=root, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root))
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: No space left on device while writing to --model_dir=/m (")
  assert "Free space and rerun the same command" in last


def test_confident_videos_keep_their_order_in_evaluation_scores(tmp_path):
  # float32's sigmoid is exactly 1 above a logit of about 17.3: a positive at logit 20 and a
  # negative at 30 would tie and rank in annotation order (AP 1 instead of 1/2).
  trainer = tiny_trainer(tmp_path, 0.1, 1)
  kernel = np.zeros((12, 2), np.float32)
  kernel[:, 0] = 1.0  # logit 0 = the sum of the clip's 12 values
  trainer.model.layers[-1].set_weights([kernel, np.zeros(2, np.float32)])
  clips = np.stack([np.full((1, 2, 2, 3), logit / 12, np.float32) for logit in (20, 30)])
  labels = np.array([[1, 0], [0, 1]], np.float32)
  dataset = tf.data.Dataset.from_tensor_slices(
      ({"rgb": clips, "video_id": np.array([b"pos", b"neg"])}, labels)).batch(2)
  scores = trainer.evaluate(dataset)
  by_id = dict(zip(scores.video_ids, np.asarray(scores.scores)[:, 0]))
  assert by_id["neg"] > by_id["pos"] > 0.5
  from official.evaluation import metrics  # pylint: disable=g-import-not-at-top
  assert metrics.average_precision([1, 0], [by_id["pos"], by_id["neg"]]) == 0.5


def test_logged_learning_rate_is_the_one_the_logged_step_used(tmp_path):
  # Before: the learning rate logged (and written to TensorBoard) at step s was the
  # schedule at the optimizer's iterations after step s, i.e. the rate of step s + 1: a
  # warm-up read 0.2, 0.4, 0.4 for steps that trained at 0, 0.2 and 0.4.
  schedule = optimization.build_learning_rate(8, base_learning_rate=0.4, schedule="cosine",
                                              warmup_steps=2)
  trainer = tiny_trainer(tmp_path, schedule, steps=3, checkpoint_interval=10)
  trainer.train(_dataset())
  logged = {}
  for path in tf.io.gfile.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "learning_rate":
          logged[event.step] = float(tf.make_ndarray(value.tensor))
  expected = {step: float(schedule(step - 1)) for step in (1, 2, 3)}
  assert logged == pytest.approx(expected)


def test_a_config_record_of_checkpoints_moved_out_gives_way_to_the_new_run(tmp_path):
  # Before: config-100.gin, kept when run B resumed run A, blocked the record of run C,
  # which trained the model_dir afresh to step 100 after A's checkpoints were moved out
  # (as the CheckpointError messages say to do): resuming C kept nothing of C's config.
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "run")
  os.makedirs(model_dir)
  runner = types.SimpleNamespace(model_dir=model_dir)

  def start(config):  # What Runner.train does first (chief), then it writes config.gin.
    experiment.Runner._keep_changed_config(runner, "config.gin", config)  # pylint: disable=protected-access
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
      f.write(config)

  def train_to(step):
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=3).save(
        checkpoint_number=step)

  def read(name):
    with open(os.path.join(model_dir, name)) as f:
      return f.read()

  start("lr = 0.1  # run A\n")
  train_to(100)
  start("lr = 0.2  # run B resumes A, then fails\n")
  assert read("config-100.gin") == "lr = 0.1  # run A\n"
  start("lr = 0.1  # run A again\n")  # B trained nothing: A's record stays.
  assert read("config-100.gin") == "lr = 0.1  # run A\n"
  moved = str(tmp_path / "moved_out")
  os.makedirs(moved)
  for path in glob.glob(os.path.join(model_dir, "ckpt-*")) + [
      os.path.join(model_dir, "checkpoint")]:
    shutil.move(path, moved)
  start("lr = 0.3  # run C, from scratch\n")
  # C's 100 steps take a while (TF's local file times have whole seconds).
  kept_time = os.stat(os.path.join(model_dir, "config-100.gin")).st_mtime - 60
  os.utime(os.path.join(model_dir, "config-100.gin"), (kept_time, kept_time))
  train_to(100)
  start("lr = 0.4  # run D resumes C\n")
  assert read("config-100.gin") == "lr = 0.3  # run C, from scratch\n"
  earlier = [read(os.path.basename(p)) for p in
             glob.glob(os.path.join(model_dir, "config-100.earlier*.gin"))]
  assert earlier == ["lr = 0.1  # run A\n"]
