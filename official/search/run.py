"""Running a connectivity search on Ray Tune, resuming it, and comparing algorithms.

`run_search` runs one algorithm into its output folder (see `searchers` for the state and
`outputs` for the files); `run_all` runs several at the same trial budget into
`OUT/<algorithm>/`, plots their best fitness against trials, and with `retrain=True`
retrains the best network of each and a reference structure (`DEMO_ASNP`) for the
experiment's own `Experiment.train_steps`, writing `OUT/comparison.{json,md}`.

Ray: `ray_address=None` starts a local Ray with `num_cpus` CPUs and a small object store
(trials run as worker processes of this machine, `cpus_per_trial` each); an address
("HOST:PORT" or "auto") joins a running cluster, where trials take `cpus_per_trial` /
`gpus_per_trial` on any node. Every node needs this repository on its `PYTHONPATH` and the
output folder and data on a shared file system.
"""

import json
import os
import sys
import time

from absl import logging

from official.search import evolution
from official.search import genome as genome_lib
from official.search import mutations
from official.search import outputs

ROOT = outputs.ROOT
RETRAIN_DIR = "retrain"
REFERENCE = "demo_asnp"


def parse_experiment(gin_files, gin_bindings):
  """Parses the search's gin (clears gin first); returns its `SearchSpace`.

  Raises:
    ValueError: the space's depth is not the depth the trials build (`build_model.depth`;
      unbound, a genome of list form is built at 50, `assemblenet._resolve`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  from official import demo  # pylint: disable=g-import-not-at-top
  demo.parse_gin(gin_files, gin_bindings)
  space = genome_lib.build_search_space()
  try:
    model_depth = gin.query_parameter("build_model.depth")
  except ValueError:
    model_depth = None
  if isinstance(model_depth, gin.config.ConfigurableReference):  # A macro: %DEPTH.
    model_depth = model_depth.scoped_configurable_fn()
  model_depth = 50 if model_depth is None else model_depth
  if model_depth != space.depth:
    raise ValueError(
        f"build_search_space.depth = {space.depth}, but the trials build networks of "
        f"build_model.depth = {model_depth}: bind both to the same depth.")
  return space


def prepare_data(gin_files, gin_bindings, data_root):
  """Prepares the experiment's data once for all trials; returns the data_dir to bind
  (`prepare_synthetic_charades.data_dir`), or None when the experiment reads data it
  names itself (`VideoInput.data_dir`)."""
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  parse_experiment(gin_files, gin_bindings)
  prepare = experiment.Experiment().prepare_data_fn
  if prepare is None:
    return None
  if getattr(prepare, "__name__", "") != "prepare_synthetic_charades":
    raise ValueError(
        "The search prepares data once, for all trials, only for the built-in synthetic "
        "dataset (Experiment.prepare_data_fn = @prepare_synthetic_charades); prepare yours "
        f"first and bind VideoInput.data_dir. Received: {prepare!r}")
  return prepare(model_dir=data_root)


def init_ray(ray_address=None, num_cpus=2, object_store_mb=300):
  """Starts (or joins) Ray unless this process already did."""
  import ray  # pylint: disable=g-import-not-at-top
  if ray.is_initialized():
    return
  runtime_env = {"env_vars": {
      "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
      "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
  }}
  if ray_address:
    ray.init(address=ray_address, runtime_env=runtime_env, log_to_driver=False)
  else:
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_mb * 1024 * 1024,
             include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)


def _tune(configs_or_searcher, num_samples, storage, name, cpus_per_trial, gpus_per_trial,
          max_concurrent):
  from ray import tune  # pylint: disable=g-import-not-at-top
  from official.search import trial as trial_lib  # pylint: disable=g-import-not-at-top
  trainable = tune.with_resources(trial_lib.tune_trainable,
                                  {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
  if isinstance(configs_or_searcher, list):
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent,
                                  reuse_actors=True)
    param_space = {"run": tune.grid_search(configs_or_searcher)}
  else:
    tune_config = tune.TuneConfig(search_alg=configs_or_searcher, num_samples=num_samples,
                                  max_concurrent_trials=max_concurrent, reuse_actors=True)
    param_space = None
  tuner = tune.Tuner(trainable, tune_config=tune_config, param_space=param_space,
                     run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))
  return tuner.fit()


class SearchIncomplete(RuntimeError):
  """A search ended before its trial budget with trials left to run (e.g. Ctrl-C)."""


def exit_status(bests):
  """The command's exit status for the searches' best records (`TrialLog.best()`) or best
  fitnesses: 1 when one is None (no successful trial: no best network), else 0."""
  return 1 if any(best is None for best in bests) else 0


def run_search(algorithm, out, gin_files, gin_bindings=(), trials=12, population=4,
               sample=2, proxy_steps=100, seed=0, threshold=0.5, ray_address=None,
               num_cpus=2, cpus_per_trial=2, gpus_per_trial=0, max_concurrent=1,
               mutation_options=None, data_dir=None, command=""):
  """Runs (or resumes) one search into `out`; returns its `TrialLog`.

  Args:
    algorithm: one of `evolution.ALGORITHMS`.
    out: output folder (trials.json, trials/, ray/, best files).
    gin_files, gin_bindings: the experiment (model family, data, optimiser, search space).
    trials: the trial budget (one_shot: always 2, supernet and retrain).
    population, sample: regularized evolution's P and S.
    proxy_steps: training steps per trial.
    seed: the search's seed (also each trial's training seed).
    threshold: the guided mutation's and one-shot pruning's weight threshold.
    ray_address, num_cpus: see the module docstring.
    cpus_per_trial, gpus_per_trial, max_concurrent: Tune resources per trial and trials
      at once.
    mutation_options: `mutations.MutationOptions` for the evolutions.
    data_dir: an already prepared synthetic dataset; None prepares one into `out`.
    command: the command line, for the output files.
  """
  from official.search import searchers  # pylint: disable=g-import-not-at-top
  if algorithm == evolution.ONE_SHOT:
    trials = 2
  # Resolved (links too): trial records hold these paths, and a folder reached another way
  # must still be the same search.
  out = os.path.realpath(out)
  os.makedirs(out, exist_ok=True)
  if data_dir is None:
    data_dir = prepare_data(gin_files, gin_bindings, out)
  elif data_dir:
    data_dir = os.path.realpath(data_dir)
  space = parse_experiment(gin_files, gin_bindings)
  options = mutation_options or mutations.MutationOptions()
  # The budget (`trials`) is not part of the search's identity: rerunning with a larger
  # --trials extends a finished search.
  header = {"algorithm": algorithm, "population": population,
            "sample": sample, "proxy_steps": proxy_steps, "seed": seed,
            "threshold": threshold, "space": _jsonable(space.__dict__),
            "mutation_options": _jsonable(options.__dict__),
            "gin_files": [os.path.realpath(f) for f in gin_files],
            "gin_bindings": list(gin_bindings)}
  log = searchers.TrialLog(os.path.join(out, searchers.LOG_FILE), header)
  algo = evolution.build_algorithm(algorithm, space, population, sample, seed, threshold,
                                   options)
  searchers.replay(algo, log)
  remaining = trials - len(log.records)
  if log.records:
    logging.info("Resuming %s: %d trial(s) finished, %d to run.", out, len(log.records),
                 max(remaining, 0))
  if remaining > 0:
    setup = {"out": out, "gin_files": header["gin_files"], "gin_bindings": list(gin_bindings),
             "steps": proxy_steps, "seed": seed, "data_dir": data_dir}
    searcher = searchers.ConnectivitySearcher(algo, log, trials, setup, algorithm)
    init_ray(ray_address, num_cpus)
    _tune(searcher, remaining, os.path.join(out, "ray"), f"search_{len(log.records):04d}",
          cpus_per_trial, gpus_per_trial, max_concurrent)
    log.save()
    if len(log.records) < trials and not searcher.exhausted:
      # Tune returns normally after Ctrl-C (or when it stops otherwise): not a result.
      raise SearchIncomplete(
          f"The {algorithm} search in {out} stopped after {len(log.records)} of {trials} "
          "trials (interrupted?). Its finished trials are kept: rerun the same command to "
          "resume it.")
  log.save()
  outputs.write_best(out, log, gin_files, gin_bindings, command)
  outputs.plot_best_fitness({algorithm: log.records}, os.path.join(out, "best_fitness.png"),
                            _metric(log))
  return log


def _metric(log):
  return next((r["metric"] for r in log.records if r.get("metric")), "map")


def _jsonable(value):
  return json.loads(json.dumps(value, default=list))


def retrain(out, runs, gin_files, gin_bindings, seed=0, data_seed=1, ray_address=None,
            num_cpus=2, cpus_per_trial=2, gpus_per_trial=0, max_concurrent=1):
  """Trains each `(name, structure list)` of `runs` for the experiment's own
  `Experiment.train_steps`, connection weights learned, on a synthetic dataset generated
  with `data_seed` (one the search did not score on); returns {name: result}."""
  from official.modeling import structures  # pylint: disable=g-import-not-at-top
  out = os.path.join(os.path.realpath(out), RETRAIN_DIR)
  os.makedirs(out, exist_ok=True)
  bindings = list(gin_bindings) + [f"prepare_synthetic_charades.seed = {data_seed}"]
  data_dir = prepare_data(gin_files, bindings, out)
  from official.search import trial as trial_lib  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  exp = experiment.Experiment()  # gin as prepare_data parsed it
  setup = {"out": out, "gin_files": [os.path.realpath(f) for f in gin_files],
           "gin_bindings": bindings, "steps": None, "seed": seed, "data_dir": data_dir}
  for _, structure in runs:
    structures.Structure.from_list(structure)  # fails here, not in a worker
  init_ray(ray_address, num_cpus)
  grid = _tune([{"index": k, "structure": structure, "edge_weights": None, "setup": setup}
                for k, (_, structure) in enumerate(runs)], 1, os.path.join(out, "ray"),
               f"retrain_{int(time.time())}", cpus_per_trial, gpus_per_trial, max_concurrent)
  if grid is not None:
    ended = [r for r in grid if r.error is not None or
             trial_lib.TRIAL_METRIC in (r.metrics or {})]
    if len(ended) < len(runs):  # Tune returns normally after Ctrl-C.
      raise SearchIncomplete(
          f"Retraining in {out} stopped with {len(runs) - len(ended)} of {len(runs)} "
          "networks unfinished (interrupted?); rerun the same command to finish it.")
  return {name: retrain_result(
      os.path.join(out, "trials", f"trial_{k:04d}"), structure,
      trial_lib.trial_record(structure, gin_files, bindings, None, seed, None, data_dir),
      exp.train_steps, exp.final_eval_split is not None)
          for k, (name, structure) in enumerate(runs)}


def retrain_result(model_dir, structure, expected_record, train_steps,
                   final_eval_required):
  """{'metrics', 'model_dir', 'structure'} of a retrained network: its final evaluation
  (`final_eval/`, written when the run ended: the best checkpoint scored once, on
  `final_eval_split` where the experiment has one; the only result when
  `final_eval_required`), else its evaluation at `train_steps`.

  'metrics' is None, with an 'error', unless the folder holds a finished run of this
  retraining (`expected_record`, `trial.trial_record`: this network, data, budget).
  """
  from official.search import trial as trial_lib  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  structure = json.loads(json.dumps(structure))
  failed = {"metrics": None, "model_dir": model_dir, "structure": structure,
            "error": f"{model_dir} holds no finished run of this retraining (it failed or "
                     "did not run: see Ray's log)"}
  if trial_lib.read_record(model_dir) != expected_record:
    return failed
  folders = [experiment.FINAL_EVAL_DIR] + ([] if final_eval_required else ["eval"])
  for folder in folders:
    path = os.path.join(model_dir, folder, "metrics.json")
    if os.path.exists(path):
      with open(path) as f:
        metrics = json.load(f)
      # The final evaluation is written once a run has ended (of its best checkpoint);
      # a last evaluation only counts at the last step.
      if folder == experiment.FINAL_EVAL_DIR or metrics.get("step") == train_steps:
        return {"metrics": metrics, "model_dir": model_dir, "structure": structure}
  return failed


def run_all(algorithms, out, gin_files, gin_bindings=(), retrain_best=False,
            retrain_data_seed=1, command="", **search_kwargs):
  """Runs each algorithm at the same budget into `out/<algorithm>`, on one prepared
  dataset; writes `out/best_fitness.png` and `out/comparison.{json,md}`; returns the
  comparison dict."""
  out = os.path.realpath(out)
  os.makedirs(out, exist_ok=True)
  data_dir = prepare_data(gin_files, gin_bindings, out)
  logs, seconds = {}, {}
  for name in algorithms:
    start = time.perf_counter()
    logs[name] = run_search(name, os.path.join(out, name), gin_files, gin_bindings,
                            data_dir=data_dir, command=command, **search_kwargs)
    seconds[name] = time.perf_counter() - start
    print(f"{name}: {len(logs[name].records)} trials, best "
          f"{fitness_text(logs[name].best())} ({seconds[name]:.0f} s)", flush=True)
  metric = next((_metric(log) for log in logs.values() if log.records), "map")
  comparison = {"command": command, "metric": metric, "algorithms": {}}
  for name, log in logs.items():
    best = log.best()
    fitnesses = [r["fitness"] for r in log.records if r.get("fitness") is not None]
    comparison["algorithms"][name] = {
        "trials": len(log.records), "failed": sum(r.get("fitness") is None
                                                  for r in log.records),
        "best_fitness": best["fitness"] if best else None,
        "best_trial": best["index"] if best else None,
        "best_structure": best["pruned_structure"] if best else None,
        "mean_fitness": sum(fitnesses) / len(fitnesses) if fitnesses else None,
        "seconds_this_run": seconds[name]}
  outputs.plot_best_fitness({n: l.records for n, l in logs.items()},
                            os.path.join(out, "best_fitness.png"), metric)
  if retrain_best:
    from official.modeling import structures  # pylint: disable=g-import-not-at-top
    runs = [(name, entry["best_structure"]) for name, entry in
            comparison["algorithms"].items() if entry["best_structure"]]
    runs.append((REFERENCE, structures.DEMO_ASNP.to_list()))
    retrain_kwargs = {k: search_kwargs[k] for k in (
        "seed", "ray_address", "num_cpus", "cpus_per_trial", "gpus_per_trial",
        "max_concurrent") if k in search_kwargs}
    results = retrain(out, runs, gin_files, gin_bindings, data_seed=retrain_data_seed,
                      **retrain_kwargs)
    comparison["retrain"] = {"data_seed": retrain_data_seed, "results": {
        name: {"fitness": r["metrics"][metric] if r["metrics"] else None,
               "step": r["metrics"].get("step") if r["metrics"] else None,
               "structure": r["structure"], "model_dir": r["model_dir"],
               **({"error": r["error"]} if "error" in r else {})}
        for name, r in results.items()}}
    for name, r in results.items():
      if "error" in r:
        logging.error("Retraining %s: %s.", name, r["error"])
  with open(os.path.join(out, "comparison.json"), "w") as f:
    json.dump(comparison, f, indent=1)
  with open(os.path.join(out, "comparison.md"), "w") as f:
    f.write(comparison_table(comparison))
  return comparison


def fitness_text(record):
  """'0.4321 (trial 5)' for a trial record, 'none' for None."""
  return "none" if record is None else f"{record['fitness']:.4f} (trial {record['index']})"


def comparison_table(comparison):
  """Markdown: best held-out fitness per algorithm, and the retrained networks."""
  metric = comparison["metric"]
  lines = [f"| algorithm | trials | best held-out {metric} (trial) | mean {metric} |"
           + (f" retrained {metric} |" if "retrain" in comparison else ""),
           "|---|---:|---:|---:|" + ("---:|" if "retrain" in comparison else "")]
  retrained = comparison.get("retrain", {}).get("results", {})
  for name, entry in comparison["algorithms"].items():
    best = ("-" if entry["best_fitness"] is None else
            f"{entry['best_fitness']:.3f} ({entry['best_trial']})")
    mean = "-" if entry["mean_fitness"] is None else f"{entry['mean_fitness']:.3f}"
    row = f"| {name} | {entry['trials']} | {best} | {mean} |"
    if "retrain" in comparison:
      row += f" {_retrained_text(retrained.get(name))} |"
    lines.append(row)
  if REFERENCE in retrained:
    lines.append(f"| {REFERENCE} (reference, not searched) | - | - | - | "
                 f"{_retrained_text(retrained[REFERENCE])} |")
  lines += ["", f"Command: `{comparison['command']}`", ""]
  return "\n".join(lines)


def _retrained_text(result):
  if result is None:
    return "-"
  return "failed" if result.get("fitness") is None else f"{result['fitness']:.3f}"


def command_line():
  return "python -m official.search " + " ".join(sys.argv[1:])
