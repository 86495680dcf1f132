"""`official.tools.ablate`: the variant structures are exactly the intended rewirings of
`demo_asnp`, every variant builds through its gin bindings, the table aggregates seeds
correctly, and one command writes the table, chart and JSON."""

import json
import os
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

from official import demo
from official.modeling import assemblenet
from official.modeling import builders
from official.modeling import structures
from official.tools import ablate

DEMO = structures.DEMO_ASNP.to_list()


def test_demo_structure_is_what_the_ablations_assume():
  assert DEMO[:3] == [[-1, 1], [-2, 1], [-3, 1]]
  assert ablate.DEMO_OBJECT_TARGETS == [3, 4, 5, 6]


def test_drop_stems_renumbers_and_removes_connections():
  assert ablate.drop_stems(DEMO, (ablate.FLOW, ablate.OBJECT)) == [
      [-1, 1], [0, [0], 8, 1, 1, 0], [0, [0], 8, 2, 1, 0], [1, [0, 1, 2], 16, 2, 2, 0],
      [2, [1, 3], 32, 4, 2, 0], [3, [3, 4], 64, 1, 2, 0]]
  assert ablate.drop_stems(DEMO, (ablate.OBJECT,)) == [
      [-1, 1], [-2, 1], [0, [0, 1], 8, 1, 1, 0], [0, [0], 8, 2, 1, 0],
      [1, [0, 1, 2, 3], 16, 2, 2, 0], [2, [2, 4], 32, 4, 2, 0], [3, [4, 5], 64, 1, 2, 0]]


def test_limit_object_connections():
  one = ablate.limit_object_connections(DEMO, [3])
  assert [n[1] for n in one[3:]] == [[0, 1, 2], [0], [0, 1, 3, 4], [3, 5], [5, 6]]
  assert ablate.limit_object_connections(DEMO, [3, 4, 5, 6]) == DEMO
  assert ablate.limit_object_connections(DEMO, []) == ablate.drop_stems(DEMO, (-3,))
  with pytest.raises(ValueError, match="lose all its inputs"):
    ablate.drop_stems([[-1, 1], [-3, 1], [0, [1], 4, 1, 1, 0], [3, [2], 4, 1, 2, 0]],
                      (ablate.OBJECT,))


def test_variant_properties():
  variants = {v.name: v for v in ablate.VARIANTS}
  assert [variants[f"objects_{k}"].object_connections for k in (0, 1, 2)] == [0, 1, 2]
  assert variants["attention_peer"].object_connections == 4
  assert variants["rgb"].streams == "RGB"
  assert variants["rgb_flow_objects"].streams == "RGB + flow + objects"
  assert variants["plain"].streams == "RGB" and variants["plain_objects"].uses_objects


@pytest.mark.parametrize("variant", ablate.VARIANTS, ids=lambda v: v.name)
def test_every_variant_builds_from_its_bindings(variant):
  gin.clear_config()
  try:
    demo.parse_gin([demo.DEFAULT_GIN], variant.bindings() + ["NUM_FRAMES = 4"])
    model = builders.build_model()
  finally:
    gin.clear_config()
  assert model.structure.to_list() == variant.structure
  assert model.attention_mode == variant.attention_mode
  assert assemblenet.uses_objects(model) == variant.uses_objects
  # Fixed connectivity: every multi-input fusion has constant, untrainable 0.5 weights.
  fusions = [l for l in model.layers if l.name.endswith("_fusion") and l.num_inputs > 1]
  assert bool(fusions) == (variant.name != "plain")  # the plain chain has no fusion
  for layer in fusions:
    values = layer.edge_weight_values().numpy()
    if variant.edge_weights == "fixed":
      np.testing.assert_allclose(values, 0.5, rtol=1e-6)
      assert not layer.edge_logits.trainable
    else:
      assert layer.edge_logits.trainable


def test_summarise_means_and_shared_rows():
  records = []
  for seed, offset in ((0, 0.0), (1, 0.1)):
    for k, v in enumerate(ablate.VARIANTS):
      records.append({"variant": v.name, "seed": seed, "map": 0.3 + 0.01 * k + offset,
                      "seconds": 10.0})
  rows = ablate.summarise(records)
  assert len(rows) == len(ablate.VARIANTS) + len(ablate.SHARED_ROWS)
  by_name = {(r["group"], r["name"]): r for r in rows}
  peer = by_name[("attention", "peer-attention")]
  k = [v.name for v in ablate.VARIANTS].index("attention_peer")
  assert peer["map"] == pytest.approx(0.35 + 0.01 * k)
  assert peer["map_std"] == pytest.approx(0.05) and peer["seeds"] == [0, 1]
  # The shared baselines repeat the runs they stand for.
  assert by_name[("attention", "none")]["variant"] == "rgb_flow_objects"
  assert by_name[("connectivity", "learned (one-shot search)")]["map"] == peer["map"]
  assert [r["name"] for r in rows if r["group"] == "attention"] == [
      "none", "self-attention", "peer-attention"]
  assert [r["name"] for r in rows if r["group"] == "object connections"][:3] == [
      "0 (no object stem)", "1", "2"]
  table = ablate.markdown_table(rows, {"positive_rate": 0.2, "random_map": 0.21,
                                       "random_map_std": 0.01}, [0, 1], "cmd", ["b"])
  assert f"| attention | peer-attention | RGB + flow + objects | peer | learned | 4 | " \
         f"{peer['map']:.3f} ± 0.050 |" in table
  assert "Seeds: 0, 1" in table


