"""Distribution strategies: one device, mirrored (one host), multi-worker (TF_CONFIG), TPU."""

import json
import os
import threading

from absl import logging
import tensorflow as tf

STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")


def _local_devices():
  """The GPUs, or the (possibly logical) CPUs when there is no GPU."""
  gpus = tf.config.list_logical_devices("GPU")
  return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]


def _connect_to_tpu(tpu, timeout_s):
  """Resolves and initialises a TPU in a helper thread, so an unreachable address fails after
  `timeout_s` instead of hanging (gRPC retries for minutes)."""
  result = {}

  def connect():
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
      result["resolver"] = resolver
    except Exception as e:  # pylint: disable=broad-except
      result["error"] = e

  thread = threading.Thread(target=connect, daemon=True, name="tpu_connect")
  thread.start()
  thread.join(timeout_s)
  where = f"--tpu={tpu!r}" if tpu else "a local TPU (no --tpu given)"
  if thread.is_alive():
    raise RuntimeError(f"No TPU reachable at {where} within {timeout_s:g} s. Check the TPU "
                       "name or grpc:// address and that the TPU is up.")
  if "error" in result:
    raise RuntimeError(f"No TPU reachable at {where}: {type(result['error']).__name__}: "
                       f"{result['error']}") from result["error"]
  return result["resolver"]


def build_strategy(name, tpu=None, tpu_timeout_s=10.0):
  """Returns the `tf.distribute.Strategy` called `name` (one of `STRATEGIES`).

  Args:
    name: 'one_device' (GPU:0 if there is a GPU, else CPU:0), 'mirrored' (every local GPU, or
      every logical CPU device without GPUs), 'multi_worker' (cluster from `TF_CONFIG`), 'tpu'.
    tpu: TPU name or grpc:// address for 'tpu'; None or '' looks for a local TPU.
    tpu_timeout_s: how long to wait for the TPU before failing.
  """
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(_local_devices()[0])
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices=_local_devices())
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      logging.warning("--strategy=multi_worker without TF_CONFIG: running as a single worker.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    return tf.distribute.TPUStrategy(_connect_to_tpu(tpu, tpu_timeout_s))
  raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {name!r}")


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and reproducibility files."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  if task_type == "chief":
    return True
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def task_id(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  return getattr(resolver, "task_id", 0) or 0


def num_workers(strategy):
  """Processes that feed the strategy's replicas: the tasks of a multi-worker cluster
  (chief and workers, from TF_CONFIG), else 1."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def all_succeeded(strategy, succeeded):
  """Waits for every worker to reach this call; True when each passed `succeeded=True`.

  A barrier with a verdict for multi-worker clusters (one all-reduce of each worker's
  failure flag), so that work done by the chief alone (preparing the data) is finished
  before the others go on, and its failure stops them instead of leaving them waiting in
  a later collective. With one worker it returns `succeeded` at once.
  """
  if num_workers(strategy) == 1:
    return succeeded
  failed = strategy.run(lambda: tf.constant(0.0 if succeeded else 1.0))
  return float(strategy.reduce(tf.distribute.ReduceOp.SUM, failed, axis=None)) == 0.0


def run_on_chief(strategy, fn, failure_message):
  """Runs `fn()` on the chief alone, then waits for every worker (`all_succeeded`).

  For work that one process must do before the others go on (take the model_dir lock,
  prepare the data, write the export). Whatever `fn` raises, the chief still reaches the
  barrier, so the other workers stop with `failure_message` instead of waiting in a
  collective that the chief never joins.

  Returns:
    `fn()`'s result on the chief, None on the other workers.

  Raises:
    What `fn` raised, on the chief; RuntimeError(`failure_message`) on the others when the
    chief's `fn` failed.
  """
  result, error = None, None
  if is_chief(strategy):
    try:
      result = fn()
    except Exception as e:  # pylint: disable=broad-except  (raised again below)
      error = e
  succeeded = all_succeeded(strategy, error is None)
  if error is not None:
    raise error
  if not succeeded:
    raise RuntimeError(failure_message)
  return result
