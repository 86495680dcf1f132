"""`python -m official --version` prints the package and framework versions."""

import sys

import official


def main(argv):
  if len(argv) > 1 and argv[1] not in ("--version", "-V"):
    print(f"usage: python -m official --version  (Received: {argv[1:]})",
          file=sys.stderr)
    return 2
  import platform  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print(f"assemblenet {official.__version__} (tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, python {platform.python_version()})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
