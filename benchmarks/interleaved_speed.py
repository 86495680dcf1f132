r"""Before / after / TF2-port step times, interleaved, with load averages. Markdown table.

  python benchmarks/interleaved_speed.py --before=/path/to/old/checkout \
      --after=. --port_python=/tmp/port_baseline/venv/bin/python \
      --port_src=/tmp/port_baseline/src --rounds=3

On a shared machine the load changes from minute to minute, so separate runs of the three
cannot be compared. This runs, in each round, `benchmarks/model_speed.py` of the `--before`
checkout, of the `--after` checkout and `benchmarks/port_baseline/bench_port.py` in the
port's environment, for the training step and for inference (full_asnp50 with objects:
the model's input then, a 151-channel one-hot up to 9e8d668 and uint8 class ids since the
one input contract; 157 classes, 8 x 224 x 224, batch 1, float32, TF defaults), each in its own
process, recording the 1-minute load average before and after each run. The table gives,
per program and mode, the median over rounds of each run's median step time, the min over
rounds of each run's min, the largest peak RSS and the load range; then the ratios the
issue asks for (training step over the port's, over our own inference), from the medians.
Every run's JSON line is written to `--out` for the record.

With Eigen's kernels, the package's commands select TF's BFC allocator for CPU tensors
(`official/runtime.py`); the port and checkouts before that change run on the C library's
`malloc`. Every program starts without `TF_CPU_ALLOCATOR_USE_BFC` (a value in the caller's
shell is dropped), so each makes its own choice. `--port_bfc` adds a fourth program,
`port_bfc`: the port with `TF_CPU_ALLOCATOR_USE_BFC=true`, so that what the allocator
alone buys can be told apart (its ratios are printed too). Each record gets
`tf_cpu_allocator`: the package's own report for before and after (absent in checkouts
before that field), and by construction for the port.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

MODEL_SPEED_ARGS = ["--gin_file=gin/base/model_assemblenet_plus50.gin", "--frames=8",
                    "--size=224", "--batch=1", "--precision=float32"]
RUN_ARGS = {"train": ["--runs=5", "--warmup=1"], "infer": ["--runs=7", "--warmup=2"]}


def _run(command, cwd, env):
  load_before = os.getloadavg()[0]
  done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                        check=False)
  load_after = os.getloadavg()[0]
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode or not lines:
    raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
  record = json.loads(lines[-1])
  record["load_before"], record["load_after"] = load_before, load_after
  return record


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--before", required=True, help="checkout of the old code")
  parser.add_argument("--after", default=".", help="checkout of the new code")
  parser.add_argument("--python", default=sys.executable, help="Python of this package")
  parser.add_argument("--port_python", required=True)
  parser.add_argument("--port_src", required=True)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--modes", default="train,infer")
  parser.add_argument("--out", default="interleaved_speed.jsonl")
  parser.add_argument("--port_bfc", action="store_true",
                      help="also run the port with TF_CPU_ALLOCATOR_USE_BFC=true")
  args = parser.parse_args()

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
  env.pop("TF_CPU_BFC_MEM_LIMIT_IN_MB", None)
  envs = {"port_bfc": dict(env, TF_CPU_ALLOCATOR_USE_BFC="true")}
  port_allocators = {"port": "default", "port_bfc": "bfc"}
  port_script = os.path.join(os.path.abspath(args.after), "benchmarks", "port_baseline",
                             "bench_port.py")
  programs = {
      "before": lambda mode: ([args.python, "-m", "benchmarks.model_speed",
                               f"--mode={mode}"] + MODEL_SPEED_ARGS + RUN_ARGS[mode],
                              args.before),
      "after": lambda mode: ([args.python, "-m", "benchmarks.model_speed",
                              f"--mode={mode}"] + MODEL_SPEED_ARGS + RUN_ARGS[mode],
                             args.after),
      "port": lambda mode: ([args.port_python, port_script, f"--src={args.port_src}",
                             f"--mode={mode}"] + RUN_ARGS[mode], args.after),
  }
  if args.port_bfc:
    programs["port_bfc"] = programs["port"]
  modes = args.modes.split(",")
  records = []
  with open(args.out, "a", encoding="utf-8") as out:
    for round_index in range(args.rounds):
      for mode in modes:
        for name, make in programs.items():
          command, cwd = make(mode)
          record = _run(command, cwd, envs.get(name, env))
          record.update(program=name, round=round_index, mode=mode)
          if name in port_allocators:
            record["tf_cpu_allocator"] = port_allocators[name]
          records.append(record)
          out.write(json.dumps(record) + "\n")
          out.flush()
          print(f"round {round_index} {mode:5s} {name:8s} "
                f"{record.get('tf_cpu_allocator', '?'):7s} median {record['median_s']:.2f} s "
                f"min {record['min_s']:.2f} s rss {record['peak_rss_mb']:.0f} MB load "
                f"{record['load_before']:.1f}/{record['load_after']:.1f}", flush=True)

  medians = {}
  print("\n| program | mode | median of medians s | min s | peak RSS MB | load (1 min) |")
  print("|---|---|---|---|---|---|")
  for mode in modes:
    for name in programs:
      runs = [r for r in records if r["program"] == name and r["mode"] == mode]
      medians[name, mode] = statistics.median(r["median_s"] for r in runs)
      loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
      print(f"| {name} | {mode} | {medians[name, mode]:.2f} | "
            f"{min(r['min_s'] for r in runs):.2f} | "
            f"{max(r['peak_rss_mb'] for r in runs):.0f} | "
            f"{min(loads):.1f}-{max(loads):.1f} |")
  if set(modes) == {"train", "infer"}:
    ports = [name for name in ("port", "port_bfc") if name in programs]
    for name in ("before", "after"):
      print()
      for port in ports:
        print(f"{name}: training step / {port}'s = "
              f"{medians[name, 'train'] / medians[port, 'train']:.2f}, "
              f"inference / {port}'s = {medians[name, 'infer'] / medians[port, 'infer']:.2f}")
      print(f"{name}: training step / own inference = "
            f"{medians[name, 'train'] / medians[name, 'infer']:.2f}")


if __name__ == "__main__":
  main()
