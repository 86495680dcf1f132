"""AssembleNet++lite with objects trains through the command line on the synthetic data:
`gin/experiments/tiny_smoke.gin` with a miniature lite network (RGB, flow and object stems,
the authors' (3, 5, 11, 7) blocks per level) bound over its model, a few steps."""

import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LITE_BINDINGS = """
include 'gin/experiments/tiny_smoke.gin'

build_model.model_type = 'assemblenet_plus_lite'
build_model.structure = [[-1, 1], [-2, 1], [-3, 1], [0, [0, 1, 2], [6, 6, 4], 1, 2, 0],
                         [1, [0, 2, 3], [8, 8, 6], 2, 2, 0], [2, [2, 4], [8, 8, 6], 1, 2, 0],
                         [3, [4, 5], [10, 10, 8], 2, 1, 0]]
build_model.edge_weights = None
build_model.depth = None
build_model.attention_mode = 'peer'
build_model.num_object_classes = 151
build_model.authors_fusion_width = False

Experiment.train_steps = 3
Experiment.checkpoint_interval = 3
Experiment.log_interval = 1
"""


@pytest.mark.slow
def test_lite_with_objects_trains_on_synthetic_data(tmp_path):
  gin_file = tmp_path / "tiny_lite.gin"
  gin_file.write_text(LITE_BINDINGS)
  model_dir = tmp_path / "model"
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  result = subprocess.run(
      [sys.executable, "-m", "official.train", "--mode=train", f"--model_dir={model_dir}",
       f"--gin_file={gin_file}"], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert (model_dir / "ckpt-3.index").exists()
  operative = (model_dir / "operative_config.gin").read_text()
  assert "build_model.model_type = 'assemblenet_plus_lite'" in operative
  # The trainer fed uint8 class ids (a one-hot would not fit the model's uint8 input).
  from official.modeling import assemblenet  # pylint: disable=g-import-not-at-top
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from official import gin_flags  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      gin_flags.parse_gin([str(gin_file)], [])
    finally:
      os.chdir(cwd)
    model = builders.build_model()
  finally:
    gin.clear_config()
  assert assemblenet.uses_objects(model) and model.input["objects"].dtype == "uint8"
  assert model.structure.has_stem(-3)
  # log_interval 1: "step S/3 loss L ..." for each step, with a finite loss.
  losses = [float(m.group(2)) for m in re.finditer(r"step (\d+)/3 loss (\S+)", result.stderr)]
  assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), result.stderr[-2000:]
