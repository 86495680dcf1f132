"""`official.tools.draw_network`: the graph it draws carries the structure's searched weights,
or a checkpoint's learned edge weights and dominant peers; the pictures are real images; the
command line works for a model_dir and for a named structure."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import builders
from official.modeling import structures
from official.tools import draw_network
from official.tools import plots
from official.training import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RGB + object stems, two-input nodes at levels 0, 1 and 3, a single-input node at level 2.
TINY_NODES = [[-1, 1], [-3, 1], [0, [0, 1], 4, 1, 1, 0], [1, [0, 2], 4, 1, 2, 0],
              [2, [3], 4, 1, 2, 0], [3, [2, 4], 4, 1, 2, 0]]


def _tiny_model():
  return builders.build_model(structure=TINY_NODES, edge_weights=None,
                              model_type="assemblenet_plus", depth=26, num_frames=2,
                              image_size=32, num_classes=3, attention_mode="peer")


def test_full_asnp50_graph_has_the_searched_weights():
  graph = draw_network.graph_from_structure(structures.FULL_ASNP50)
  assert graph["weights"] == "searched" and graph["peers"] == []
  edges = {(e["source"], e["target"]): e["weight"] for e in graph["edges"]}
  # One edge per block input plus node 14 -> head.
  assert len(edges) == sum(len(n.inputs) for _, n in structures.FULL_ASNP50.blocks) + 1
  assert edges[(4, 13)] == pytest.approx(0.9739039540290833)
  assert edges[(0, 5)] == pytest.approx(0.6143830418586731)
  assert edges[(14, 15)] == 1.0
  kinds = [n["kind"] for n in graph["nodes"]]
  assert kinds[:5] == ["rgb", "rgb", "flow", "flow", "object"] and kinds[-1] == "head"


def test_graph_from_model_reads_edge_weights_and_dominant_peers():
  model = _tiny_model()
  fusion = model.get_layer("node_3_fusion")  # inputs (0, 2)
  fusion.edge_logits.assign([2.0, -1.0])
  # Candidates of a level-1 node: nodes 0, 1 (stems) and 2 (level 0); make node 1 dominant
  # for connection 0 and node 2 for connection 1.
  fusion.attentions[0].peer_logits.assign([0.0, 3.0, 1.0])
  fusion.attentions[1].peer_logits.assign([0.0, 0.0, 0.5])
  graph = draw_network.graph_from_model(model)
  edges = {(e["source"], e["target"]): e["weight"] for e in graph["edges"]}
  assert edges[(0, 3)] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
  assert edges[(2, 3)] == pytest.approx(1 / (1 + np.exp(1.0)), rel=1e-6)
  assert edges[(3, 4)] == 1.0  # a single input has no edge weight
  peers = {(p["source"], p["target"]): p for p in graph["peers"]}
  assert peers[(0, 3)]["peer"] == 1 and peers[(2, 3)]["peer"] == 2
  softmax = np.exp([0.0, 3.0, 1.0]) / np.exp([0.0, 3.0, 1.0]).sum()
  assert peers[(0, 3)]["weights"] == pytest.approx(softmax, rel=1e-6)
  assert peers[(0, 3)]["candidates"] == [0, 1, 2]
  # Every connection of every block has a peer, including the single-input node 4.
  assert len(graph["peers"]) == sum(len(n.inputs) for _, n in model.structure.blocks)


def test_draw_writes_real_pictures(tmp_path):
  graph = draw_network.graph_from_model(_tiny_model())
  png, svg = draw_network.draw(graph, str(tmp_path / "net"))
  image = tf.io.decode_png(tf.io.read_file(png)).numpy()
  assert image.shape[0] > 300 and image.shape[1] > 600
  assert image.std() > 10  # not a blank canvas
  assert "<svg" in open(svg).read()


def test_model_dir_round_trip_and_tensorboard(tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  gin.clear_config()
  try:
    bindings = (f"build_model.structure = {TINY_NODES}\n"
                "build_model.edge_weights = None\n"
                "build_model.model_type = 'assemblenet_plus'\n"
                "build_model.depth = 26\nbuild_model.num_frames = 2\n"
                "build_model.image_size = 32\nbuild_model.num_classes = 3\n"
                "build_model.attention_mode = 'peer'\n")
    (model_dir / "config.gin").write_text(bindings)
    model = _tiny_model()
    model.get_layer("node_5_fusion").edge_logits.assign([-3.0, 0.5])
    step = tf.Variable(7, dtype=tf.int64)
    tf.train.CheckpointManager(checkpointing.model_checkpoint(model, step=step), str(model_dir),
                               max_to_keep=1).save(checkpoint_number=7)
    result = draw_network.draw_model_dir(str(model_dir))
  finally:
    gin.clear_config()
  assert result["step"] == 7
  edges = {(e["source"], e["target"]): e["weight"]
           for e in json.loads((model_dir / "network.json").read_text())["edges"]}
  assert edges[(2, 5)] == pytest.approx(1 / (1 + np.exp(3.0)), rel=1e-5)
  assert (model_dir / "network.png").stat().st_size > 10_000
  # The picture went to TensorBoard as an image at the checkpoint's step.
  events = [e for path in (model_dir / "pictures").iterdir()
            for e in tf.compat.v1.train.summary_iterator(str(path))]
  images = [(e.step, v.tag) for e in events for v in e.summary.value]
  assert (7, "network") in images


@pytest.mark.slow
def test_command_line_draws_full_asnp50_without_checkpoint(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "official.tools.draw_network", "--structure=full_asnp50",
       f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"), check=True)
  assert "network.png" in out.stdout
  graph = json.loads((tmp_path / "network.json").read_text())
  assert graph["name"] == "full_asnp50" and len(graph["nodes"]) == 16
  assert (tmp_path / "network.svg").stat().st_size > 10_000


def test_chance_levels_match_positive_rates():
  labels = np.zeros((400, 4))
  labels[:40, 0] = 1       # 40 of the 300 videos with an action
  labels[:200, 1] = 1      # 200 of 300
  labels[:, 2] = 0         # no positive: left out, as charades_map does
  labels[200:300, 3] = 1   # 100 of 300; videos 300-399 have no action
  chance = plots.chance_levels(labels, num_draws=100)
  # Videos without actions rank last whatever their scores (charades_map, as the official
  # scorer): the rates are over the 300 videos with an action, not all 400 (0.283).
  expected = (40 + 200 + 100) / 300 / 3
  assert chance["positive_rate"] == pytest.approx(expected)
  # A random ranking's expected AP is close to the positive rate for large sets.
  assert chance["random_map"] == pytest.approx(expected, abs=0.03)


@pytest.mark.slow
def test_command_line_names_an_unknown_structure_in_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "official.tools.draw_network", "--structure=asn49",
       f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Unknown structure name" in errors[0]
