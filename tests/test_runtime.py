"""Process settings the package chooses for TF: the CPU allocator and the thread counts.

Each case runs in a child process: TF reads `TF_CPU_ALLOCATOR_USE_BFC` when it creates its
CPU allocator (the first op) and takes thread counts only before its first op, so the
pytest process, where TF already runs, cannot show either.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from official import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BFC_LOG_LINE = "Using BFCAllocator"


def _child(code, **env_overrides):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
  # process_state.cc logs which CPU allocator it built at verbosity 2.
  env.update(TF_CPP_VMODULE="process_state=2", TF_CPP_MIN_LOG_LEVEL="0")
  env.update(env_overrides)
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_importing_official_selects_tfs_bfc_cpu_allocator_with_eigens_kernels():
  result = _child("""
      import official
      import tensorflow as tf
      print(float(tf.reduce_sum(tf.ones([4]))))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE in result.stderr
  assert result.stdout.strip() == "4.0"


def test_importing_official_after_tensorflow_still_selects_it():
  # TF builds its CPU allocator at the first op, not at import.
  result = _child("""
      import tensorflow as tf
      import keras
      import official
      print(float(tf.reduce_sum(tf.ones([4]))))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE in result.stderr


def test_with_onednn_tfs_default_allocator_stays():
  # With oneDNN's kernels BFC brought no speed and a higher training peak (+130 MiB).
  result = _child("""
      import os
      import official
      import tensorflow as tf
      tf.ones([4]).numpy()
      print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
  """, TF_ENABLE_ONEDNN_OPTS="1")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.strip() == "None"


@pytest.mark.parametrize("choice", ["0", "false"])
def test_the_users_allocator_choice_is_kept(choice):
  result = _child("""
      import os
      import official
      import tensorflow as tf
      tf.ones([4]).numpy()
      print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
  """, TF_CPU_ALLOCATOR_USE_BFC=choice, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.strip() == choice


def test_importing_official_after_an_op_leaves_the_variable_unset_and_warns():
  # TF has built its allocator; setting the variable now would only mislead.
  result = _child("""
      import os
      import tensorflow as tf
      tf.data.Dataset.range(3)  # an op: TF's CPU allocator exists from here on
      import official
      print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.strip() == "None"
  assert "TF_CPU_ALLOCATOR_USE_BFC" in result.stderr and "before" in result.stderr


def test_the_pools_limit_is_the_machines_memory_unless_set():
  # TF's own limit is 64 GiB whatever the machine has: past it, BFC raises an OOM error
  # where malloc would have served the tensor.
  physical_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
  result = _child("""
      import os
      import official
      print(os.environ.get("TF_CPU_BFC_MEM_LIMIT_IN_MB"))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert result.stdout.strip() == str(physical_mib)
  result = _child("""
      import os
      import official
      print(os.environ.get("TF_CPU_BFC_MEM_LIMIT_IN_MB"))
  """, TF_ENABLE_ONEDNN_OPTS="0", TF_CPU_BFC_MEM_LIMIT_IN_MB="512")
  assert result.stdout.strip() == "512"


@pytest.mark.parametrize("value,allocator", [
    ("true", "bfc"), ("TRUE", "bfc"), ("1", "bfc"), ("false", "default"), ("0", "default"),
    # TF logs a parse error for these and keeps its default.
    ("yes", "default"), ("", "default"), ("2", "default"), (" true", "default"),
    (None, "default")])
def test_cpu_allocator_reads_the_variable_as_tf_does(monkeypatch, value, allocator):
  if value is None:
    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
  else:
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", value)
  assert runtime.cpu_allocator() == allocator


def test_training_records_the_cpu_allocator_in_versions_json():
  from official.training import reproducibility  # pylint: disable=g-import-not-at-top
  record = reproducibility.versions()
  assert record["tf_cpu_allocator"] == runtime.cpu_allocator()
  assert record["onednn_kernels"] == runtime.onednn_kernels()


def test_train_flags_set_tfs_thread_counts():
  # A missing gin file ends main() with exit status 2 after the thread counts are set.
  result = _child("""
      from absl import flags
      import tensorflow as tf
      from official import train
      flags.FLAGS(["train", "--model_dir=/nonexistent/model_dir", "--gin_file=/nonexistent.gin",
                   "--intra_op_threads=1", "--inter_op_threads=3"])
      status = train.main(["train"])
      print(status, tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())
  """)
  assert result.stdout.strip().splitlines()[-1] == "2 1 3"


def test_thread_counts_too_late_name_the_flags():
  tf.ones([1]).numpy()  # TF's context runs in this process.
  current = tf.config.threading.get_intra_op_parallelism_threads()
  with pytest.raises(RuntimeError, match="--intra_op_threads"):
    runtime.set_thread_counts(intra_op_threads=current + 1, inter_op_threads=0)


def test_thread_counts_reject_negative_values():
  with pytest.raises(ValueError, match="--inter_op_threads"):
    runtime.set_thread_counts(intra_op_threads=0, inter_op_threads=-1)


def test_zero_thread_counts_leave_tfs_defaults():
  before = (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())
  runtime.set_thread_counts(intra_op_threads=0, inter_op_threads=0)
  assert (tf.config.threading.get_intra_op_parallelism_threads(),
          tf.config.threading.get_inter_op_parallelism_threads()) == before
