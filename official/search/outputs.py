"""What a search leaves in its output folder, besides `trials.json` (`searchers.TrialLog`).

- `best_structure.py`: the best genome as Python literals: `BEST_STRUCTURE` (dead nodes
  removed, the network that was trained) and `BEST_EDGE_WEIGHTS` (its learned post-sigmoid
  connection weights, node-aligned `[]` / `[[w...]]`, the form of the named structures'
  searched weights in `official/modeling/structures.py`), and `BEST_GENOME` (as evolved).
- `best_edge_weights.json`: the same weights alone.
- `best.gin`: an experiment for `python -m official.train` that includes the search's gin
  files and builds the found network (connection weights learned again; the searched
  ones are the `SEARCHED_EDGE_WEIGHTS` macro, to fix them instead).
- `best_network.png` / `.svg` / `.json`: the network picture (`official.tools.draw_network`;
  edge width = searched weight).
- `best_fitness.png`: the best fitness so far against the number of finished trials, one
  line per algorithm (`plot_best_fitness`).
"""

import json
import os

from official.modeling import structures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Post-sigmoid weights are open-interval values (`structures.Structure` checks (0, 1)); a
# float32 sigmoid can round to exactly 0 or 1.
_WEIGHT_EPSILON = 1e-6


def clip_weights(node_weights):
  """Node-aligned weights with every value clipped into [1e-6, 1 - 1e-6]."""
  def clip(w):
    return min(max(float(w), _WEIGHT_EPSILON), 1.0 - _WEIGHT_EPSILON)
  return [[[clip(w) for w in entry[0]]] if entry else [] for entry in node_weights]


def gin_include_path(path):
  """`path` as a gin `include`: relative to the repository root when inside it (gin's
  search path has the root), else absolute."""
  path = os.path.abspath(path)
  if path.startswith(ROOT + os.sep):
    return os.path.relpath(path, ROOT)
  return path


def best_gin_text(record, gin_files, gin_bindings, command):
  """The `best.gin` text for a trial record of the log: the search's gin files and
  bindings, then the found network."""
  pruned = structures.Structure.from_list(record["pruned_structure"])
  weights = record.get("fixed_edge_weights") or clip_weights(record["edge_weights"])
  lines = [
      f"# The best network of a connectivity search (trial {record['index']}, held-out "
      f"{record['metric']} {record['fitness']:.4f} after {record['steps']} proxy steps).",
      f"# Search: {command}",
      "# Train it with the search experiment's settings:",
      "#   python -m official.train --mode=train_and_eval --model_dir=DIR "
      "--gin_file=THIS_FILE",
      "",
  ]
  lines += [f"include '{gin_include_path(f)}'" for f in gin_files]
  lines += [binding.replace("\n", " ") for binding in gin_bindings]
  lines += [
      "",
      f"SEARCHED_STRUCTURE = {pruned.to_list()!r}",
      f"SEARCHED_EDGE_WEIGHTS = {weights!r}",
      "build_model.structure = %SEARCHED_STRUCTURE",
      "# Learned again (connection learning); `%SEARCHED_EDGE_WEIGHTS` fixes them instead.",
      "build_model.edge_weights = None",
      "",
  ]
  return "\n".join(lines)


def structure_literal_text(record, command):
  """The `best_structure.py` text: Python literals of the best trial."""
  weights = record.get("fixed_edge_weights") or clip_weights(record["edge_weights"])
  return "\n".join([
      f'"""The best network of a connectivity search: trial {record["index"]}, held-out '
      f'{record["metric"]} {record["fitness"]:.4f}.',
      "",
      f"Search: {command}",
      "Use: `structures.Structure.from_list(BEST_STRUCTURE, BEST_EDGE_WEIGHTS)`.",
      '"""',
      "",
      "# Dead nodes removed: the network trained in the trial.",
      f"BEST_STRUCTURE = {_list_text(record['pruned_structure'])}",
      "# Its post-sigmoid connection weights, node-aligned ([] for stems and single inputs).",
      f"BEST_EDGE_WEIGHTS = {_list_text(weights)}",
      "# The genome as evolved (may hold nodes that reach no level-3 node).",
      f"BEST_GENOME = {_list_text(record['structure'])}",
      "",
  ])


def _list_text(value):
  return "[\n" + "".join(f"    {item!r},\n" for item in value) + "]"


def write_best(out, log, gin_files, gin_bindings, command):
  """Writes the best trial's files (module docstring) into `out`; returns their paths, or
  {} when no trial succeeded."""
  from official.tools import draw_network  # pylint: disable=g-import-not-at-top
  record = log.best()
  if record is None:
    return {}
  weights = record.get("fixed_edge_weights") or clip_weights(record["edge_weights"])
  paths = {"structure": os.path.join(out, "best_structure.py"),
           "gin": os.path.join(out, "best.gin"),
           "edge_weights": os.path.join(out, "best_edge_weights.json")}
  with open(paths["structure"], "w") as f:
    f.write(structure_literal_text(record, command))
  with open(paths["gin"], "w") as f:
    f.write(best_gin_text(record, gin_files, gin_bindings, command))
  with open(paths["edge_weights"], "w") as f:
    json.dump(weights, f)
  found = structures.Structure.from_list(record["pruned_structure"], weights,
                                         name=f"search_trial_{record['index']}")
  graph = draw_network.graph_from_structure(found)
  png, svg = draw_network.draw(
      graph, os.path.join(out, "best_network"),
      f"Best of the search (trial {record['index']}, {record['metric']} "
      f"{record['fitness']:.3f}): edge width = searched weight")
  paths.update({"png": png, "svg": svg, "network_json": os.path.join(out, "best_network.json")})
  with open(paths["network_json"], "w") as f:
    json.dump(graph, f, indent=1)
  return paths


def best_so_far(records):
  """[(trials finished, best fitness among them)] in completion order (failed trials
  count as finished, without fitness)."""
  curve, best = [], None
  for count, record in enumerate(records, start=1):
    if record.get("fitness") is not None:
      best = record["fitness"] if best is None else max(best, record["fitness"])
    if best is not None:
      curve.append((count, best))
  return curve


def plot_best_fitness(records_by_algorithm, path, metric="map"):
  """Plots the best held-out fitness against finished trials, one line per algorithm."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4))
  plotted = False
  for name, records in records_by_algorithm.items():
    curve = best_so_far(records)
    if curve:
      ax.plot(*zip(*curve), marker="o", markersize=3, label=name, drawstyle="steps-post")
      plotted = True
  ax.set_xlabel("trials finished")
  ax.set_ylabel(f"best held-out {metric} so far")
  ax.grid(alpha=0.3)
  if plotted:
    ax.legend()
  else:
    ax.text(0.5, 0.5, "no successful trial", transform=ax.transAxes, ha="center")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
