r"""Draws an assembled AssembleNet / AssembleNet++ as a graph, from a checkpoint or a structure.

  python -m official.tools.draw_network --model_dir=runs/demo     # the latest checkpoint
  python -m official.tools.draw_network --structure=full_asnp50 --out=docs/figures

Nodes are placed by level (stems, then levels 0..3, then the head); an edge's thickness is
its connection weight (the learned `sigmoid(w)` of `WeightedFusion`, or the searched value
the structure carries). For an AssembleNet++ checkpoint with peer-attention, every
connection is annotated with its dominant peer: the candidate with the largest
`softmax(peer_logits)` weight, drawn as a dotted line from the peer to the middle of the
connection (AssembleNet++, Fig. 2). Writes `network.png`, `network.svg` and `network.json`
(the numbers drawn) into --out (default: --model_dir), and the PNG as an image summary into
`<model_dir>/pictures` for TensorBoard.
"""

import json
import os
import sys

from absl import app
from absl import flags

import numpy as np

STEM_COLOURS = {"rgb": "#d9534f", "flow": "#5b8bd6", "object": "#5cb85c"}
BLOCK_COLOUR = "#f0ad4e"
HEAD_COLOUR = "#888888"
PEER_COLOUR = "#8e44ad"


# The graph ----------------------------------------------------------------------------------


def graph_from_structure(structure, edge_weights=None):
  """The drawable graph of a `structures.Structure`.

  Args:
    structure: a `structures.Structure`.
    edge_weights: per-node post-sigmoid weights (tuple of tuples, `Structure.edge_weights`
      form); default: the structure's own searched weights; `None` there too draws every
      connection at weight 0.5 and marks the graph `weights='none'`.

  Returns:
    A dict: `nodes` [{index, kind, level, filters, temporal_dilation}], `edges`
    [{source, target, weight}] (plus the head's edges, weight 1), `peers` [] and `weights`
    ('searched', 'given' or 'none').
  """
  from official.modeling import structures  # pylint: disable=g-import-not-at-top
  source = "given"
  if edge_weights is None:
    edge_weights, source = structure.edge_weights, "searched"
  if edge_weights is None:
    source = "none"
  nodes, edges = [], []
  for index, node in enumerate(structure.nodes):
    if isinstance(node, structures.StemSpec):
      nodes.append({"index": index, "kind": node.kind, "level": -1, "filters": None,
                    "temporal_dilation": node.temporal_dilation})
      continue
    nodes.append({"index": index, "kind": "block", "level": node.level,
                  "filters": node.filters, "temporal_dilation": node.temporal_dilation})
    weights = edge_weights[index] if edge_weights is not None else ()
    for j, src in enumerate(node.inputs):
      weight = float(weights[j]) if len(weights) == len(node.inputs) and weights else (
          1.0 if len(node.inputs) == 1 else 0.5)
      edges.append({"source": src, "target": index, "weight": weight})
  head = len(structure.nodes)
  nodes.append({"index": head, "kind": "head", "level": structures.NUM_LEVELS,
                "filters": None, "temporal_dilation": None})
  for index in structure.final_nodes:
    edges.append({"source": index, "target": head, "weight": 1.0})
  return {"name": structure.name, "nodes": nodes, "edges": edges, "peers": [],
          "weights": source}


def graph_from_model(model):
  """The drawable graph of a built (and usually restored) AssembleNet(++) Keras model: the
  edge weights are read from each node's `WeightedFusion`, and for peer-attention the
  softmax over candidate peers of every connection.

  Returns:
    `graph_from_structure`'s dict with `weights='model'` and `peers`
    [{source, target, peer, peer_weight, weights}], one per connection: `peer` is the
    dominant candidate node, `weights` the whole softmax (in candidate order).
  """
  from official.modeling import structures  # pylint: disable=g-import-not-at-top
  structure = model.structure
  graph = graph_from_structure(structure, edge_weights=None)
  graph["weights"] = "model"
  layer_names = {layer.name for layer in model.layers}
  weights_by_target = {}
  for index, node in structure.blocks:
    name = f"node_{index}_fusion"
    if name not in layer_names:
      continue
    fusion = model.get_layer(name)
    if len(node.inputs) > 1:
      weights_by_target[index] = np.asarray(fusion.edge_weight_values(), np.float64)
    if getattr(fusion, "attention_mode", None) != "peer":
      continue
    candidates = [k for k in range(index) if structure.level(k) < node.level]
    for j, src in enumerate(node.inputs):
      softmax = np.asarray(fusion.attentions[j].peer_weights(), np.float64)
      best = int(np.argmax(softmax))
      graph["peers"].append({"source": src, "target": index, "peer": candidates[best],
                             "peer_weight": float(softmax[best]),
                             "candidates": candidates,
                             "weights": [float(w) for w in softmax]})
  for edge in graph["edges"]:
    target_weights = weights_by_target.get(edge["target"])
    if target_weights is not None:
      position = structure.nodes[edge["target"]].inputs.index(edge["source"])
      edge["weight"] = float(target_weights[position])
  graph["name"] = structure.name
  graph["attention_mode"] = getattr(model, "attention_mode", None)
  graph["num_levels"] = structures.NUM_LEVELS
  return graph


