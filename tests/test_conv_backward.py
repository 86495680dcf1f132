"""benchmarks/conv_backward.py on a tiny model: every spatial conv call is found once, and
the FLOP counts and totals follow from the shapes. No timing is asserted."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import conv_backward

TINY_PARAMS = [
    "build_model.structure = 'demo_asnp'",
    "build_model.depth = 26",
    "build_model.edge_weights = None",
    "build_model.num_classes = 5",
]


def test_every_spatial_conv_call_is_counted_with_its_flops():
  from official.modeling import builders  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    records = list(conv_backward.benchmark(
        ["gin/base/model_assemblenet_plus50.gin"], TINY_PARAMS, frames=2, size=16, batch=1,
        runs=5, warmup=1))
    model = builders.build_model()  # the same gin configuration, another instance
  finally:
    gin.clear_config()
  # TemporalConv is not a Conv2D: only spatial convs, each called once per forward pass.
  convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]  # pylint: disable=protected-access
  assert sum(r["count"] for r in records) == len(convs)
  assert sorted(tuple(r["kernel_shape"]) for r in records for _ in range(r["count"])) == \
      sorted(tuple(c.kernel.shape) for c in convs)
  for r in records:
    out = tf.nn.conv2d(tf.zeros(r["input_shape"]), tf.zeros(r["kernel_shape"]),
                       r["strides"], r["padding"]).shape
    assert r["gflop"] == pytest.approx(
        2 * np.prod(out) * np.prod(r["kernel_shape"][:3]) / 1e9)
    assert r["input_shape"][0] == 2  # batch 1 x 2 frames in the (N*T)HWC layout
    assert min(r[key] for key in ("forward_ms", "input_grad_ms", "kernel_grad_ms",
                                  "tf_input_grad_ms", "tf_kernel_grad_ms")) > 0


def test_totals_weight_each_shape_by_its_calls():
  records = [
      {"count": 3, "gflop": 0.5, "forward_ms": 1.0, "input_grad_ms": 2.0, "kernel_grad_ms": 4.0,
       "tf_input_grad_ms": 3.0, "tf_kernel_grad_ms": 4.0},
      {"count": 1, "gflop": 2.0, "forward_ms": 5.0, "input_grad_ms": 5.0, "kernel_grad_ms": 6.0,
       "tf_input_grad_ms": 7.0, "tf_kernel_grad_ms": 6.0},
  ]
  total = conv_backward.totals(records)
  assert total["calls"] == 4 and total["gflop"] == pytest.approx(3.5)
  assert (total["forward_ms"], total["input_grad_ms"], total["kernel_grad_ms"]) == \
      pytest.approx((8.0, 11.0, 18.0))
  assert total["forward_gflops_per_s"] == pytest.approx(3.5 / 8.0 * 1e3)
  assert total["kernel_grad_gflops_per_s"] == pytest.approx(3.5 / 18.0 * 1e3)
  assert total["tf_input_grad_ms"] == pytest.approx(16.0)


def test_fewer_than_five_runs_are_rejected():
  with pytest.raises(ValueError, match="at least 5"):
    next(conv_backward.benchmark([], [], None, None, 1, runs=3, warmup=1))
