"""Process-wide TensorFlow settings the package chooses: the CPU allocator, thread counts.

**CPU allocator.** With TF's Eigen CPU kernels (oneDNN off: `TF_ENABLE_ONEDNN_OPTS=0`, or
TF's default on CPUs without AVX512_VNNI, AVX512_BF16 or AMX), the package's commands
(`official.train`, `official.predict`, `official.demo`, the search, the tools and the
benchmarks) call `prefer_bfc_cpu_allocator()` first, which sets
`TF_CPU_ALLOCATOR_USE_BFC=true` unless the variable is already set. TF then serves CPU
tensors from its best-fit-with-coalescing (BFC) pool
(`tensorflow/core/common_runtime/process_state.cc`) instead of the C library's `malloc`.
Importing `official` changes nothing: a script of your own gets the pool by calling the
function before TF's first op, or by setting the variable.
- Why: the pool keeps freed memory for the next tensor, where `malloc` hands large blocks
  back to the kernel and gets them again as fresh pages, faulted in and zeroed on every
  step. On a 2-core VM with Eigen (`docs/performance.md`, eighth session) full_asnp50's
  inference step took 10-13% less time, its training step about the same, and the
  training peak RSS stopped varying (3.8-4.0 GiB in every run, against up to 4.7 GiB).
- Why not with oneDNN: there BFC changed no step time and raised the training peak by
  about 130 MiB, so TF's default stays.
- The cost: the pool is not returned to the system while the process runs, and with
  tensors of many different shapes (e.g. eager work on videos of varying sizes) it holds
  more memory than `malloc` does. `docs/performance.md` has the figures.
- When: TF reads the variable when it creates its CPU allocator, at its first op (a
  `tf.data` dataset counts). Called after an eager op, the function leaves the variable
  unset and logs a warning; a TF1 `Session` run before it is not detected.
- The limit: TF caps the pool at `TF_CPU_BFC_MEM_LIMIT_IN_MB`, 64 GiB by default whatever
  the machine has, and past it raises an out-of-memory error where `malloc` would have
  served the tensor. Whenever BFC is in effect (chosen here or by you) and that variable is
  unset, it is set to the machine's physical memory; if that cannot be read, the package
  does not choose BFC.
- Child processes inherit both variables, whatever kernels they run.
Set `TF_CPU_ALLOCATOR_USE_BFC` yourself (`true` or `false`) to choose either way.

**Threads.** `set_thread_counts` applies the trainer's `--intra_op_threads` /
`--inter_op_threads` flags (0 keeps TF's default, one thread per core for each).
"""

import os
import sys

from absl import logging

ALLOCATOR_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"
LIMIT_VARIABLE = "TF_CPU_BFC_MEM_LIMIT_IN_MB"


def onednn_kernels():
  """Whether TF runs oneDNN's CPU kernels in this process: True, False (Eigen's) or None.

  TF's query (`IsMklEnabled`) reads `TF_ENABLE_ONEDNN_OPTS` and the CPU's features. It is
  not public; None means it is missing, and callers then keep TF's defaults. Importing
  TensorFlow for it does not create TF's allocator.
  """
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def _tf_has_run_an_op():
  """Whether TF's eager context exists in this process, i.e. TF has run an op (and so
  created its CPU allocator). False when TensorFlow is not imported yet."""
  if "tensorflow" not in sys.modules:
    return False
  try:
    from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
    current = context.context_safe()
    return current is not None and current._context_handle is not None  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False


def _physical_memory_mib():
  """The machine's physical memory in MiB, or None where the system does not say."""
  try:
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
  except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
    return None
  if pages <= 0 or page_size <= 0:
    return None
  return pages * page_size // 2**20


def prefer_bfc_cpu_allocator():
  """Chooses TF's BFC pool for CPU tensors with Eigen's kernels, unless the user has chosen.

  Call first thing in a command, before TF's first op; see the module doc for why, when,
  and why not with oneDNN's kernels. Sets `TF_CPU_ALLOCATOR_USE_BFC=true` when the
  variable is unset, TF runs Eigen's kernels, no eager op has run and the machine's memory
  can be read; and sets `TF_CPU_BFC_MEM_LIMIT_IN_MB` to that memory whenever BFC is in
  effect and the limit is unset. Imports TensorFlow (to ask which kernels it runs).

  Returns:
    The allocator variable's value in effect (a str), or None where TF's default stays.
  """
  memory_mib = _physical_memory_mib()
  if (ALLOCATOR_VARIABLE not in os.environ and onednn_kernels() is False and
      memory_mib is not None):
    if _tf_has_run_an_op():
      logging.warning(
          "TensorFlow has already run an op, so its CPU allocator is chosen and %s cannot "
          "take effect: TF's default (malloc) stays. Call "
          "official.runtime.prefer_bfc_cpu_allocator() before any TF op, or set %s=true "
          "in the environment, for TF's BFC pool (see official/runtime.py).",
          ALLOCATOR_VARIABLE, ALLOCATOR_VARIABLE)
      return None
    os.environ[ALLOCATOR_VARIABLE] = "true"
  if cpu_allocator() == "bfc" and LIMIT_VARIABLE not in os.environ and memory_mib:
    os.environ[LIMIT_VARIABLE] = str(memory_mib)
  return os.environ.get(ALLOCATOR_VARIABLE)


def cpu_allocator():
  """The CPU allocator TF builds from `TF_CPU_ALLOCATOR_USE_BFC`: 'bfc' or 'default'.

  Read as TF reads it (`ReadBoolFromEnvVar`): 'true' or '1' in any case mean BFC; unset,
  'false', '0' and anything else (TF logs a parse error) mean its default. It says what
  TF builds at its first op, not what it built if the variable changed after that.
  """
  value = os.environ.get(ALLOCATOR_VARIABLE)
  return "bfc" if value is not None and value.lower() in ("true", "1") else "default"


def set_thread_counts(intra_op_threads, inter_op_threads):
  """Sets TF's intra-op and inter-op thread counts; 0 keeps TF's default for that pool.

  Intra-op threads split one op's work (a conv's tiles); inter-op threads run independent
  ops at once. Call before TF runs its first op.

  Args:
    intra_op_threads: int >= 0, the `--intra_op_threads` flag.
    inter_op_threads: int >= 0, the `--inter_op_threads` flag.

  Raises:
    ValueError: a negative count.
    RuntimeError: TF has already run an op with other counts; it names the flags and says
      to set them at start-up.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (importing `official` stays light)

  requests = (("--intra_op_threads", intra_op_threads,
               tf.config.threading.get_intra_op_parallelism_threads,
               tf.config.threading.set_intra_op_parallelism_threads),
              ("--inter_op_threads", inter_op_threads,
               tf.config.threading.get_inter_op_parallelism_threads,
               tf.config.threading.set_inter_op_parallelism_threads))
  for flag, count, _, _ in requests:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
      raise ValueError(f"{flag} must be an int >= 0 (0: TF's default). Received: {count!r}")
  for flag, count, get, set_ in requests:
    if not count or get() == count:
      continue
    try:
      set_(count)
    except RuntimeError as e:
      raise RuntimeError(
          f"{flag}={count} cannot take effect: TensorFlow has already run an op in this "
          f"process with {get() or 'its default'} threads ({e}). Set the thread counts at "
          "start-up, before any model is built or tensor created.") from e
