r"""Op-level profile of one model step: time per TF op type, largest first.

  python -m benchmarks.profile_step --gin_file=gin/base/model_assemblenet_plus50.gin \
      --frames=8 --size=224 --batch=1 --mode=train

Builds the model and the step exactly as `benchmarks/model_speed.py` does (same flags:
`--gin_file`, `--gin_param`, `--frames`, `--size`, `--batch`, `--mode`, `--precision`,
`--xla`, `--intra_op_threads`, `--inter_op_threads`), runs `--warmup` untimed steps, then
`--steps` steps under TF's profiler (`tf.profiler.experimental`), and reads the trace back:
every op executed by TF's graph executor is one event `name:OpType` on an executor thread,
whose duration is the op's wall time (its intra-op work runs in the Eigen/oneDNN pool
meanwhile). Durations are summed per op type over all executor threads (with inter-op
parallelism two ops may overlap, so the sum can exceed the step's wall time) and divided
by `--steps`.

Prints a Markdown table (op type, ms per step, share of the summed op time, count) of the
op types above `--min_share`, with `--top_ops=N` a table of the N slowest single ops, then
one JSON line with the totals, the load average and the thread counts in effect. With
`--inter_op_threads=1` no two ops overlap, and the table is the CPU work of each op type
at `--intra_op_threads` threads.
"""

import collections
import glob
import json
import os
import re
import shutil
import tempfile
import time

from absl import app
from absl import flags
import gin
import keras
import tensorflow as tf

from benchmarks import model_speed
from official import runtime
from official.modeling import builders

FLAGS = flags.FLAGS
_STEPS = flags.DEFINE_integer("steps", 1, "Profiled steps (the table is per step).")
_MIN_SHARE = flags.DEFINE_float("min_share", 0.005, "Smallest share of op time listed.")
_TOP_OPS = flags.DEFINE_integer("top_ops", 0, "Also list the N slowest single ops.")


def _xspace(logdir):
  """The profiler's XSpace proto written under `logdir`."""
  try:
    from tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  except ImportError:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  return space


# XLA-compiled functions inside the graph (the representation flow's TV-L1 iterations,
# `representation_flow._tvl1_xla`) run as XLA thunks, not as graph ops: the trace has no
# `name:OpType` event for them, only `ThunkExecutor::Execute` spans, on the executor's and
# the intra-op pool's threads. Their time is this pseudo op type.
XLA_OP_TYPE = "XlaThunks"
_THUNKS = "ThunkExecutor::Execute"
_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def op_times(space, by="type"):
  """`{op type (or op name, by='name'): (seconds, count)}` summed over the graph executor's
  threads, plus `XLA_OP_TYPE`: the XLA thunks' time on every host thread (outermost spans
  only, so a loop body's nested thunks count once)."""
  totals = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    for line in plane.lines:
      executor = line.name.startswith(("tf_Compute", "tf_inter"))
      thunks_end = -1
      for event in sorted(line.events, key=lambda event: event.offset_ps):
        name = plane.event_metadata[event.metadata_id].name
        if name == _THUNKS:
          end = event.offset_ps + event.duration_ps
          if end > thunks_end:
            totals[XLA_OP_TYPE][0] += (end - max(event.offset_ps, thunks_end)) * 1e-12
            totals[XLA_OP_TYPE][1] += event.offset_ps >= thunks_end
            thunks_end = end
          continue
        if not executor or ":" not in name.replace("::", ""):
          continue  # executor bookkeeping (ExecutorState::Process, callbacks)
        op_type = name.rsplit(":", 1)[1]
        if not _OP_TYPE.match(op_type):
          continue  # XLA's markers inside thunks (' wrapped_pad', ' while.3')
        key = op_type if by == "type" else name
        totals[key][0] += event.duration_ps * 1e-12
        totals[key][1] += 1
  return totals


def profile(gin_files, gin_params, frames, size, batch, mode, xla, precision, warmup, steps,
            seed=0):
  """Returns (`{op type: (seconds per step, count per step)}`, the same by op name, wall
  seconds per step).

  Raises:
    ValueError: when `steps` or `batch` is below 1.
  """
  if steps < 1 or batch < 1:
    raise ValueError(f"--steps and --batch must be at least 1. Received: steps={steps}, "
                     f"batch={batch}")
  params = model_speed.model_bindings(gin_params, frames, size)
  gin.parse_config_files_and_bindings(gin_files, params, skip_unknown=True)
  keras.mixed_precision.set_global_policy(model_speed.POLICIES[precision])
  keras.utils.set_random_seed(seed)
  model = builders.build_model()
  inputs = model_speed.random_inputs(model, batch, seed)
  step = model_speed.make_step(model, mode, xla, model.output.shape[-1], batch, seed)
  for _ in range(max(warmup, 1)):
    step(inputs).numpy()
  logdir = tempfile.mkdtemp(prefix="profile_step_")
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  for _ in range(steps):
    step(inputs).numpy()
  wall = (time.perf_counter() - start) / steps
  tf.profiler.experimental.stop()
  space = _xspace(logdir)
  shutil.rmtree(logdir, ignore_errors=True)
  per_step = lambda totals: {k: (s / steps, c / steps) for k, (s, c) in totals.items()}
  return per_step(op_times(space)), per_step(op_times(space, by="name")), wall


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  model_speed.apply_thread_flags()
  per_op, per_name, wall = profile(FLAGS.gin_file, FLAGS.gin_param, model_speed._FRAMES.value,  # pylint: disable=protected-access
                         model_speed._SIZE.value, model_speed._BATCH.value,  # pylint: disable=protected-access
                         model_speed._MODE.value, model_speed._XLA.value,  # pylint: disable=protected-access
                         model_speed._PRECISION.value, model_speed._WARMUP.value,  # pylint: disable=protected-access
                         _STEPS.value, model_speed._SEED.value)  # pylint: disable=protected-access
  total = sum(seconds for seconds, _ in per_op.values())
  print("| op type | ms per step | share | count |")
  print("|---|---|---|---|")
  for op_type, (seconds, count) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
    if seconds / total >= _MIN_SHARE.value:
      print(f"| {op_type} | {seconds * 1e3:.0f} | {100 * seconds / total:.1f}% | {count:g} |")
  if _TOP_OPS.value:
    print(f"\n| op (name:type), top {_TOP_OPS.value} | ms per step | share |")
    print("|---|---|---|")
    for name, (seconds, _) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[
        :_TOP_OPS.value]:
      print(f"| {name} | {seconds * 1e3:.0f} | {100 * seconds / total:.1f}% |")
  print(json.dumps({"mode": model_speed._MODE.value, "step_wall_s": wall,  # pylint: disable=protected-access
                    "summed_op_s": total, "load_avg": os.getloadavg(),
                    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}))


if __name__ == "__main__":
  app.run(main)
