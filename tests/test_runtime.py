"""Process settings the package chooses for TF: the CPU allocator and the thread counts.

Each case runs in a child process: TF reads `TF_CPU_ALLOCATOR_USE_BFC` when it creates its
CPU allocator (the first op) and takes thread counts only before its first op, so the
pytest process, where TF already runs, cannot show either.
"""

import ast
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
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB")}
  # process_state.cc logs which CPU allocator it built at verbosity 2.
  env.update(TF_CPP_VMODULE="process_state=2", TF_CPP_MIN_LOG_LEVEL="0")
  env.update(env_overrides)
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


PREFER = """
    import os
    import tensorflow as tf
    from official import runtime
    print(runtime.prefer_bfc_cpu_allocator())
    tf.ones([4]).numpy()
    print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), os.environ.get("TF_CPU_BFC_MEM_LIMIT_IN_MB"))
"""
PHYSICAL_MIB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def test_importing_official_leaves_tensorflow_alone():
  # A library import: no TensorFlow loaded, no variable set, TF's default allocator.
  result = _child("""
      import os, sys
      import official
      from official import runtime
      print("tensorflow" in sys.modules, os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
      import tensorflow as tf
      tf.ones([4]).numpy()
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert result.stdout.strip() == "False None"
  assert BFC_LOG_LINE not in result.stderr


def test_commands_select_tfs_bfc_pool_with_eigens_kernels():
  result = _child(PREFER, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE in result.stderr
  assert result.stdout.split() == ["true", "true", str(PHYSICAL_MIB)]


def test_with_onednn_tfs_default_allocator_stays():
  # With oneDNN's kernels BFC brought no speed and a higher training peak (+130 MiB).
  result = _child(PREFER, TF_ENABLE_ONEDNN_OPTS="1")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.split() == ["None", "None", "None"]


@pytest.mark.parametrize("choice", ["0", "false"])
def test_the_users_allocator_choice_is_kept(choice):
  result = _child(PREFER, TF_CPU_ALLOCATOR_USE_BFC=choice, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.split() == [choice, choice, "None"]


def test_a_user_chosen_pool_gets_the_machines_memory_as_its_limit():
  # TF's own limit is 64 GiB whatever the machine has: past it, BFC raises an OOM error
  # where malloc would have served the tensor. With oneDNN too, if the user chose BFC.
  result = _child(PREFER, TF_CPU_ALLOCATOR_USE_BFC="TRUE", TF_ENABLE_ONEDNN_OPTS="1")
  assert BFC_LOG_LINE in result.stderr
  assert result.stdout.split() == ["TRUE", "TRUE", str(PHYSICAL_MIB)]
  result = _child(PREFER, TF_ENABLE_ONEDNN_OPTS="0", TF_CPU_BFC_MEM_LIMIT_IN_MB="512")
  assert result.stdout.split() == ["true", "true", "512"]


@pytest.mark.parametrize("failure", [
    "raise ValueError('unrecognized configuration name')", "raise OSError(22, 'invalid')",
    "return -1"])
def test_unreadable_memory_keeps_tfs_default_without_raising(failure):
  result = _child(textwrap.dedent(f"""
      import os
      real_sysconf = os.sysconf
      def sysconf(name):
        if name == "SC_PHYS_PAGES":
          {failure}
        return real_sysconf(name)
      os.sysconf = sysconf
  """) + textwrap.dedent(PREFER), TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.split() == ["None", "None", "None"]


def test_a_late_call_leaves_the_variable_unset_and_warns():
  # TF has built its allocator; setting the variable now would only mislead.
  result = _child("""
      import os
      import tensorflow as tf
      tf.data.Dataset.range(3)  # an op: TF's CPU allocator exists from here on
      from official import runtime
      print(runtime.prefer_bfc_cpu_allocator(), os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert BFC_LOG_LINE not in result.stderr
  assert result.stdout.strip() == "None None"
  assert "TF_CPU_ALLOCATOR_USE_BFC" in result.stderr and "before any TF op" in result.stderr


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


def test_train_sets_tfs_thread_counts_and_allocator():
  # A missing gin file ends main() with exit status 2 after the process is set up.
  result = _child("""
      import os
      from absl import flags
      import tensorflow as tf
      from official import train
      flags.FLAGS(["train", "--model_dir=/nonexistent/model_dir", "--gin_file=/nonexistent.gin",
                   "--intra_op_threads=1", "--inter_op_threads=3"])
      status = train.main(["train"])
      print(status, tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
            os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
  """, TF_ENABLE_ONEDNN_OPTS="0")
  assert result.stdout.strip().splitlines()[-1] == "2 1 3 true"


@pytest.mark.parametrize("module", [
    "official.train", "official.predict", "official.demo", "official.search.__main__",
    "official.tools.ablate", "official.tools.extract_features", "benchmarks.model_speed",
    "benchmarks.profile_step", "benchmarks.conv_backward", "benchmarks.input_speed",
    "benchmarks.resume_speed", "benchmarks.step_floor"])
def test_every_command_chooses_the_allocator_first(module):
  # The commands that run TF ops choose before their first op, so the benchmarks measure
  # what the trainer runs with.
  # Read, not imported: several of these define the same absl flags.
  path = os.path.join(ROOT, *module.split(".")) + ".py"
  with open(path, encoding="utf-8") as f:
    text = f.read()
  main = next(node for node in ast.parse(text).body
              if isinstance(node, ast.FunctionDef) and node.name == "main")
  source = ast.get_source_segment(text, main)
  body = [line.strip() for line in source.splitlines()[1:] if line.strip()]
  call = "runtime.prefer_bfc_cpu_allocator()"
  position = next(i for i, line in enumerate(body) if line.startswith(call))
  assert all(not line.startswith(("tf.", "runtime.set_thread", "apply_thread", "model_speed."))
             for line in body[:position]), body[:position + 1]


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
