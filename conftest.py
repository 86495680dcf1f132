"""Test-wide settings: quiet TensorFlow logs, small thread pools on 2-core machines."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


import json  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def run_json_main(capsys):
  """Runs an absl main in-process with `argv` (flags parsed, gin cleared before and after)
  and returns the single JSON line it prints."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top

  def run(main, argv):
    gin.clear_config()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
      main([])
    finally:
      gin.clear_config()
      flags.FLAGS.unparse_flags()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])
  return run
