"""A search trial: train one genome for a proxy budget and measure its held-out fitness.

The genome (dead nodes removed, `genome.remove_dead_nodes`) is bound into the experiment's
gin configuration (`build_model.structure`, `build_model.edge_weights`; an object stem
makes the model read object maps) and trained and evaluated with the package's library, as
`python -m official.train --mode=train_and_eval` and `official.tools.ablate` do
(`experiment.run_mode`). Fitness is the experiment's `Experiment.eval_metric` on its
evaluation split: mAP (multi-label, Charades) or mean per-class accuracy (Toyota
Smarthome; top-1 is reported beside it). The learned post-sigmoid edge weights and each
connection's dominant peer are read back from the trained checkpoint with
`official.tools.draw_network.graph_from_model`.

`tune_trainable` is the Ray Tune function trainable wrapping `train_genome`.
"""

import json
import os
import time

from absl import logging

from official.modeling import structures
from official.search import genome as genome_lib

TRIAL_METRIC = "fitness"
# In each trial's folder: what it trains (genome, fixed weights, budget, experiment). A folder
# numbered like a new trial but holding another run is set aside, never resumed.
TRIAL_RECORD = "trial.json"


def genome_bindings(pruned, edge_weights=None):
  """gin bindings that make the experiment build `pruned` (a Structure without dead
  nodes); `edge_weights` None trains the connection weights, a node-aligned list fixes
  them."""
  return [
      f"build_model.structure = {pruned.to_list()!r}",
      f"build_model.edge_weights = {edge_weights!r}",
  ]


def budget_bindings(steps):
  """The proxy budget: `steps` training steps, one evaluation at the end."""
  return [f"Experiment.train_steps = {steps}", "Experiment.eval_interval = 0",
          f"Experiment.checkpoint_interval = {steps}"]


