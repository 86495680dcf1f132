r"""Prints one JSON line describing the model a gin configuration builds.

  python -m official.tools.model_info --gin_file=gin/experiments/charades_assemblenet50.gin \
      [--gin_param='build_model.num_frames = 8' ...]

Fields: `trainable_params`, `non_trainable_params`, `gflops_per_clip` (2 FLOPs per
multiply-add of the convolutions and dense layers, for one clip at the configured shape;
element-wise work such as batch norm, pooling and the TV-L1 iterations is not counted) and
`input_shapes` (per input, without the batch dimension).
"""

import json
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from official import gin_flags
from official.modeling import builders

FLAGS = flags.FLAGS
gin_flags.define_gin_flags()
flags.adopt_module_key_flags(gin_flags)  # Listed by --help.

# Graph ops whose multiply-adds are counted, with how to count them.
_MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul")


def _static_shape(tensor):
  shape = tensor.shape
  if shape.rank is None or any(d is None for d in shape.as_list()):
    raise ValueError(f"Op input/output has a dynamic shape: {tensor.name} {shape}")
  return shape.as_list()


def count_multiply_adds(graph):
  """Multiply-adds of every Conv2D/Conv3D/MatMul/Einsum in a graph with static shapes."""
  total = 0
  for op in graph.get_operations():
    if op.type in ("Conv2D", "Conv3D"):
      kernel = _static_shape(op.inputs[1])
      output = _static_shape(op.outputs[0])
      # Kernel [*window, C_in, C_out]: every output element costs window*C_in MACs.
      total += int(np.prod(output)) * int(np.prod(kernel[:-1]))
    elif op.type in ("DepthwiseConv2dNative",):
      kernel = _static_shape(op.inputs[1])
      output = _static_shape(op.outputs[0])
      total += int(np.prod(output)) * kernel[0] * kernel[1]
    elif op.type in _MATMUL_OPS:
      a = _static_shape(op.inputs[0])
      output = _static_shape(op.outputs[0])
      transpose_a = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
      inner = a[-2] if transpose_a else a[-1]
      total += int(np.prod(output)) * inner
    elif op.type == "Einsum":
      total += _einsum_multiply_adds(op)
    elif op.type in ("StatefulPartitionedCall", "PartitionedCall"):
      # A nested tf.function (e.g. an XLA-compiled part of a layer): count its body.
      total += count_multiply_adds(_function_graph(graph, op.get_attr("f").name))
  return total


def _function_graph(graph, name):
  function = graph._get_function(name)  # pylint: disable=protected-access
  if function is None:
    raise ValueError(f"Nested function {name!r} not found; cannot count FLOPs.")
  return function.graph


def _einsum_multiply_adds(op):
  equation = op.get_attr("equation").decode()
  operands, _ = equation.split("->")
  sizes = {}
  for letters, tensor in zip(operands.split(","), op.inputs):
    for letter, size in zip(letters, _static_shape(tensor)):
      sizes[letter] = size
  # Every combination of all indices is one multiply-add.
  return int(np.prod(list(sizes.values())))


def model_info(model):
  """The JSON-able summary of a built model (batch of one clip for the FLOPs)."""
  specs = {
      key: tf.TensorSpec([1] + list(tensor.shape[1:]), tensor.dtype)
      for key, tensor in model.input.items()
  }
  function = tf.function(lambda inputs: model(inputs, training=False))
  graph = function.get_concrete_function(specs).graph
  multiply_adds = count_multiply_adds(graph)
  count = lambda weights: int(sum(np.prod(w.shape) for w in weights))
  return {
      "model": model.name,
      "trainable_params": count(model.trainable_weights),
      "non_trainable_params": count(model.non_trainable_weights),
      "gflops_per_clip": round(2 * multiply_adds / 1e9, 3),
      "input_shapes": {key: list(tensor.shape[1:]) for key, tensor in model.input.items()},
  }


def main(argv):
  del argv
  # Only the model is built: required data paths of experiment files may stay unset.
  gin_flags.parse_gin(FLAGS.gin_file, gin_flags.gin_bindings_from_flags(), finalize=False)
  model = builders.build_model()
  print(json.dumps(model_info(model), sort_keys=True))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