@pytest.mark.slow
def test_one_command_writes_table_chart_and_json(tmp_path):
  tiny = ["prepare_synthetic_charades.num_train = 16",
          "prepare_synthetic_charades.num_test = 8", "NUM_FRAMES = 4",
          "Experiment.train_batch_size = 4", "Experiment.eval_batch_size = 8",
          "Experiment.eval_interval = 0", "Experiment.log_interval = 2",
          "Experiment.checkpoint_interval = 100"]
  result = ablate.run(str(tmp_path), [demo.DEFAULT_GIN], seeds=(3,), steps=4,
                      only=["plain", "rgb"], extra_bindings=tiny)
  assert [r["variant"] for r in result["rows"]] == ["rgb", "plain"]
  assert all(r["seeds"] == [3] for r in result["rows"])
  table = (tmp_path / "ablations.md").read_text()
  assert "| streams | RGB only |" in table and "| generality | plain (2+1)D ResNet |" in table
  saved = json.loads((tmp_path / "ablations.json").read_text())
  assert {r["variant"] for r in saved["records"]} == {"rgb", "plain"}
  for record in saved["records"]:
    metrics = json.loads((tmp_path / f"{record['variant']}_seed3" / "eval" /
                          "metrics.json").read_text())
    assert metrics["map"] == record["map"] and metrics["step"] == 4
  image = tf.io.decode_png(tf.io.read_file(str(tmp_path / "ablations.png"))).numpy()
  assert image.std() > 10
  # One dataset for all variants.
  assert os.listdir(tmp_path / "synthetic_data")


@pytest.mark.slow
def test_a_rerun_never_reports_another_configurations_run(tmp_path):
  # Before: out/<variant>_seed<seed> was reused without a check: a rerun with another budget
  # or config found the old checkpoint at or past train_steps, trained nothing, and
  # reported the old run's mAP, with the ~1 s of the no-op as its seconds.
  tiny = ["prepare_synthetic_charades.num_train = 16",
          "prepare_synthetic_charades.num_test = 8", "NUM_FRAMES = 4",
          "Experiment.train_batch_size = 4", "Experiment.eval_batch_size = 8",
          "Experiment.eval_interval = 0", "Experiment.log_interval = 2",
          "Experiment.checkpoint_interval = 100"]
  first = ablate.run(str(tmp_path), [demo.DEFAULT_GIN], seeds=(0,), steps=4, only=["plain"],
                     extra_bindings=tiny)
  with pytest.raises(ValueError, match=r"plain_seed0 holds a run of another configuration "
                     r"or budget"):
    ablate.run(str(tmp_path), [demo.DEFAULT_GIN], seeds=(0,), steps=2, only=["plain"],
               extra_bindings=tiny)
  # The same command again reuses the finished run: its mAP and its own training time.
  again = ablate.run(str(tmp_path), [demo.DEFAULT_GIN], seeds=(0,), steps=4, only=["plain"],
                     extra_bindings=tiny)
  assert again["records"][0]["map"] == first["records"][0]["map"]
  assert again["records"][0]["seconds"] == first["records"][0]["seconds"]


@pytest.mark.slow
def test_a_rerun_after_the_gin_file_changed_is_refused(tmp_path):
  # Before: the run record held the gin files' paths, not what they say: after an edit of
  # the file (or a package upgrade changing the demo's), a rerun reused the old mAP.
  tiny = ["prepare_synthetic_charades.num_train = 16",
          "prepare_synthetic_charades.num_test = 8", "NUM_FRAMES = 4",
          "Experiment.train_batch_size = 4", "Experiment.eval_batch_size = 8",
          "Experiment.eval_interval = 0", "Experiment.log_interval = 2",
          "Experiment.checkpoint_interval = 100"]
  gin_file = tmp_path / "edited.gin"
  shutil.copy(demo.DEFAULT_GIN, gin_file)
  out = tmp_path / "out"
  ablate.run(str(out), [str(gin_file)], seeds=(0,), steps=2, only=["plain"],
             extra_bindings=tiny)
  with open(gin_file, "a") as f:
    f.write("\nBASE_LEARNING_RATE = 5.0\n")
  with pytest.raises(ValueError, match="holds a run of another configuration or budget"):
    ablate.run(str(out), [str(gin_file)], seeds=(0,), steps=2, only=["plain"],
               extra_bindings=tiny)
  # A folder written before the record existed is named as such.
  os.remove(out / "plain_seed0" / ablate.RUN_RECORD)
  with pytest.raises(ValueError, match="an earlier version of this tool"):
    ablate.run(str(out), [str(gin_file)], seeds=(0,), steps=2, only=["plain"],
               extra_bindings=tiny)