def train_genome(structure_list, *, gin_files, gin_bindings, model_dir, steps, seed=0,
                 edge_weights=None, data_dir=None):
  """Trains and evaluates one genome; returns its result.

  Args:
    structure_list: the genome in the authors' nested-list form (dead nodes allowed).
    gin_files: the experiment's gin files (model family, data, optimiser).
    gin_bindings: extra bindings, applied before the genome's.
    model_dir: the trial's model_dir (a killed trial resumes from its checkpoint).
    steps: training steps (the proxy budget); None keeps `Experiment.train_steps`.
    seed: initialisation, data order and augmentation seed.
    edge_weights: None (learned) or node-aligned post-sigmoid weights of the pruned
      genome (fixed).
    data_dir: the prepared synthetic dataset (`prepare_synthetic_charades.data_dir`), so
      that every trial reads one copy; None for experiments that name their data.

  Returns:
    A dict: `fitness` (float, the held-out `metric`), `metric`, `metrics` (every
    evaluation number), `edge_weights` (node-aligned learned weights of the pruned
    genome, `[]` / `[[w...]]`), `peers` ([{source, target, peer, peer_weight}] with
    peer-attention), `pruned_structure` (list form), `steps`, `seconds`.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from official import demo  # pylint: disable=g-import-not-at-top
  from official.tools import draw_network  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  genome = structures.Structure.from_list(structure_list, name="genome")
  pruned, _ = genome_lib.remove_dead_nodes(genome)
  bindings = list(gin_bindings) + genome_bindings(pruned, edge_weights)
  if steps is not None:
    bindings += budget_bindings(steps)
  if data_dir is not None:
    bindings.append(f"prepare_synthetic_charades.data_dir = {data_dir!r}")
  claim_folder(model_dir, trial_record(structure_list, gin_files, gin_bindings, steps, seed,
                                       edge_weights, data_dir))
  keras.backend.clear_session()
  demo.parse_gin(gin_files, bindings)
  metric = gin.query_parameter("Experiment.eval_metric") if _bound(
      "Experiment.eval_metric") else "map"
  start = time.perf_counter()
  experiment.run_mode("train_and_eval", model_dir, seed=seed,
                      flags_text="".join(f"--gin_param={b}\n" for b in bindings))
  seconds = time.perf_counter() - start
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  model, step = draw_network.load_model(model_dir)
  graph = draw_network.graph_from_model(model)
  keras.backend.clear_session()
  gin.clear_config()
  return {
      "fitness": float(metrics[metric]),
      "metric": metric,
      "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
      "edge_weights": node_aligned_weights(pruned, graph["edges"]),
      "peers": [{k: p[k] for k in ("source", "target", "peer", "peer_weight")}
                for p in graph["peers"]],
      "pruned_structure": pruned.to_list(),
      "steps": step,
      "seconds": seconds,
  }


def trial_record(structure_list, gin_files, gin_bindings, steps, seed, edge_weights,
                 data_dir):
  """What a trial trains (its folder's `TRIAL_RECORD`), JSON-normalised."""
  return json.loads(json.dumps({
      "structure": structure_list, "edge_weights": edge_weights, "steps": steps,
      "seed": seed, "gin_files": [os.path.realpath(f) for f in gin_files],
      "gin_bindings": list(gin_bindings), "data_dir": data_dir}))


def read_record(model_dir):
  """The folder's `TRIAL_RECORD`, or None."""
  path = os.path.join(model_dir, TRIAL_RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def claim_folder(model_dir, record):
  """Makes `model_dir` this trial's: resumed when its `TRIAL_RECORD` is `record`, else (a
  run of another genome or setup: folders are numbered, and a resumed asynchronous search
  or an extended retraining proposes another genome under a used number) renamed
  `<model_dir>.replaced[-n]` with a warning, so that its checkpoint is never restored
  into, or its result reported for, this genome."""
  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  if read_record(model_dir) == record:
    return
  if os.path.isdir(model_dir) and os.listdir(model_dir):
    aside = writers.free_name(f"{model_dir}.replaced")
    os.rename(model_dir, aside)
    logging.warning("%s held a run of another genome or setup; it is kept as %s and this "
                    "trial starts afresh.", model_dir, aside)
  os.makedirs(model_dir, exist_ok=True)
  # Atomic: a trial killed while writing it must not leave a record that cannot be read.
  writers.write_json(os.path.join(model_dir, TRIAL_RECORD), record)


def node_aligned_weights(structure, graph_edges):
  """`draw_network` graph edges -> the authors' node-aligned weights of `structure`."""
  by_edge = {(e["source"], e["target"]): e["weight"] for e in graph_edges}
  return genome_lib.edges_to_weights(structure, {
      (s, index): by_edge[(s, index)] for index, node in structure.blocks
      if len(node.inputs) > 1 for s in node.inputs})


def _bound(name):
  import gin  # pylint: disable=g-import-not-at-top
  try:
    gin.query_parameter(name)
  except ValueError:
    return False
  return True


def tune_trainable(config):
  """Ray Tune function trainable: `config` holds the genome ('structure'), 'edge_weights',
  'index' and the search's 'setup' (gin files and bindings, proxy steps, out, data_dir,
  seed); reports `train_genome`'s result once, with nested values as JSON strings."""
  from ray import tune  # pylint: disable=g-import-not-at-top
  config = config.get("run", config)  # a grid of configurations (retraining) nests them
  setup = config["setup"]
  model_dir = os.path.join(setup["out"], "trials", f"trial_{config['index']:04d}")
  result = train_genome(config["structure"], gin_files=setup["gin_files"],
                        gin_bindings=setup["gin_bindings"], model_dir=model_dir,
                        steps=setup["steps"], seed=setup["seed"],
                        edge_weights=config.get("edge_weights"),
                        data_dir=setup.get("data_dir"))
  tune.report({
      TRIAL_METRIC: result["fitness"], "metric": result["metric"],
      "seconds": result["seconds"], "steps": result["steps"], "model_dir": model_dir,
      "index": config["index"],
      "result_json": json.dumps({k: result[k] for k in (
          "metrics", "edge_weights", "peers", "pruned_structure")}),
  })
