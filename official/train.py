"""Trains, evaluates and exports AssembleNet / AssembleNet++ models.

  python -m official.train --mode=train_and_eval --model_dir=DIR \
      --gin_file=gin/experiments/tiny_smoke.gin [--gin_param='Experiment.train_steps=10']

Flags say where and how (paths, mode, strategy); gin says what (gin/experiments/*.gin).
Re-running a training command resumes from the latest checkpoint in --model_dir (and runs
any due evaluation the interrupted run did not finish); a second training job on the same
--model_dir is refused. --mode=continuous_eval evaluates each new checkpoint of a training
job once, beside it. Every mode ends by printing where its outputs are; a failure is one
`error:` line naming the input and the way out (exit status 1; 2 for configuration errors).
"""

import errno
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from official import errors
from official import gin_flags
from official import runtime
from official.training import experiment
from official.training import strategies

flags.DEFINE_enum("mode", "train_and_eval", experiment.MODES, "What to run.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, evaluation outputs.")
flags.DEFINE_enum("strategy", "one_device", strategies.STRATEGIES, "Distribution strategy.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (--strategy=tpu).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.")
flags.DEFINE_string("export_dir", None, "TF Serving base path for --mode=export "
                    "(default: MODEL_DIR/export).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory for eval/export "
                    "(default: the latest in --model_dir).")
flags.DEFINE_float("eval_timeout", 3600.0, "--mode=continuous_eval stops after this many "
                   "seconds without a new checkpoint (it stops anyway once the final step "
                   "is evaluated).")
flags.DEFINE_integer("intra_op_threads", 0, "TF threads that split one op's work "
                     "(0: TF's default, one per core). See docs/performance.md for 2-core "
                     "figures.")
flags.DEFINE_integer("inter_op_threads", 0, "TF threads that run independent ops at once "
                     "(0: TF's default, one per core).")
flags.mark_flag_as_required("model_dir")
gin_flags.define_gin_flags()
flags.adopt_module_key_flags(gin_flags)  # --gin_file and --gin_param under --help.

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  try:
    runtime.set_thread_counts(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
  except (ValueError, RuntimeError) as e:
    return _error(str(e), 2)
  try:
    gin_flags.parse_gin(FLAGS.gin_file, gin_flags.gin_bindings_from_flags())
  except (ValueError, KeyError, SyntaxError, IOError) as e:
    return _error(f"gin configuration: {e}", 2)
  flags_text = command_flags_text()
  try:
    result = experiment.run_mode(FLAGS.mode, FLAGS.model_dir, FLAGS.strategy, FLAGS.tpu,
                                 FLAGS.seed, FLAGS.checkpoint, FLAGS.export_dir, flags_text,
                                 FLAGS.eval_timeout)
  except errors.ConfigError as e:
    return _error(f"gin configuration: {e}", 2)
  except RuntimeError as e:
    if not str(e).startswith(_GIN_MISSING_BINDINGS):
      return _error(str(e), 1)
    given = [os.path.normpath(f) for f in FLAGS.gin_file or []]
    missing = [f for f in _TRAINING_GIN_FILES
               if not any(g.endswith(os.path.normpath(f)) for g in given)]
    example = (" (e.g. " + " ".join(f"--gin_file={f}" for f in missing) + ")"
               if missing else "")
    return _error(f"gin configuration: {e}. The gin files give no value for these: a "
                  "model-only file (gin/base/model_*.gin, gin/experiments/"
                  "charades_assemblenet50.gin) needs the data, training and optimizer "
                  f"files after it{example}, or use a whole experiment file such as "
                  "gin/experiments/charades_assemblenet_plus50.gin.", 2)
  except (FileNotFoundError, FloatingPointError) as e:
    # Checkpoints damaged or missing, data not prepared, model_dir locked, NaN stop, a full
    # disk: the message names the input and the way out; the traceback is not needed.
    return _error(str(e), 1)
  except (OSError, tf.errors.OpError) as e:
    if not _disk_full(e):
      raise
    # Outside checkpoint writes (which name their own way out): summaries, evaluation files.
    return _error(f"No space left on device while writing to --model_dir={FLAGS.model_dir} "
                  f"({e}). Free space and rerun the same command: training resumes from "
                  "its latest checkpoint, and due evaluations without a result are redone.", 1)
  logging.info("Done: %s", result)
  for line in experiment.output_summary(FLAGS.mode, FLAGS.model_dir, result):
    print(line)
  return 0


# How gin's RuntimeError for a configurable called without its gin.REQUIRED arguments
# starts (gin/config.py).
_GIN_MISSING_BINDINGS = "Required bindings for"
# What a model-only gin file needs after it (Charades data as the example).
_TRAINING_GIN_FILES = ("gin/base/data_charades.gin", "gin/base/train.gin",
                       "gin/base/optimizer.gin")


def _disk_full(error):
  return (getattr(error, "errno", None) == errno.ENOSPC or
          "No space left on device" in str(error))


def command_flags_text():
  """The package's own flags as `--name=value` lines (flags.txt): the record of the
  command. The flags that absl, TensorFlow and TFDS define are left out: they say nothing
  about the run, and some follow the environment (absl's `--test_tmpdir` is under
  $TMPDIR, set per job on clusters), which made the same command look changed."""
  lines = []
  for module, module_flags in sorted(FLAGS.flags_by_module_dict().items()):
    if module.split(".")[0] in ("absl", "tensorflow", "tensorflow_datasets", "keras"):
      continue
    lines += [flag.serialize() for flag in module_flags if flag.serialize()]
  return "\n".join(sorted(set(lines))) + "\n"


def _error(message, status):
  logging.error("%s", message)
  # One line: gin appends its context ("In call to configurable ...") on further lines.
  print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()),
        file=sys.stderr)
  return status


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
