"""`benchmarks/step_floor.py`: op kinds, the floor's arithmetic, and one tiny run in a child
process (thread counts are set before TF's first op)."""

import json
import subprocess
import sys

import pytest

from benchmarks import step_floor
from tests.test_benchmark_threads import ROOT, _run


@pytest.mark.parametrize("op_type, kind", [
    ("Conv2D", "convolution"), ("_FusedConv2D", "convolution"),
    ("Conv2DBackpropInput", "convolution"), ("Conv2DBackpropFilter", "convolution"),
    ("MatMul", "convolution"), ("_FusedMatMul", "convolution"),
    ("BatchMatMulV2", "convolution"), ("Einsum", "convolution"),
    ("_MklNativeConv2D", "convolution"), ("_MklNativeFusedConv2D", "convolution"),
    ("_MklNativeConv2DBackpropFilter", "convolution"), ("_MklMatMul", "convolution"),
    ("DepthwiseConv2dNative", "convolution"),
    ("FusedBatchNormV3", "batch_norm"), ("FusedBatchNormGradV3", "batch_norm"),
    ("_MklFusedBatchNormV3", "batch_norm"), ("_MklNativeFusedBatchNormGradV3", "batch_norm"),
    ("MaxPoolGrad", "rest"), ("Transpose", "rest"), ("ReluGrad", "rest"), ("Mul", "rest"),
    ("AddN", "rest"), ("Relu", "rest"), ("BiasAdd", "rest"),
])
def test_op_kinds_with_either_kernel_library(op_type, kind):
  assert step_floor.op_kind(op_type) == kind


def test_floor_is_three_convolutions_plus_training_batch_norm_plus_inference_rest():
  inference = {"_FusedConv2D": (0.5, 10), "Conv2D": (0.1, 2), "Mul": (0.05, 40),
               "MaxPool": (0.02, 1)}
  training = {"Conv2D": (1.2, 30), "MatMul": (0.6, 20), "FusedBatchNormV3": (0.2, 12),
              "FusedBatchNormGradV3": (0.3, 12), "MaxPoolGrad": (0.1, 1), "Mul": (0.2, 90)}
  record = step_floor.floor_record(inference, training, 0.8, 3.0)
  assert record["inference_convolution_op_s"] == pytest.approx(0.6)
  assert record["inference_batch_norm_op_s"] == 0
  assert record["inference_rest_op_s"] == pytest.approx(0.07)
  assert record["train_convolution_op_s"] == pytest.approx(1.8)
  assert record["train_batch_norm_op_s"] == pytest.approx(0.5)
  assert record["train_rest_op_s"] == pytest.approx(0.3)
  assert record["inference_op_s"] == pytest.approx(0.67)
  assert record["train_op_s"] == pytest.approx(2.6)
  assert record["floor_op_s"] == pytest.approx(3 * 0.6 + 0.5 + 0.07)
  assert record["step_to_inference"] == pytest.approx(2.6 / 0.67)
  assert record["step_to_inference_wall"] == pytest.approx(3.0 / 0.8)
  assert record["floor_to_inference"] == pytest.approx(2.37 / 0.67)
  assert record["step_to_floor"] == pytest.approx(2.6 / 2.37)
  assert record["convolution_ratio"] == pytest.approx(3.0)


def test_profiles_without_convolutions_are_refused():
  # An XLA-compiled step is one op: no kind can be told apart.
  with pytest.raises(ValueError, match="no convolution ops"):
    step_floor.floor_record({"_XlaRun": (0.5, 1)}, {"_XlaRun": (1.5, 1)}, 0.5, 1.5)


@pytest.mark.slow
def test_tiny_run_accounts_for_every_op():
  lines = _run("benchmarks.step_floor", ["--warmup=1", "--steps=2"])
  record = json.loads(lines[-1])
  assert record["intra_op_threads"] == 1 and record["inter_op_threads"] == 1
  for mode in ("inference", "train"):
    kinds = sum(record[f"{mode}_{kind}_op_s"] for kind in step_floor.KINDS)
    assert record[f"{mode}_op_s"] == pytest.approx(kinds)
    # One executor thread: ops never overlap, so op time is within the wall time.
    assert 0 < record[f"{mode}_op_s"] <= record[f"{mode}_wall_s"]
  assert record["inference_batch_norm_op_s"] == 0  # folded into the convolutions
  assert record["train_batch_norm_op_s"] > 0
  assert record["inference_convolution_op_s"] > 0
  assert record["floor_op_s"] == pytest.approx(
      3 * record["inference_convolution_op_s"] + record["train_batch_norm_op_s"] +
      record["inference_rest_op_s"])


def test_xla_is_refused_before_anything_runs():
  command = [sys.executable, "-m", "benchmarks.step_floor",
             "--gin_file=gin/base/model_assemblenet_plus50.gin", "--frames=2", "--size=32",
             "--xla"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode != 0
  assert "--xla: an XLA-compiled step runs as one op" in result.stderr