# Drawing ------------------------------------------------------------------------------------


def _positions(graph):
  """(x, y) per node: x by column (stems, levels 0..3, head), y spread within the column."""
  columns = {}
  for node in graph["nodes"]:
    columns.setdefault(node["level"], []).append(node["index"])
  positions = {}
  for level, members in columns.items():
    for row, index in enumerate(members):
      positions[index] = (level + 1, (len(members) - 1) / 2.0 - row)
  return positions


def _label(node):
  if node["kind"] == "head":
    return "head"
  if node["kind"] != "block":
    return f"{node['index']}: {node['kind']}\nd={node['temporal_dilation']}"
  return (f"{node['index']}: L{node['level']}\n{4 * node['filters']}ch "
          f"d={node['temporal_dilation']}")


def draw(graph, path_prefix, title=None):
  """Draws `graph` to `<path_prefix>.png` and `.svg`; returns the two paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top

  positions = _positions(graph)
  kinds = {node["index"]: node["kind"] for node in graph["nodes"]}
  tallest = max(sum(1 for n in graph["nodes"] if n["level"] == level)
                for level in {n["level"] for n in graph["nodes"]})
  fig, ax = plt.subplots(figsize=(11, max(4.0, 1.3 * tallest + 1.5)))
  dominant = {(p["source"], p["target"]): p["peer"] for p in graph["peers"]}
  for edge in graph["edges"]:
    (x0, y0), (x1, y1) = positions[edge["source"]], positions[edge["target"]]
    colour = STEM_COLOURS.get(kinds[edge["source"]], "#444444")
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=colour, alpha=0.75,
                                lw=0.5 + 6.0 * edge["weight"], shrinkA=22, shrinkB=22,
                                connectionstyle="arc3,rad=0.08"))
    if graph["weights"] != "none" and kinds[edge["target"]] != "head":
      text = f"{edge['weight']:.2f}"
      if (edge["source"], edge["target"]) in dominant:
        text += f" p{dominant[(edge['source'], edge['target'])]}"
      ax.text(x0 + 0.62 * (x1 - x0), y0 + 0.62 * (y1 - y0), text,
              fontsize=7, ha="center", va="center", zorder=3,
              bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
  for peer in graph["peers"]:
    (x0, y0), (x1, y1) = positions[peer["source"]], positions[peer["target"]]
    xp, yp = positions[peer["peer"]]
    xm, ym = x0 + 0.4 * (x1 - x0), y0 + 0.4 * (y1 - y0)
    ax.annotate("", xy=(xm, ym), xytext=(xp, yp), zorder=2,
                arrowprops=dict(arrowstyle="->", color=PEER_COLOUR, lw=0.8, ls=":", alpha=0.6,
                                shrinkA=22, shrinkB=2, connectionstyle="arc3,rad=-0.25"))
  for node in graph["nodes"]:
    x, y = positions[node["index"]]
    colour = (STEM_COLOURS.get(node["kind"]) or
              (HEAD_COLOUR if node["kind"] == "head" else BLOCK_COLOUR))
    ax.add_patch(patches.FancyBboxPatch((x - 0.3, y - 0.22), 0.6, 0.44,
                                        boxstyle="round,pad=0.02", fc=colour, ec="black",
                                        lw=0.8, zorder=4))
    ax.text(x, y, _label(node), ha="center", va="center", fontsize=8, zorder=5)
  levels = sorted({n["level"] for n in graph["nodes"]})
  head_level = max(levels)
  for level in levels:
    name = {-1: "stems", head_level: "head"}.get(level, f"level {level}")
    ax.text(level + 1, (tallest - 1) / 2.0 + 0.65, name, ha="center", fontsize=10,
            weight="bold")
  legend = [patches.Patch(color=c, label=f"{k} stem") for k, c in STEM_COLOURS.items()]
  legend.append(patches.Patch(color=BLOCK_COLOUR, label="block node"))
  if graph["peers"]:
    legend.append(matplotlib.lines.Line2D([], [], color=PEER_COLOUR, ls=":",
                                          label="dominant peer pK (attention)"))
  ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0),
            ncol=len(legend), fontsize=8, frameon=False)
  weights_note = {"model": "learned/checkpoint edge weights", "searched": "searched weights",
                  "given": "given weights", "none": "no edge weights (drawn at 0.5)"}
  ax.set_title(title or f"{graph['name']}: edge width = connection weight "
               f"({weights_note[graph['weights']]})", fontsize=11)
  ax.set_xlim(-0.5, max(p[0] for p in positions.values()) + 0.6)
  ax.set_ylim(-(tallest - 1) / 2.0 - 0.9, (tallest - 1) / 2.0 + 0.95)
  ax.axis("off")
  fig.tight_layout()
  paths = (path_prefix + ".png", path_prefix + ".svg")
  fig.savefig(paths[0], dpi=90)
  fig.savefig(paths[1])
  plt.close(fig)
  return paths


def write_image_summary(png_path, logdir, name, step=0):
  """Writes a PNG file as a TensorBoard image summary under `logdir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(png_path, "rb") as f:
    image = tf.io.decode_png(f.read(), channels=4)
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    tf.summary.image(name, image[None], step=step)
  writer.flush()
  writer.close()


# Loading ------------------------------------------------------------------------------------


def load_model(model_dir, checkpoint=None):
  """Rebuilds the model of a training run from `<model_dir>/config.gin` and restores
  `checkpoint` (default: the latest in `model_dir`); returns `(model, step)`."""
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  from official.training import checkpointing  # pylint: disable=g-import-not-at-top
  path = checkpointing.resolve_checkpoint(model_dir, checkpoint)
  config = os.path.join(model_dir, "config.gin")
  if not tf.io.gfile.exists(config):
    raise FileNotFoundError(f"{config} not found: is {model_dir} a training run's model_dir?")
  gin.clear_config()
  gin_flags.parse_gin([config], [], finalize=False)
  model = builders.build_model()
  step = tf.Variable(0, dtype=tf.int64)
  status = checkpointing.model_checkpoint(model, step=step).read(path)
  status.expect_partial()
  status.assert_existing_objects_matched()
  return model, int(step.numpy())


def draw_model_dir(model_dir, checkpoint=None, out=None, tensorboard=True):
  """Draws the network of a training run's checkpoint into `out` (default `model_dir`) and
  TensorBoard; returns {'png', 'svg', 'json', 'graph', 'step'}."""
  model, step = load_model(model_dir, checkpoint)
  graph = graph_from_model(model)
  result = _write(graph, out or model_dir,
                  f"{graph['name']} at step {step}: edge width = learned connection weight")
  if tensorboard:
    write_image_summary(result["png"], os.path.join(model_dir, "pictures"), "network", step)
  result["step"] = step
  return result


def draw_structure(name, out):
  """Draws a named structure with its searched weights (no checkpoint needed)."""
  from official.modeling import structures  # pylint: disable=g-import-not-at-top
  graph = graph_from_structure(structures.get_structure(name))
  return _write(graph, out, None)


def _write(graph, out, title):
  os.makedirs(out, exist_ok=True)
  png, svg = draw(graph, os.path.join(out, "network"), title)
  json_path = os.path.join(out, "network.json")
  with open(json_path, "w") as f:
    json.dump(graph, f, indent=1)
  return {"png": png, "svg": svg, "json": json_path, "graph": graph}


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("model_dir", None, "A training run's model_dir (config.gin + "
                      "checkpoints).")
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (default: the latest).")
  flags.DEFINE_string("structure", None, "Draw a named structure with its searched weights "
                      "instead ('full_asnp50', 'asn50', 'asn101', 'demo_asnp').")
  flags.DEFINE_string("out", None, "Output folder (default: --model_dir).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if bool(FLAGS.model_dir) == bool(FLAGS.structure):
    print("error: pass exactly one of --model_dir and --structure", file=sys.stderr)
    return 2
  try:
    if FLAGS.structure:
      result = draw_structure(FLAGS.structure, FLAGS.out or ".")
    else:
      result = draw_model_dir(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.out)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2 if isinstance(e, ValueError) else 1
  print(f"Network picture: {result['png']} and {result['svg']} (numbers: {result['json']})")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
