"""Inference graphs with oneDNN's graph rewrites switched on, on any CPU.

TensorFlow turns oneDNN's graph rewrites on by default only on x86 CPUs with AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX; there its MklLayoutRewritePass merges each `Pad` into the conv
it feeds. An inference fold that waited for such a `Pad` made every `tf.function` call of
full_asnp50 fail with "N nodes in a cycle" (issue 18, item 0), and a CI machine without
those instructions would never see it. This test sets `TF_ENABLE_ONEDNN_OPTS=1` in a child
process (oneDNN runs on AVX2 too when asked) and checks, on full_asnp50 with every stem:
a `tf.function` inference call, the trainer's evaluation form (`strategy.run` inside a
`tf.function`) and the exported serving signature, each against eager execution.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import tiny_models

CHILD = r"""
import json, sys, tempfile
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from official.data import preprocessing
from official.export import serving
from official.modeling import builders

FRAMES, SIZE, CLASSES = 2, 32, 5
model = builders.build_model(model_type="assemblenet_plus", structure="full_asnp50",
                             depth=26, num_frames=FRAMES, image_size=SIZE,
                             num_classes=CLASSES, attention_mode="peer")
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (2, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
objects = rng.integers(0, 151, (2, FRAMES, SIZE, SIZE), dtype=np.uint8)
inputs = {"rgb": preprocessing.normalize_frames(tf.constant(frames)),
          "objects": tf.constant(objects)}
eager = model(inputs, training=False).numpy()
graph = tf.function(lambda x: model(x, training=False))(inputs).numpy()
strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
evaluation = tf.function(lambda x: strategy.run(lambda y: model(y, training=False),
                                                args=(x,)))(inputs).numpy()
path = serving.export_saved_model(model, tempfile.mkdtemp(), [f"c{i}" for i in range(CLASSES)],
                                  num_frames=FRAMES, image_size=SIZE, uses_objects=True)
served = tf.saved_model.load(path).signatures[serving.SIGNATURE](
    frames=tf.constant(frames), objects=tf.constant(objects))["probabilities"].numpy()
print(json.dumps({
    "onednn": bool(_pywrap_util_port.IsMklEnabled()),
    "graph": float(np.abs(graph - eager).max()),
    "evaluation": float(np.abs(evaluation - eager).max()),
    "served": float(np.abs(served - tf.sigmoid(eager).numpy()).max()),
    "logit_scale": float(np.abs(eager).max())}))
"""


@pytest.mark.slow
def test_inference_evaluation_and_serving_graphs_with_onednn_rewrites():
  env = dict(tiny_models.env(), TF_ENABLE_ONEDNN_OPTS="1")
  done = subprocess.run([sys.executable, "-c", CHILD], cwd=tiny_models.ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["onednn"], "TF_ENABLE_ONEDNN_OPTS=1 did not switch oneDNN on"
  assert result["logit_scale"] > 1e-3  # the comparisons below compare something
  assert result["graph"] < 1e-4 and result["evaluation"] < 1e-4, result
  assert result["served"] < 1e-5, result
