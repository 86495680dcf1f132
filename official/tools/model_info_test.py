"""Tests for the model_info tool: exact FLOP counting and the experiment gin files."""


import keras
import pytest
import tensorflow as tf

from official.modeling.layers import conv_2plus1d
from official.tools import model_info


def _graph(fn, shape):
  return tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph


def test_counts_conv_and_dense_multiply_adds():
  conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
  dense = keras.layers.Dense(5)
  graph = _graph(lambda x: dense(tf.reduce_mean(conv(x), axis=[1, 2])), [1, 8, 8, 3])
  assert model_info.count_multiply_adds(graph) == 8 * 8 * 4 * (3 * 3 * 3) + 4 * 5


def test_temporal_conv_costs_as_much_as_its_conv3d():
  layer = conv_2plus1d.TemporalConv(2, 3, num_frames=4, temporal_dilation=1)
  graph = _graph(layer, [4, 2, 2, 3])
  assert model_info.count_multiply_adds(graph) == 4 * 2 * 2 * 2 * (3 * 3)


def test_einsum_multiply_adds():
  weights = tf.ones([3])
  graph = _graph(lambda x: tf.einsum("nkp,k->np", x, weights), [2, 3, 5])
  assert model_info.count_multiply_adds(graph) == 2 * 3 * 5


def test_nested_functions_are_counted():
  inner = tf.function(lambda x: tf.matmul(x, tf.ones([3, 7])), jit_compile=True)
  graph = _graph(lambda x: inner(x) + 1.0, [2, 3])
  assert model_info.count_multiply_adds(graph) == 2 * 3 * 7


@pytest.fixture
def run_main(run_json_main):
  return lambda argv: run_json_main(model_info.main, ["model_info"] + argv)


@pytest.mark.slow
def test_assemblenet50_experiment(run_main):
  info = run_main(["--gin_file=gin/experiments/charades_assemblenet50.gin",
                   "--gin_param=NUM_FRAMES = 2", "--gin_param=IMAGE_SIZE = 32"])
  assert info["trainable_params"] == 36_900_957
  assert info["input_shapes"] == {"rgb": [2, 32, 32, 3]}
  assert info["non_trainable_params"] > 0 and info["gflops_per_clip"] > 0


@pytest.mark.slow
def test_assemblenet_plus50_experiment(run_main):
  info = run_main(["--gin_file=gin/experiments/charades_assemblenet_plus50.gin",
                   "--gin_param=NUM_FRAMES = 2", "--gin_param=IMAGE_SIZE = 32"])
  assert info["model"] == "assemblenet_plus"
  assert info["input_shapes"] == {"rgb": [2, 32, 32, 3], "objects": [2, 32, 32]}
  assert info["trainable_params"] == 48_054_173
