"""Process-wide TensorFlow settings the package chooses: the CPU allocator, thread counts.

**CPU allocator.** Importing `official` sets `TF_CPU_ALLOCATOR_USE_BFC=true` unless the
variable is already set, so TF serves CPU tensors from its best-fit-with-coalescing (BFC)
pool (`tensorflow/core/common_runtime/process_state.cc`, growing on demand up to
`TF_CPU_BFC_MEM_LIMIT_IN_MB`, 64 GiB by default) instead of the C library's `malloc`. TF
reads the variable when it creates its CPU allocator, at the first op, so the setting
holds when `official` is imported after TensorFlow but before any op has run. The pool
keeps freed memory for the next tensor; `malloc` hands large blocks back to the kernel and
gets them again as fresh pages, which the kernel faults in and zeroes on every step. With
Eigen's kernels on a 2-core VM (`docs/performance.md`, eighth session) full_asnp50's
inference step took 13% less time and its training step 3% less (7.5% less CPU work on
one thread), and the training peak RSS varied less; with oneDNN both were unchanged. The
pool is not returned to the system while the process runs: its resident size stays at the
largest working set the process has had. To keep TF's default allocator, set
`TF_CPU_ALLOCATOR_USE_BFC=false` before importing `official`.

**Threads.** `set_thread_counts` applies the trainer's `--intra_op_threads` /
`--inter_op_threads` flags (0 keeps TF's default, one thread per core for each).
"""

import os

ALLOCATOR_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"


def prefer_bfc_cpu_allocator():
  """Sets `TF_CPU_ALLOCATOR_USE_BFC=true` unless the user has set it (see the module doc).

  Returns:
    The variable's value in effect, a str.
  """
  return os.environ.setdefault(ALLOCATOR_VARIABLE, "true")


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
