r"""AssembleNet's connectivity search on Ray Tune.

  python -m official.search --algorithm=evolution --trials=N --population=P --sample=S \
      --proxy_steps=K --gin_file=gin/experiments/search_synthetic.gin --out=DIR \
      [--ray_address=HOST:PORT] [--max_concurrent=1] [--cpus_per_trial=2]

--algorithm: evolution (regularized evolution with connection-learning-guided mutation),
evolution_random (the same with random connection flips), random (random search), one_shot
(train the fully connected supernet once, prune, retrain); a comma-separated list runs each
at the same budget into DIR/<algorithm>/ and compares them (DIR/comparison.md,
DIR/best_fitness.png); --retrain then also trains the best network of each and DEMO_ASNP
for the gin file's Experiment.train_steps on a synthetic dataset of another seed.

Rerunning the same command after a kill resumes: finished trials (DIR/trials.json) are not
run again. Outputs per algorithm: best_structure.py, best.gin (for python -m official.train),
best_edge_weights.json, best_network.png, trials.json, best_fitness.png. See docs/search.md.
"""

import sys

from absl import app
from absl import flags

from official import gin_flags
from official import runtime
from official.search import evolution
from official.search import mutations

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("algorithm", [evolution.EVOLUTION],
                    f"One or more of {list(evolution.ALGORITHMS)}.")
  flags.DEFINE_integer("trials", 12, "Trials per algorithm (one_shot: always 2).")
  flags.DEFINE_integer("population", 4, "Regularized evolution's population size P.")
  flags.DEFINE_integer("sample", 2, "Regularized evolution's tournament sample size S.")
  flags.DEFINE_integer("proxy_steps", 100, "Training steps per trial.")
  flags.DEFINE_float("threshold", 0.5, "Edge-weight threshold of the guided mutation and "
                     "of the one-shot pruning.")
  flags.DEFINE_integer("num_flips", 2, "Connections flipped per child by evolution_random.")
  flags.DEFINE_float("dilation_probability", 0.25, "Chance that a child also re-draws one "
                     "node's temporal dilation.")
  flags.DEFINE_float("split_probability", 0.0, "Chance that a child also splits a node.")
  flags.DEFINE_float("merge_probability", 0.0, "Chance that a child also merges two nodes.")
  flags.DEFINE_integer("seed", 0, "Seed of the search and of each trial's training.")
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_string("ray_address", None, "A running Ray cluster (HOST:PORT or 'auto'); "
                      "default: a local Ray on this machine.")
  flags.DEFINE_integer("num_cpus", 2, "CPUs of the local Ray (without --ray_address).")
  flags.DEFINE_float("cpus_per_trial", 2, "CPUs each trial reserves.")
  flags.DEFINE_float("gpus_per_trial", 0, "GPUs each trial reserves.")
  flags.DEFINE_integer("max_concurrent", 1, "Trials at once.")
  flags.DEFINE_bool("retrain", False, "With several algorithms: retrain the best network "
                    "of each and DEMO_ASNP for Experiment.train_steps.")
  flags.DEFINE_integer("retrain_data_seed", 1, "Seed of the synthetic dataset of --retrain.")
  flags.mark_flag_as_required("out")
  gin_flags.define_gin_flags()
  flags.adopt_module_key_flags(gin_flags)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  from official.search import run  # pylint: disable=g-import-not-at-top
  unknown = [a for a in FLAGS.algorithm if a not in evolution.ALGORITHMS]
  if unknown or not FLAGS.gin_file:
    print(f"error: --algorithm must list {list(evolution.ALGORITHMS)} and --gin_file is "
          f"required. Received: --algorithm={','.join(FLAGS.algorithm)}, "
          f"--gin_file={FLAGS.gin_file}", file=sys.stderr)
    return 2
  options = mutations.MutationOptions(
      threshold=FLAGS.threshold, num_flips=FLAGS.num_flips,
      dilation_probability=FLAGS.dilation_probability,
      split_probability=FLAGS.split_probability, merge_probability=FLAGS.merge_probability)
  kwargs = dict(trials=FLAGS.trials, population=FLAGS.population, sample=FLAGS.sample,
                proxy_steps=FLAGS.proxy_steps, seed=FLAGS.seed, threshold=FLAGS.threshold,
                ray_address=FLAGS.ray_address, num_cpus=FLAGS.num_cpus,
                cpus_per_trial=FLAGS.cpus_per_trial, gpus_per_trial=FLAGS.gpus_per_trial,
                max_concurrent=FLAGS.max_concurrent, mutation_options=options)
  command = run.command_line()
  bindings = gin_flags.gin_bindings_from_flags()
  try:
    if len(FLAGS.algorithm) == 1 and not FLAGS.retrain:
      log = run.run_search(FLAGS.algorithm[0], FLAGS.out, FLAGS.gin_file, bindings,
                           command=command, **kwargs)
      best = log.best()
      print(f"{FLAGS.algorithm[0]}: {len(log.records)} trials; best: "
            f"{run.fitness_text(best)}; outputs in {FLAGS.out}")
      bests = [best]
    else:
      comparison = run.run_all(FLAGS.algorithm, FLAGS.out, FLAGS.gin_file, bindings,
                               retrain_best=FLAGS.retrain,
                               retrain_data_seed=FLAGS.retrain_data_seed, command=command,
                               **kwargs)
      print(run.comparison_table(comparison))
      bests = [entry["best_fitness"] for entry in comparison["algorithms"].values()]
      # A failed retraining is no result either.
      bests += [r["fitness"] for r in comparison.get("retrain", {}).get("results", {}).values()]
    status = run.exit_status(bests)
    if status:
      print("error: a search has no successful trial, or a retraining failed (see the "
            "errors above, trials.json and comparison.md).", file=sys.stderr)
    return status
  except run.SearchIncomplete as e:
    print(f"error: {e}", file=sys.stderr)
    return 130
  except (ValueError, FileNotFoundError) as e:
    # A search of other settings in --out, a bad gin value, a missing file: the message
    # names the input; the traceback adds nothing.
    print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()),
          file=sys.stderr)
    return 2 if isinstance(e, ValueError) else 1
  finally:
    import ray  # pylint: disable=g-import-not-at-top
    if ray.is_initialized():
      ray.shutdown()
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
