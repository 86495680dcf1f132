r"""The AssembleNet / AssembleNet++ ablations in miniature, on the synthetic dataset.

  python -m official.tools.ablate --out=runs/ablations [--seeds=0,1] [--steps=500] [--only=a,b]

Every variant is the demo experiment (gin/experiments/demo_synthetic.gin, or --gin_file)
with a smaller training budget and one change, trained and evaluated with the library
(`official.training.experiment`, as `official.train` does) on one shared copy of the data:

  streams        RGB only / RGB + flow / RGB + flow + objects  (no attention)
  attention      none / self / peer                             (all three streams)
  connectivity   learned edge weights / fixed (all 0.5)         (peer-attention)
  object conns   the object stem feeds 0 / 1 / 2 / all 4 nodes  (peer-attention)
  generality     a plain single-stream (2+1)D ResNet-style chain, + object stream,
                 + object stream and peer-attention

Writes `ablations.md` (the table, with seeds and commands), `ablations.png` (bar chart),
`ablations.json` (all numbers) into --out, and each variant's run into --out/<variant>/.
With several seeds the table shows mean and standard deviation.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from official import gin_flags
from official import runtime
from official.modeling import structures

# Stem types of the authors' structure format.
RGB, FLOW, OBJECT = structures.RGB, structures.FLOW, structures.OBJECT


# Structures -----------------------------------------------------------------------------


def drop_stems(nodes, stem_types):
  """The structure `nodes` (authors' list form) without its stems of `stem_types`; their
  connections are removed and node indices renumbered."""
  return _rewire(nodes, lambda src, dst, kind: kind not in stem_types,
                 drop=lambda node: node[0] < 0 and node[0] in stem_types)


def limit_object_connections(nodes, targets):
  """`nodes` with the object stem feeding only the block nodes in `targets` (indices in
  `nodes`); with no target the object stem is dropped."""
  if not targets:
    return drop_stems(nodes, (OBJECT,))
  return _rewire(nodes, lambda src, dst, kind: kind != OBJECT or dst in targets,
                 drop=lambda node: False)


def _rewire(nodes, keep_edge, drop):
  nodes = [list(n) for n in nodes]
  new_index, kept = {}, []
  for index, node in enumerate(nodes):
    if drop(node):
      continue
    new_index[index] = len(kept)
    if node[0] >= 0:
      inputs = [new_index[src] for src in node[1]
                if src in new_index and keep_edge(src, index, _kind(nodes, src))]
      if not inputs:
        raise ValueError(f"Node {index} would lose all its inputs. Received: {node}")
      node = [node[0], inputs] + node[2:]
    kept.append(node)
  return kept


def _kind(nodes, index):
  return nodes[index][0] if nodes[index][0] < 0 else None


DEMO = structures.DEMO_ASNP.to_list()
# Block nodes of DEMO_ASNP the object stem (node 2) feeds: 3, 4 (level 0), 5, 6.
DEMO_OBJECT_TARGETS = [i for i, n in enumerate(DEMO) if n[0] >= 0 and 2 in n[1]]
# A plain (2+1)D ResNet-style network: one RGB stem, one node per level, no fusion.
PLAIN = [[-1, 1], [0, [0], 8, 1, 1, 0], [1, [1], 16, 2, 2, 0], [2, [2], 32, 4, 2, 0],
         [3, [3], 64, 1, 2, 0]]
# The same chain with an object stem feeding its level-0 and level-1 nodes.
PLAIN_OBJECTS = [[-1, 1], [-3, 1], [0, [0, 1], 8, 1, 1, 0], [1, [1, 2], 16, 2, 2, 0],
                 [2, [3], 32, 4, 2, 0], [3, [4], 64, 1, 2, 0]]


@dataclasses.dataclass(frozen=True)
class Variant:
  """One ablation: a name, its table group, and the build_model arguments it changes."""
  name: str
  group: str
  label: str
  structure: list
  attention_mode: str = None
  edge_weights: str = "learned"  # 'learned' or 'fixed' (every weight 0.5, not trained)

  @property
  def uses_objects(self):
    return any(node[0] == OBJECT for node in self.structure)

  @property
  def streams(self):
    kinds = {RGB: "RGB", FLOW: "flow", OBJECT: "objects"}
    return " + ".join(kinds[k] for k in (RGB, FLOW, OBJECT)
                      if any(node[0] == k for node in self.structure))

  @property
  def object_connections(self):
    objects = [i for i, node in enumerate(self.structure) if node[0] == OBJECT]
    return sum(1 for node in self.structure if node[0] >= 0 and objects and
               objects[0] in node[1])

  def bindings(self):
    """gin bindings that turn the demo experiment into this variant."""
    weights = "None"
    if self.edge_weights == "fixed":
      weights = repr(_fixed_weights(self.structure))
    return [
        "build_model.model_type = 'assemblenet_plus'",
        f"build_model.structure = {self.structure!r}",
        f"build_model.edge_weights = {weights}",
        f"build_model.attention_mode = {self.attention_mode!r}",
    ]


def _has_fusion(nodes):
  return any(n[0] >= 0 and len(n[1]) > 1 for n in nodes)


def _fixed_weights(nodes):
  return [[[0.5] * len(n[1])] if n[0] >= 0 and len(n[1]) > 1 else [] for n in nodes]


def _objects_to(count):
  return limit_object_connections(DEMO, DEMO_OBJECT_TARGETS[:count])


VARIANTS = (
    Variant("rgb", "streams", "RGB only", drop_stems(DEMO, (FLOW, OBJECT))),
    Variant("rgb_flow", "streams", "RGB + flow", drop_stems(DEMO, (OBJECT,))),
    Variant("rgb_flow_objects", "streams", "RGB + flow + objects", DEMO),
    Variant("attention_self", "attention", "self-attention", DEMO, "self"),
    Variant("attention_peer", "attention", "peer-attention", DEMO, "peer"),
    Variant("fixed_connectivity", "connectivity", "fixed edge weights (0.5)", DEMO, "peer",
            "fixed"),
    Variant("objects_0", "object connections", "0 (no object stem)", _objects_to(0), "peer"),
    Variant("objects_1", "object connections", "1", _objects_to(1), "peer"),
    Variant("objects_2", "object connections", "2", _objects_to(2), "peer"),
    Variant("plain", "generality", "plain (2+1)D ResNet", PLAIN),
    Variant("plain_objects", "generality", "plain + objects", PLAIN_OBJECTS),
    Variant("plain_objects_peer", "generality", "plain + objects + peer-attention",
            PLAIN_OBJECTS, "peer"),
)
# Rows of the table that repeat a run of another group (same configuration).
SHARED_ROWS = (
    ("attention", "none", "rgb_flow_objects"),
    ("connectivity", f"learned (one-shot search)", "attention_peer"),
    ("object connections", f"all {len(DEMO_OBJECT_TARGETS)} (demo_asnp)", "attention_peer"),
)
GROUP_ORDER = ("streams", "attention", "connectivity", "object connections", "generality")
# The ablations' budget, smaller than the demo's so that all twelve runs fit in about half an
# hour on 2 CPU cores: 4-frame clips spanning the same 16 stored frames, a smaller dataset,
# one evaluation at the end. --gin_param bindings come after these and override them.
ABLATION_BUDGET = (
    "NUM_FRAMES = 4",
    "VideoInput.frame_stride = 4",
    "prepare_synthetic_charades.num_train = 320",
    "prepare_synthetic_charades.num_test = 80",
    "Experiment.eval_interval = 0",
    "Experiment.checkpoint_interval = 1000",
)


# Running ----------------------------------------------------------------------------------


# In each variant's folder: the configuration it was started with and, once it finished,
# its training + evaluation time. A rerun reuses a finished run only of the same
# configuration, and refuses a folder of another one.
RUN_RECORD = "ablation_run.json"


def run_variant(variant, out, gin_files, budget_bindings, data_dir, seed):
  """Trains and evaluates one variant in `out/<name>_seed<seed>`; returns its record.

  A folder that holds this variant's finished run of the same configuration (what the gin
  files and bindings say, `gin.config_str()`) is reused (its mAP and its own time); an
  interrupted one is resumed (`resumed`: its time covers only the part run now).

  Raises:
    ValueError: the folder holds a run of another configuration or budget, or one this
      tool did not start: its numbers would be reported for this command.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from official import demo  # pylint: disable=g-import-not-at-top
  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  from official.tools import plots  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(out, f"{variant.name}_seed{seed}")
  bindings = (list(budget_bindings) + variant.bindings() +
              [f"prepare_synthetic_charades.data_dir = {data_dir!r}"])
  keras.backend.clear_session()
  demo.parse_gin(gin_files, bindings)
  # What the gin files (their includes too) and bindings say, not their names: an edited
  # file, or an upgrade changing the demo's, is another configuration.
  config = {"gin_config": gin.config_str(), "bindings": bindings}
  record_path = os.path.join(model_dir, RUN_RECORD)
  earlier = None
  if os.path.exists(record_path):
    with open(record_path) as f:
      earlier = json.load(f)
    if {key: earlier.get(key) for key in config} != config:
      raise ValueError(
          f"{model_dir} holds a run of another configuration or budget (see its "
          f"{RUN_RECORD}); its numbers would be reported for this command. Use another "
          "--out, or delete that folder to run the variant again.")
  elif os.path.isdir(model_dir) and os.listdir(model_dir):
    raise ValueError(f"{model_dir} holds files without a {RUN_RECORD}: a run of an earlier "
                     "version of this tool (which did not record its configuration), or one "
                     "it did not start; which configuration it ran cannot be checked. Use "
                     "another --out, or delete that folder to run the variant again.")
  if earlier is not None and earlier.get("seconds") is not None:
    logging.info("%s finished before with this configuration: its results are reused.",
                 model_dir)
    seconds, resumed = earlier["seconds"], earlier.get("resumed", False)
  else:
    os.makedirs(model_dir, exist_ok=True)
    writers.write_json(record_path, config)
    start = time.perf_counter()
    experiment.run_mode("train_and_eval", model_dir, seed=seed,
                        flags_text="".join(f"--gin_param={b}\n" for b in bindings))
    seconds, resumed = time.perf_counter() - start, earlier is not None
    writers.write_json(record_path, {**config, "seconds": seconds, "resumed": resumed})
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  losses = plots.read_scalars(os.path.join(model_dir, "train"), "loss")
  return {"variant": variant.name, "seed": seed, "map": metrics["map"],
          "seconds": seconds, "resumed": resumed, "first_loss": losses[0][1],
          "last_loss": losses[-1][1], "model_dir": model_dir}


