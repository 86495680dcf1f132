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
import gin

from official.training import experiment
from official.training import strategies

flags.DEFINE_enum("mode", "train_and_eval", experiment.MODES, "What to run.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, evaluation outputs.")
flags.DEFINE_multi_string("gin_file", [], "Gin config files (repeatable).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'Experiment.train_steps=10' "
                          "(repeatable).")
flags.DEFINE_multi_string("gin_bindings", [], "Alias of --gin_param.")
flags.DEFINE_enum("strategy", "one_device", strategies.STRATEGIES, "Distribution strategy.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (--strategy=tpu).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.")
flags.DEFINE_string("export_dir", None, "TF Serving base path for --mode=export "
                    "(default: MODEL_DIR/export).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory for eval/export "
                    "(default: the latest in --model_dir).")
flags.mark_flag_as_required("model_dir")

FLAGS = flags.FLAGS


def parse_gin(gin_files, gin_bindings):
  """Parses gin files and bindings; unknown configurables and parameters are errors that
  name the binding."""
  # Importing registers the configurables the gin files name.
  import data_prep  # pylint: disable=g-import-not-at-top,unused-import
  from official.data import input_pipeline  # pylint: disable=g-import-not-at-top,unused-import
  from official.modeling import builders  # pylint: disable=g-import-not-at-top,unused-import
  from official.training import synthetic_data  # pylint: disable=g-import-not-at-top,unused-import
  gin.parse_config_files_and_bindings(gin_files, gin_bindings, finalize_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    parse_gin(FLAGS.gin_file, FLAGS.gin_param + FLAGS.gin_bindings)
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
