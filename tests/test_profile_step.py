"""`benchmarks/profile_step.op_times` on hand-made traces, and the XLA-compiled
representation flow counted in a tiny run."""

import json

import pytest

from benchmarks import profile_step
from tests.test_benchmark_threads import _run

try:
  from tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
except ImportError:
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top

MS = 10**9  # picoseconds


def _space(lines):
  """An XSpace with one host plane; `lines` maps a line name to (event name, start ms,
  duration ms) triples."""
  space = xplane_pb2.XSpace()
  plane = space.planes.add(name="/host:CPU")
  ids = {}
  for line_name, events in lines.items():
    line = plane.lines.add(name=line_name)
    for name, start, duration in events:
      if name not in ids:
        ids[name] = len(ids) + 1
        plane.event_metadata[ids[name]].name = name
      line.events.add(metadata_id=ids[name], offset_ps=int(start * MS),
                      duration_ps=int(duration * MS))
  return space


def test_graph_ops_xla_thunks_and_markers():
  space = _space({
      "tf_Compute/1": [("ExecutorState::Process", 0, 40), ("conv_a:Conv2D", 0, 3),
                       ("conv_b:Conv2D", 3, 2), ("relu:Relu", 5, 1),
                       ("end: wrapped_pad", 6, 1), ("ThunkExecutor::Execute", 7, 0.5)],
      # The intra-op pool: the XLA-compiled function's thunks, a loop body's nested ones
      # inside the first span, a second span partly overlapping the first.
      "tf_numa_-1_Eigen/2": [("ThunkExecutor::Execute", 10, 10),
                             ("ThunkExecutor::Execute", 12, 3),
                             ("ThunkExecutor::Execute", 18, 4),
                             ("while.3: fusion", 12, 1)],
      # Not an executor thread: its op-like names are not graph ops.
      "python": [("outer:Conv2D", 0, 50)],
  })
  totals = profile_step.op_times(space)
  assert totals["Conv2D"] == [pytest.approx(5e-3), 2]
  assert totals["Relu"] == [pytest.approx(1e-3), 1]
  # 0.5 ms on the executor thread, 10 + 2 ms (the overlap counted once) in the pool.
  assert totals[profile_step.XLA_OP_TYPE] == [pytest.approx(12.5e-3), 2]
  assert set(totals) == {"Conv2D", "Relu", profile_step.XLA_OP_TYPE}
  by_name = profile_step.op_times(space, by="name")
  assert by_name["conv_a:Conv2D"] == [pytest.approx(3e-3), 1]
  assert by_name[profile_step.XLA_OP_TYPE][0] == pytest.approx(12.5e-3)


@pytest.mark.slow
def test_the_representation_flow_is_counted():
  # demo_asnp has optical-flow stems: their TV-L1 iterations run XLA-compiled.
  lines = _run("benchmarks.profile_step",
               ["--mode=infer", "--warmup=1", "--steps=2", "--min_share=0"])
  shares = {line.split("|")[1].strip(): float(line.split("|")[3].strip().rstrip("%"))
            for line in lines if line.startswith("| ") and "%" in line}
  assert shares.get(profile_step.XLA_OP_TYPE, 0) > 1.0, lines  # > 1% of the op time
  record = json.loads(lines[-1])
  assert 0 < record["summed_op_s"] <= record["step_wall_s"]


def test_steps_and_batch_below_one_are_refused():
  with pytest.raises(ValueError, match="--steps and --batch must be at least 1"):
    profile_step.profile([], [], 2, 32, 1, "infer", False, "float32", 1, 0)
  with pytest.raises(ValueError, match="--steps and --batch must be at least 1"):
    profile_step.profile([], [], 2, 32, 0, "infer", False, "float32", 1, 2)
