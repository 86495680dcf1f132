"""The one error type shared by the gin-configured parts: a value that cannot work.

`python -m official.train` (and the other mains) print a `ConfigError` as one `error:` line
and exit with status 2, like a gin parsing error; its message names the gin binding to change
(`Experiment.train_steps`, `VideoInput.num_frames`, `NUM_CLASSES`), not the code that
would have failed on it later.
"""


class ConfigError(ValueError):
  """A configured value of the wrong type or range, or values that disagree."""


def check_int(binding, value, minimum=1, allow_none=False):
  """Returns `value` when it is an integer >= `minimum` (or None with `allow_none`).

  Args:
    binding: the gin name of the value, e.g. 'Experiment.train_steps'.

  Raises:
    ConfigError: naming `binding` and the value received.
  """
  if value is None and allow_none:
    return value
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    kind = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    raise ConfigError(f"{binding} must be {kind}{' or None' if allow_none else ''}. "
                      f"Received: {binding} = {value!r}")
  return value


def check_bool(binding, value):
  """Returns `value` when it is a bool; raises `ConfigError` naming `binding` otherwise."""
  if not isinstance(value, bool):
    raise ConfigError(f"{binding} must be True or False. Received: {binding} = {value!r}")
  return value
