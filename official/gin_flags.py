"""The gin side of every command line: `--gin_file`, `--gin_param` (alias `--gin_bindings`)
and parsing them with every configurable registered.

Several mains (train, model_info, benchmarks, tools) share these flags, and tests import more
than one of them into a process, so the flags are defined once, by whichever comes first.
Each main lists them under `--help` with `flags.adopt_module_key_flags(gin_flags)`.

`include` lines in the gin files name files relative to the repository root, which is on
gin's search path: a gin file given by absolute path works from any directory.
"""

import os
import re

from absl import flags
import gin

# The repository root: `include 'gin/base/train.gin'` resolves against it from any cwd.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_gin_flags():
  """Defines `--gin_file`, `--gin_param` and `--gin_bindings` unless already defined."""
  if "gin_file" in flags.FLAGS:
    return
  flags.DEFINE_multi_string("gin_file", [], "Gin config files, parsed in order (repeatable).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings applied after the files, e.g. "
                            "'Experiment.train_steps=10' (repeatable).")
  flags.DEFINE_multi_string("gin_bindings", [], "Alias of --gin_param.")


def add_repository_search_path():
  """Puts the repository root on gin's include search path (once)."""
  # gin keeps the search path in a module list and has no query for it.
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  if ROOT not in getattr(gin_config, "_LOCATION_PREFIXES", ()):
    gin.add_config_file_search_path(ROOT)


def gin_bindings_from_flags():
  """`--gin_param` then `--gin_bindings` values."""
  return list(flags.FLAGS.gin_param) + list(flags.FLAGS.gin_bindings)


def parse_gin(gin_files, gin_bindings, finalize=True):
  """Parses gin files and bindings with every configurable of the package registered;
  unknown configurables and parameters are errors that name the binding.

  `finalize=False` leaves `%gin.REQUIRED` values (data paths) unchecked, for tools that
  only build the model.
  """
  # Importing registers the configurables the gin files name.
  import data_prep  # pylint: disable=g-import-not-at-top,unused-import
  from official.data import input_pipeline  # pylint: disable=g-import-not-at-top,unused-import
  from official.modeling import builders  # pylint: disable=g-import-not-at-top,unused-import
  from official.search import genome  # pylint: disable=g-import-not-at-top,unused-import
  from official.training import experiment  # pylint: disable=g-import-not-at-top,unused-import
  from official.training import synthetic_data  # pylint: disable=g-import-not-at-top,unused-import
  add_repository_search_path()
  try:
    gin.parse_config_files_and_bindings(gin_files, gin_bindings, finalize_config=finalize)
  except ValueError as e:
    hint = _binding_hint(str(e), input_pipeline.RUNNER_ARGUMENTS)
    if hint is None:
      raise
    raise ValueError(f"{hint} ({e})") from e
  _refuse_scoped_input_bindings()


def _refuse_scoped_input_bindings():
  """The runner makes one `VideoInput`, outside any gin scope: a scoped binding such as
  `eval/VideoInput.num_clips` would be silently ignored, so it is an error."""
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  scoped = sorted(f"{scope}/{selector.rsplit('.', 1)[-1]}" for scope, selector in
                  getattr(gin_config, "_CONFIG", {}) if scope and
                  selector.rsplit(".", 1)[-1] == "VideoInput")
  if scoped:
    raise ValueError(
        f"Scoped VideoInput bindings ({', '.join(scoped)}.*) are not read: the runner makes "
        "one VideoInput, whose training settings (area_range, random_flip, "
        "shuffle_buffer) and evaluation settings (num_clips, num_crops) are separate "
        "parameters already. Bind VideoInput.<name> without a scope.")


def _binding_hint(message, runner_arguments):
  """Where a binding that gin rejected belongs, for the two mistakes a user of an older
  configuration makes: an argument the runner sets, and the old `build_dataset.*` name."""
  match = re.match(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'",
                   message)
  configurable, name = match.groups() if match else (None, None)
  if configurable == "VideoInput" and name in runner_arguments:
    return (f"VideoInput.{name} cannot be bound: the runner sets it from "
            f"{runner_arguments[name]}")
  if configurable == "VideoInput" and name == "objects_format":
    return ("VideoInput.objects_format (build_dataset.objects_format) no longer exists: "
            "object maps are always the stored uint8 class ids; remove the binding")
  if configurable == "build_model" and name in ("use_object_input", "object_input"):
    return (f"build_model.{name} no longer exists: a model takes uint8 object class ids "
            "exactly when its structure has an object stem (-3); remove the binding")
  if message.startswith("No configurable matching 'build_dataset'"):
    return ("build_dataset.* bindings are now VideoInput.* (the input's gin name); rename "
            "them")
  return None
