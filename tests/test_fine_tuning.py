"""Fine-tuning from a checkpoint (`Experiment.init_checkpoint`): a backbone trained with
another number of classes initialises the model, the head starts afresh, mismatches in the
backbone are errors naming the variable; through `official.train` it happens once, before
the first step, and never on resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from official.modeling import assemblenet
from official.training import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "experiments", "tiny_smoke.gin")
# tiny_smoke.gin's network.
STRUCTURE = [[-1, 1], [-1, 1], [0, [0, 1], 8, 1, 1, 0], [1, [2], 16, 1, 2, 0],
             [2, [2, 3], 16, 1, 2, 0], [3, [4], 32, 1, 2, 0]]
NETWORK = dict(structure=STRUCTURE, edge_weights=None, depth=26, num_frames=4,
               image_size=32)


def _model(num_classes, seed, **kwargs):
  tf.keras.utils.set_random_seed(seed)
  args = dict(NETWORK, num_classes=num_classes)
  args.update(kwargs)
  return assemblenet.AssembleNet(**args)


def _randomise(model, seed):
  rng = np.random.default_rng(seed)
  for weight in model.weights:
    weight.assign(rng.normal(size=weight.shape).astype(weight.dtype))


def _save(model, directory):
  return checkpointing.model_checkpoint(model).write(os.path.join(directory, "ckpt-7"))


def _by_path(model):
  return {w.path: w.numpy() for w in model.weights}


@pytest.fixture(scope="module")
def kinetics_like(tmp_path_factory):
  """A 600-class source model with random weights, saved as official.train saves one."""
  source = _model(600, seed=1)
  _randomise(source, 2)
  return _by_path(source), _save(source, str(tmp_path_factory.mktemp("source")))


@pytest.mark.parametrize("modules", ["backbone", "all"])
def test_600_class_backbone_initialises_a_157_class_model_and_only_the_head_is_new(
    kinetics_like, modules):
  source, prefix = kinetics_like
  target = _model(157, seed=3)
  fresh = _by_path(target)
  report = checkpointing.initialize_from_checkpoint(target, prefix, modules)
  loaded = _by_path(target)
  head = ["head/classifier/kernel", "head/classifier/bias"]
  for path, value in loaded.items():
    if path in head:
      np.testing.assert_array_equal(value, fresh[path])  # as initialised, not loaded
    else:
      np.testing.assert_array_equal(value, source[path])
  assert sorted(report["not_loaded"]) == sorted(head)
  assert len(report["loaded"]) == len(loaded) - 2
  if modules == "all":
    assert "re-initialised: has shape (128, 600) in the checkpoint, (128, 157) in the model" in (
        report["not_loaded"]["head/classifier/kernel"])
  else:
    assert "init_checkpoint_modules='backbone'" in report["not_loaded"][head[0]]
  assert report["checkpoint"] == prefix and report["unused"] == sorted(head)


def test_all_modules_with_the_same_classes_load_the_head_too(kinetics_like):
  source, prefix = kinetics_like
  target = _model(600, seed=4)
  # A directory (relative, with a trailing slash): its latest checkpoint, recorded absolute.
  relative = os.path.relpath(os.path.dirname(prefix)) + os.sep
  report = checkpointing.initialize_from_checkpoint(target, relative, "all")
  assert report["checkpoint"] == prefix
  # The .index file a user sees names the same checkpoint.
  assert checkpointing.initialize_from_checkpoint(
      target, prefix + ".index", "all")["checkpoint"] == prefix
  for path, value in _by_path(target).items():
    np.testing.assert_array_equal(value, source[path])
  assert report["not_loaded"] == {} and report["unused"] == []


@pytest.mark.parametrize("kwargs,message", [
    # Node 3 narrower: its kernels have another shape.
    ({"structure": STRUCTURE[:3] + [[1, [2], 12, 1, 2, 0]] + STRUCTURE[4:]},
     r"variable node_3_blocks/.* has shape \(.*\) in the checkpoint, \(.*\) in the model"),
    # Another depth: blocks the checkpoint lacks.
    ({"depth": 38}, r"variable node_3_blocks/block_2/.* is not in the checkpoint"),
    # One node fewer: the checkpoint has backbone variables the model lacks.
    ({"structure": STRUCTURE[:4] + [[3, [2, 3], 16, 1, 2, 0]]},
     r"backbone variable\(s\) that the model lacks, e.g. \['node_5_"),
])
def test_a_backbone_mismatch_is_an_error_naming_the_variable(kinetics_like, kwargs,
                                                              message):
  _, prefix = kinetics_like
  target = _model(157, seed=5, **kwargs)
  before = _by_path(target)
  with pytest.raises(ValueError, match=message):
    checkpointing.initialize_from_checkpoint(target, prefix, "backbone")
  for path, value in _by_path(target).items():  # Nothing half-loaded.
    np.testing.assert_array_equal(value, before[path])


def test_bad_paths_and_modules(tmp_path, kinetics_like):
  with pytest.raises(FileNotFoundError, match="init_checkpoint .* is not a checkpoint"):
    checkpointing.initialize_from_checkpoint(_model(3, 0), str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match="init_checkpoint_modules"):
    checkpointing.initialize_from_checkpoint(_model(3, 0), kinetics_like[1], "head")
  foreign = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "foreign" / "ck"))
  with pytest.raises(ValueError, match="no model variables"):
    checkpointing.initialize_from_checkpoint(_model(3, 0), foreign)


def _train(model_dir, *bindings, returncode=0):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  args = [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={model_dir}",
          f"--gin_file={GIN}", "--gin_param=Experiment.train_steps = 2",
          "--gin_param=Experiment.checkpoint_interval = 2"]
  args += [f"--gin_param={b}" for b in bindings]
  result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == returncode, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_official_train_fine_tunes_once_and_resumes_from_its_own_checkpoint(
    tmp_path, kinetics_like):
  _, prefix = kinetics_like
  model_dir = tmp_path / "charades_like"
  bindings = [f"Experiment.init_checkpoint = '{prefix}'",
              "Experiment.init_checkpoint_modules = 'backbone'"]
  result = _train(model_dir, *bindings)
  assert "Initialised" in result.stderr and f"from {prefix}" in result.stderr
  report = json.loads((model_dir / "init_checkpoint.json").read_text())
  assert sorted(report["not_loaded"]) == ["head/classifier/bias", "head/classifier/kernel"]
  assert len(report["loaded"]) == len(_model(12, 0).weights) - 2
  (model_dir / "init_checkpoint.json").unlink()
  # Resumed (more steps): from its own checkpoint, without loading init_checkpoint again.
  result = _train(model_dir, *bindings, "Experiment.train_steps = 4")
  assert "Resuming from" in result.stderr and "Initialised" not in result.stderr
  assert not (model_dir / "init_checkpoint.json").exists()
  # A checkpoint of another network (depth 38 blocks it lacks): one error line, exit 2.
  result = _train(tmp_path / "other", *bindings, "build_model.depth = 38", returncode=2)
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "init_checkpoint" in errors[0] and "is not in the checkpoint" in errors[0]
