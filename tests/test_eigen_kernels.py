"""The convolution and batch-norm numerics tests under TF's Eigen kernels, on any CPU.

TensorFlow runs oneDNN's CPU kernels by default on x86 CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX, and Eigen's elsewhere (every AVX2-only CPU, where the issue-18 figures
were taken). The two compute and round differently, so a CI machine with oneDNN tests
only one side: `test_layer_implementations` asked Eigen's gradients for an agreement that
only oneDNN's reach, and failed with Eigen unseen (at 52af3a5). This runs the layer tests
and the whole-model equality tests in a child pytest with `TF_ENABLE_ONEDNN_OPTS=0`, and
checks that the child ran Eigen's kernels.
"""

import subprocess
import sys

import pytest

from tests import tiny_models

MODULES = [
    "official/modeling/layers/conv_2plus1d_test.py",
    "official/modeling/layers/batch_norm_test.py",
    "tests/test_layer_implementations.py",
]

CHECK = ("from tensorflow.python.util import _pywrap_util_port; "
         "print(_pywrap_util_port.IsMklEnabled())")


@pytest.mark.slow
def test_layer_numerics_under_eigen_kernels():
  env = dict(tiny_models.env(), TF_ENABLE_ONEDNN_OPTS="0")
  which = subprocess.run([sys.executable, "-c", CHECK], cwd=tiny_models.ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
  assert which.stdout.strip().splitlines()[-1] == "False", "oneDNN stayed on"
  done = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULES],
      cwd=tiny_models.ROOT, env=env, capture_output=True, text=True, timeout=900,
      check=False)
  assert done.returncode == 0, done.stdout[-5000:]
  assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
