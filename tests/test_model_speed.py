"""benchmarks/model_speed.py on a tiny configuration: one JSON line, consistent fields.

No timing is asserted; only that the fields exist and agree with each other.
"""

import os

import pytest

from benchmarks import model_speed

TINY_PARAMS = [
    "build_model.structure = 'demo_asnp'",
    "build_model.depth = 26",
    "build_model.edge_weights = None",
    "build_model.num_classes = 5",
]
KEYS = {"median_s", "min_s", "times_s", "clips_per_s", "peak_rss_mb", "gflops_per_clip",
        "forward_gflops_per_clip", "achieved_gflops_per_s", "batch", "mode", "precision",
        "xla", "load_avg_1m", "input_shapes"}


@pytest.fixture
def run_main(run_json_main):
  def run(argv):
    return run_json_main(model_speed.main, [
        "model_speed", "--gin_file=gin/base/model_assemblenet_plus50.gin"] +
        [f"--gin_param={p}" for p in TINY_PARAMS] +
        ["--frames=2", "--size=16", "--runs=5", "--warmup=1"] + argv)
  return run


def _check_consistent(record, batch):
  assert KEYS <= set(record)
  assert len(record["times_s"]) == record["runs"] == 5
  assert record["min_s"] == min(record["times_s"]) <= record["median_s"]
  assert record["median_s"] == sorted(record["times_s"])[2]
  assert record["clips_per_s"] == pytest.approx(batch / record["median_s"])
  assert record["achieved_gflops_per_s"] == pytest.approx(
      record["gflops_per_clip"] * record["clips_per_s"])
  assert record["forward_gflops_per_clip"] > 0 and record["peak_rss_mb"] > 0
  # The allocator and kernels in effect are recorded.
  bfc = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("true", "1")
  assert record["tf_cpu_allocator"] == ("bfc" if bfc else "default")
  assert record["onednn_kernels"] in (True, False)


@pytest.mark.slow
def test_inference_with_ceiling(run_main):
  record = run_main(["--batch=2", "--ceiling", "--ceiling_size=64"])
  _check_consistent(record, 2)
  assert record["mode"] == "infer" and record["precision"] == "float32"
  assert record["gflops_per_clip"] == record["forward_gflops_per_clip"]
  assert record["input_shapes"] == {"rgb": [2, 16, 16, 3], "objects": [2, 16, 16]}
  assert record["ceiling_size"] == 64 and record["ceiling_gflops_per_s"] > 0
  assert record["fraction_of_ceiling"] == pytest.approx(
      record["achieved_gflops_per_s"] / record["ceiling_gflops_per_s"])


@pytest.mark.slow
def test_bfloat16_training_step_with_object_ids(run_main):
  record = run_main(["--mode=train", "--precision=bfloat16"])
  _check_consistent(record, 1)
  assert record["mode"] == "train" and record["precision"] == "bfloat16"
  assert record["input_shapes"]["objects"] == [2, 16, 16]
  # Training counts forward + backward as three forward passes.
  assert record["gflops_per_clip"] == pytest.approx(3 * record["forward_gflops_per_clip"])
  assert "ceiling_gflops_per_s" not in record


def test_fewer_than_five_runs_are_rejected():
  with pytest.raises(ValueError, match="at least 5"):
    model_speed.benchmark([], [], None, None, 1, "infer", False, "float32", 4, 1, False)
