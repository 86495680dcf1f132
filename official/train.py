"""Trains, evaluates and exports AssembleNet / AssembleNet++ models.

  python -m official.train --mode=train_and_eval --model_dir=DIR \
      --gin_file=gin/experiments/tiny_smoke.gin [--gin_param='Experiment.train_steps=10']

Flags say where and how (paths, mode, strategy); gin says what (gin/experiments/*.gin).
Re-running a training command resumes from the latest checkpoint in --model_dir.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from official import gin_flags
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
flags.mark_flag_as_required("model_dir")
gin_flags.define_gin_flags()

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    gin_flags.parse_gin(FLAGS.gin_file, gin_flags.gin_bindings_from_flags())
  except (ValueError, KeyError, SyntaxError, IOError) as e:
    logging.error("Gin configuration error: %s", e)
    print(f"error: gin configuration: {e}", file=sys.stderr)
    return 2
  flags_text = FLAGS.flags_into_string()
  try:
    result = experiment.run_mode(FLAGS.mode, FLAGS.model_dir, FLAGS.strategy, FLAGS.tpu,
                                 FLAGS.seed, FLAGS.checkpoint, FLAGS.export_dir, flags_text)
  except (FileNotFoundError, RuntimeError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 1
  logging.info("Done: %s", result)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
