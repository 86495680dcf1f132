"""The benchmarks' `--intra_op_threads` / `--inter_op_threads` flags take effect, in a child
process (TF's thread counts can be set only before its first op) on a tiny configuration.

With one thread of each, `profile_step`'s op times are each op's CPU work: no two ops
overlap, so they sum to at most the step's wall time.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.test_model_speed import TINY_PARAMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = ["--intra_op_threads=1", "--inter_op_threads=1"]


def _run(module, flags):
  command = ([sys.executable, "-m", module, "--gin_file=gin/base/model_assemblenet_plus50.gin",
              "--frames=2", "--size=32"] + flags + ONE_THREAD +
             [f"--gin_param={p}" for p in TINY_PARAMS])
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()


@pytest.mark.slow
def test_profile_step_runs_one_op_at_a_time_with_one_thread():
  lines = _run("benchmarks.profile_step", ["--mode=train", "--warmup=1", "--steps=2"])
  record = json.loads(lines[-1])
  assert record["intra_op_threads"] == 1 and record["inter_op_threads"] == 1
  # One executor thread: op events never overlap, so their sum is within the wall time.
  assert 0 < record["summed_op_s"] <= record["step_wall_s"]
  assert lines[0] == "| op type | ms per step | share | count |"
  shares = [float(line.split("|")[3].strip().rstrip("%")) for line in lines[2:]
            if line.startswith("| ") and line.endswith("|") and "%" in line]
  assert shares and sum(shares) <= 100.0 + 1e-6


@pytest.mark.slow
def test_conv_backward_reports_the_thread_counts_it_ran_with():
  lines = _run("benchmarks.conv_backward", ["--runs=5", "--warmup=1"])
  totals = json.loads(lines[-1])["totals"]
  assert totals["intra_op_threads"] == 1 and totals["inter_op_threads"] == 1
  assert totals["calls"] == sum(json.loads(line)["count"] for line in lines[:-1])
