r"""How far a training step is from the least it can cost: inference and a training step of
the same model, profiled op by op in one process.

  python -m benchmarks.step_floor --gin_file=gin/base/model_assemblenet_plus50.gin \
      --frames=8 --size=224 --batch=1 --intra_op_threads=1 --inter_op_threads=1

Builds the model and both steps as `benchmarks/model_speed.py` does (same flags). Both
modes run, inference first, each under `benchmarks/profile_step.profile` for `--steps`
steps, on the same seeded weights and inputs (`--seed`); profile_step's `--min_share` and
`--top_ops` and model_speed's `--mode`, `--runs` and `--ceiling` do nothing here. Each op
type falls in one of three kinds (`op_kind`):
- `convolution`: forward convolutions and matmuls and their gradients, with Eigen's names
  (`Conv2D`, `_FusedConv2D`, `MatMul`, `Conv2DBackpropInput`, `Conv2DBackpropFilter`,
  `Einsum`, ...) and oneDNN's (`_MklNativeConv2D...`, `_MklMatMul`, ...);
- `batch_norm`: `FusedBatchNorm*` and its gradient (training only: inference folds batch
  norm into the convolutions, `conv_2plus1d.conv_batch_norm`);
- `rest`: everything else, with the XLA-compiled representation flow
  (`profile_step.XLA_OP_TYPE`) and batch norm that runs unfused (Keras' layer on the 5-D
  tensors of AssembleNet++ lite's Conv3D blocks, which inference does not fold either: the
  floor is then looser).

The floor of a training step is `3 x` inference's convolution time (a backward pass does
the convolutions' FLOPs twice more, for the input and the kernel gradients), plus the
step's batch norm, plus inference's rest (the training forward runs those ops too; their
gradients and the optimizer update are counted as free). It is a lower bound on the
step's op time as long as the backward convolutions cannot run faster than the forward
ones per FLOP (a warning says when the step's convolutions took less than 3x inference's).
Inference's fused convolutions also do the bias and ReLU, which the floor triples, and
inference's rest includes folding the batch norms into the kernels (about 12 ms of 0.75 s
for full_asnp50 on one thread), which a training step does not run: both overestimate
the floor slightly (docs/performance.md, issue 18).

Prints one JSON line: per mode, the op seconds per step by kind (`*_op_s`), their sum
and the wall time per step; `floor_op_s`; and the ratios `step_to_inference` (op time),
`step_to_inference_wall`, `floor_to_inference`, `step_to_floor` and `convolution_ratio`
(the step's convolution time over inference's; 3.0 at the forward's speed). With
`--inter_op_threads=1` no two ops overlap and op time is CPU work at
`--intra_op_threads` threads; with more inter-op threads op times of ops that overlap
are summed.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import gin
import tensorflow as tf

from benchmarks import model_speed
from benchmarks import profile_step
from official import runtime

FLAGS = flags.FLAGS

KINDS = ("convolution", "batch_norm", "rest")
_CONVOLUTION_MARKS = ("Conv2D", "Conv3D", "MatMul", "Einsum", "DepthwiseConv")


def op_kind(op_type):
  """'convolution', 'batch_norm' or 'rest' for a TF op type (Eigen's or oneDNN's name)."""
  if "FusedBatchNorm" in op_type:
    return "batch_norm"
  if any(mark in op_type for mark in _CONVOLUTION_MARKS):
    return "convolution"
  return "rest"


def by_kind(per_op):
  """`{op type: (seconds, count)}` -> `{kind: seconds}` over `KINDS`."""
  seconds = dict.fromkeys(KINDS, 0.0)
  for op_type, (op_seconds, _) in per_op.items():
    seconds[op_kind(op_type)] += op_seconds
  return seconds


def floor_record(inference, training, inference_wall, training_wall):
  """The JSON record from the two profiles' `{op type: (seconds, count)}` and wall times."""
  infer, train = by_kind(inference), by_kind(training)
  if not infer["convolution"] or not train["convolution"]:
    raise ValueError(
        "The profiles have no convolution ops (op types: "
        f"{sorted(inference)[:8]}, {sorted(training)[:8]}): the floor needs TF's own "
        "convolution kernels, e.g. not an XLA-compiled step.")
  record = {}
  for mode, kinds, wall in (("inference", infer, inference_wall),
                            ("train", train, training_wall)):
    for kind in KINDS:
      record[f"{mode}_{kind}_op_s"] = kinds[kind]
    record[f"{mode}_op_s"] = sum(kinds.values())
    record[f"{mode}_wall_s"] = wall
  floor = 3 * infer["convolution"] + train["batch_norm"] + infer["rest"]
  record["floor_op_s"] = floor
  record["step_to_inference"] = record["train_op_s"] / record["inference_op_s"]
  record["step_to_inference_wall"] = training_wall / inference_wall
  record["floor_to_inference"] = floor / record["inference_op_s"]
  record["step_to_floor"] = record["train_op_s"] / floor
  record["convolution_ratio"] = train["convolution"] / infer["convolution"]
  return record


def main(argv):
  del argv
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  if model_speed._XLA.value:  # pylint: disable=protected-access
    raise app.UsageError("--xla: an XLA-compiled step runs as one op, whose convolutions, "
                         "batch norms and other ops the profile cannot tell apart.")
  if profile_step._STEPS.value < 1 or model_speed._BATCH.value < 1:  # pylint: disable=protected-access
    raise app.UsageError("--steps and --batch must be at least 1.")
  model_speed.apply_thread_flags()
  args = (FLAGS.gin_file, FLAGS.gin_param, model_speed._FRAMES.value,  # pylint: disable=protected-access
          model_speed._SIZE.value, model_speed._BATCH.value)  # pylint: disable=protected-access
  options = (model_speed._XLA.value, model_speed._PRECISION.value,  # pylint: disable=protected-access
             model_speed._WARMUP.value, profile_step._STEPS.value,  # pylint: disable=protected-access
             model_speed._SEED.value)  # pylint: disable=protected-access
  inference, _, inference_wall = profile_step.profile(*args, "infer", *options)
  with gin.unlock_config():  # the first parse locked it; the second binds the same values
    training, _, training_wall = profile_step.profile(*args, "train", *options)
  record = floor_record(inference, training, inference_wall, training_wall)
  if record["convolution_ratio"] < 3:
    logging.warning(
        "The step's convolutions took %.2fx inference's, less than the 3x of a backward "
        "pass at the forward's speed per FLOP: the floor is not a lower bound here.",
        record["convolution_ratio"])
  record.update({
      "load_avg": os.getloadavg(),
      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
      "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
      "onednn_kernels": runtime.onednn_kernels(),
  })
  print(json.dumps(record, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