def summarise(records):
  """Table rows (one per displayed row, in GROUP_ORDER) from per-seed records."""
  by_variant = {}
  for record in records:
    by_variant.setdefault(record["variant"], []).append(record)
  variants = {v.name: v for v in VARIANTS}

  def row(group, label, name):
    runs = by_variant[name]
    maps = [r["map"] for r in runs]
    v = variants[name]
    return {"group": group, "name": label, "variant": name, "map": float(np.mean(maps)),
            "map_std": float(np.std(maps)), "seeds": [r["seed"] for r in runs],
            "streams": v.streams, "attention": v.attention_mode or "none",
            "edge_weights": v.edge_weights if _has_fusion(v.structure) else "none (chain)",
            "object_connections": v.object_connections,
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "resumed": any(r.get("resumed", False) for r in runs)}

  rows = []
  for group in GROUP_ORDER:
    for v in VARIANTS:
      if v.group == group and v.name in by_variant:
        rows.append(row(group, v.label, v.name))
    for shared_group, label, name in SHARED_ROWS:
      if shared_group == group and name in by_variant:
        rows.append(row(group, label, name))
  # Within a group, keep a readable order: the shared baseline row where it belongs.
  order = {"none": 0, "self-attention": 1, "peer-attention": 2,
           "0 (no object stem)": 0, "1": 1, "2": 2}
  rows.sort(key=lambda r: (GROUP_ORDER.index(r["group"]), order.get(r["name"], 5)))
  return rows


