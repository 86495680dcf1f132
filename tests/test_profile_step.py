"""benchmarks/profile_step.py in a child process on a tiny configuration: the thread flags
take effect, and with one inter-op thread the ops' summed time fits in the step's."""

import json
import os
import subprocess
import sys

import pytest

from tests.test_model_speed import TINY_PARAMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_thread_flags_take_effect_and_one_inter_op_thread_runs_ops_one_at_a_time():
  command = [sys.executable, "-m", "benchmarks.profile_step",
             "--gin_file=gin/base/model_assemblenet_plus50.gin", "--frames=2", "--size=32",
             "--mode=train", "--warmup=1", "--steps=2", "--intra_op_threads=1",
             "--inter_op_threads=1"] + [f"--gin_param={p}" for p in TINY_PARAMS]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  record = json.loads(lines[-1])
  assert record["intra_op_threads"] == 1 and record["inter_op_threads"] == 1
  # One executor thread: op events never overlap, so their sum is within the wall time.
  assert 0 < record["summed_op_s"] <= record["step_wall_s"]
  assert lines[0] == "| op type | ms per step | share | count |"
  shares = [float(line.split("|")[3].strip().rstrip("%")) for line in lines[2:]
            if line.startswith("| ") and line.endswith("|") and "%" in line]
  assert shares and sum(shares) <= 100.0 + 1e-6
