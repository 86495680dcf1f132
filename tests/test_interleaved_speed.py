"""benchmarks/interleaved_speed.py's bookkeeping, with the benchmark runs replaced by a stub:
which environment each program gets, and the ratios it prints from the medians."""

import collections
import json
import sys

import pytest

from benchmarks import interleaved_speed

MEDIANS = {("before", "train"): 2.0, ("after", "train"): 1.8, ("port", "train"): 3.6,
           ("port_bfc", "train"): 3.0, ("before", "infer"): 0.5, ("after", "infer"): 0.45,
           ("port", "infer"): 1.5, ("port_bfc", "infer"): 1.2}


@pytest.fixture
def stubbed_runs(monkeypatch):
  calls = []

  def run(command, cwd, env):
    program = ("port" if "bench_port.py" in " ".join(command) else
               "before" if cwd == "/old" else "after")
    mode = "train" if "--mode=train" in command else "infer"
    calls.append((program, mode, env.get("TF_CPU_ALLOCATOR_USE_BFC"),
                  env.get("TF_CPU_BFC_MEM_LIMIT_IN_MB")))
    port_bfc = program == "port" and env.get("TF_CPU_ALLOCATOR_USE_BFC") == "true"
    median = MEDIANS["port_bfc" if port_bfc else program, mode]
    return {"median_s": median, "min_s": median, "peak_rss_mb": 100.0,
            "load_before": 1.0, "load_after": 1.0}

  monkeypatch.setattr(interleaved_speed, "_run", run)
  return calls


def _main(monkeypatch, tmp_path, extra):
  monkeypatch.setattr(sys, "argv", [
      "interleaved_speed", "--before=/old", "--after=/new", "--port_python=py",
      "--port_src=src", "--rounds=1", f"--out={tmp_path / 'runs.jsonl'}"] + extra)
  interleaved_speed.main()
  return [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]


def test_each_program_makes_its_own_allocator_choice(monkeypatch, tmp_path, stubbed_runs,
                                                     capsys):
  # A value in the caller's shell must not reach the port or the checkouts.
  monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")
  monkeypatch.setenv("TF_CPU_BFC_MEM_LIMIT_IN_MB", "1024")
  records = _main(monkeypatch, tmp_path, ["--port_bfc"])
  allocator_of = {(program, mode): bfc for program, mode, bfc, _ in stubbed_runs}
  assert len(stubbed_runs) == 8
  for mode in ("train", "infer"):
    assert allocator_of["before", mode] is None
    assert allocator_of["after", mode] is None
  port_runs = [(bfc, limit) for program, _, bfc, limit in stubbed_runs if program == "port"]
  assert collections.Counter(port_runs) == {(None, None): 2, ("true", None): 2}
  ports = {r["program"]: r["tf_cpu_allocator"] for r in records if "port" in r["program"]}
  assert ports == {"port": "default", "port_bfc": "bfc"}
  out = capsys.readouterr().out
  assert "after: training step / port's = 0.50, inference / port's = 0.30" in out
  assert "after: training step / port_bfc's = 0.60, inference / port_bfc's = 0.38" in out
  assert "after: training step / own inference = 4.00" in out
  assert "before: training step / own inference = 4.00" in out


def test_without_port_bfc_three_programs_run(monkeypatch, tmp_path, stubbed_runs, capsys):
  records = _main(monkeypatch, tmp_path, [])
  assert sorted({r["program"] for r in records}) == ["after", "before", "port"]
  out = capsys.readouterr().out
  assert "port_bfc" not in out
  assert "before: training step / port's = 0.56, inference / port's = 0.33" in out