def markdown_table(rows, chance, seeds, command, budget_bindings):
  several = len(seeds) > 1
  lines = [
      "| group | variant | streams | attention | edge weights | object conns | test mAP |"
      " train+eval s |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    value = f"{r['map']:.3f}" + (f" ± {r['map_std']:.3f}" if several else "")
    resumed = " (resumed: the part after the interruption)" if r.get("resumed") else ""
    lines.append(f"| {r['group']} | {r['name']} | {r['streams']} | {r['attention']} | "
                 f"{r['edge_weights']} | {r['object_connections']} | {value} | "
                 f"{r['seconds']:.0f}{resumed} |")
  lines += [
      "",
      f"Chance level (mean positive rate per class of the test videos): "
      f"{chance['positive_rate']:.3f}; uniformly random scores give mAP "
      f"{chance['random_map']:.3f} ± {chance['random_map_std']:.3f}.",
      f"Seeds: {', '.join(str(s) for s in seeds)} (initialisation, data order and "
      "augmentation; the dataset itself is generated with seed 0)"
      + ("; ± is the standard deviation over the seeds (numpy's, ddof = 0)." if several
         else "."),
      f"Budget: {'; '.join(budget_bindings)}.",
      f"Command: `{command}`",
  ]
  return "\n".join(lines) + "\n"


def run(out, gin_files, seeds=(0,), steps=None, only=None, extra_bindings=()):
  """Runs the ablations; returns {'rows', 'records', 'chance', 'paths'}."""
  from official import demo  # pylint: disable=g-import-not-at-top
  from official.tools import plots  # pylint: disable=g-import-not-at-top
  from official.training import synthetic_data  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  budget = list(extra_bindings)
  if steps is not None:
    budget = [f"Experiment.train_steps = {steps}"] + budget
  demo.parse_gin(gin_files, budget)
  data_dir = synthetic_data.prepare_synthetic_charades(model_dir=out)
  selected = [v for v in VARIANTS if only is None or v.name in only]
  records = []
  results_path = os.path.join(out, "ablations.json")
  for seed in seeds:
    for variant in selected:
      logging.info("Ablation %s (seed %d).", variant.name, seed)
      record = run_variant(variant, out, gin_files, budget, data_dir, seed)
      print(f"{variant.name:<22} seed {seed}: mAP {record['map']:.3f} "
            f"({record['seconds']:.0f} s)", flush=True)
      records.append(record)
      with open(results_path, "w") as f:  # partial results survive an interruption
        json.dump({"records": records}, f, indent=1)

  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  _, _, labels = writers.read_per_video_scores(
      os.path.join(records[0]["model_dir"], "eval", writers.PER_VIDEO_FILE))
  chance = plots.chance_levels(labels)
  rows = summarise(records)
  command = "python -m official.tools.ablate " + " ".join(sys.argv[1:])
  table = markdown_table(rows, chance, list(seeds), command.strip(), budget or ["as the demo"])
  paths = {"markdown": os.path.join(out, "ablations.md"),
           "chart": os.path.join(out, "ablations.png"), "json": results_path}
  with open(paths["markdown"], "w") as f:
    f.write(table)
  plots.plot_ablation_bars(rows, paths["chart"], chance["positive_rate"],
                           title=f"Ablations on the synthetic dataset (seeds {list(seeds)})")
  with open(results_path, "w") as f:
    json.dump({"records": records, "rows": rows, "chance": chance, "seeds": list(seeds),
               "budget": budget}, f, indent=1)
  return {"rows": rows, "records": records, "chance": chance, "paths": paths,
          "table": table}


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("out", "runs/ablations", "Output folder (runs, table, chart).")
  gin_flags.define_gin_flags()  # --gin_file (default: the demo's), --gin_param
  flags.adopt_module_key_flags(gin_flags)  # Listed by --help.
  flags.DEFINE_list("seeds", ["0"], "Seeds; each variant runs once per seed.")
  flags.DEFINE_integer("steps", 500, "Training steps per variant (the demo trains longer).")
  flags.DEFINE_list("only", None, f"Run only these variants: {[v.name for v in VARIANTS]}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  from official import demo  # pylint: disable=g-import-not-at-top
  try:
    result = run(os.path.abspath(FLAGS.out), FLAGS.gin_file or [demo.DEFAULT_GIN],
                 [int(s) for s in FLAGS.seeds], FLAGS.steps, FLAGS.only,
                 list(ABLATION_BUDGET) + gin_flags.gin_bindings_from_flags())
  except ValueError as e:  # A folder of another configuration (run_variant).
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(result["table"])
  print(f"Table: {result['paths']['markdown']}\nChart: {result['paths']['chart']}")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
