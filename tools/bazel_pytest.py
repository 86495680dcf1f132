"""Main of every Bazel `pytest_test` target: runs pytest on the test files given as arguments.

Bazel starts this with the test's runfiles tree as the working directory, which holds the
sources, `conftest.py` and `pytest.ini` laid out as in the repository, so pytest sees the same
configuration as `python -m pytest` from the repository root. See tools/pytest.bzl.
"""

import os
import sys


def main(argv):
  import pytest  # pylint: disable=g-import-not-at-top

  args = [
      "-p", "no:cacheprovider",  # the runfiles tree is not ours to write into
      "-p", "no:xdist",  # Bazel already runs test targets in parallel
  ]
  xml_output = os.environ.get("XML_OUTPUT_FILE")
  if xml_output:  # Bazel then reports individual test cases from it
    args.append("--junitxml=" + xml_output)
  test_tmpdir = os.environ.get("TEST_TMPDIR")
  if test_tmpdir:  # keep tmp_path inside Bazel's per-test scratch directory
    args.append("--basetemp=" + os.path.join(test_tmpdir, "pytest"))
  # Bazel test sharding (shard_count) is not supported: every shard would run all tests.
  return pytest.main(args + argv[1:])


if __name__ == "__main__":
  sys.exit(main(sys.argv))
