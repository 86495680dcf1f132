"""Foundation checks: the version entry point, the pinned requirements, and the promise
that the end-of-life TF add-ons package stays out of the repository (README note aside)."""

import glob
import os
import re
import subprocess
import sys

import official

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Spelled in pieces so this file does not match its own search.
ADDONS_NAMES = ("tensorflow" + "-addons", "tensorflow" + "_addons", "import " + "tfa")


def test_version_entry_point_prints_package_and_framework_versions():
  out = subprocess.run([sys.executable, "-m", "official", "--version"], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  assert re.fullmatch(
      rf"assemblenet {re.escape(official.__version__)} \(tensorflow 2\.21\.\d+, "
      r"keras 3\.\d+\.\d+, python 3\.\d+\.\d+\)\n", out), out


def test_version_entry_point_rejects_unknown_arguments():
  result = subprocess.run([sys.executable, "-m", "official", "--bogus"], cwd=ROOT,
                          capture_output=True, text=True)
  assert result.returncode == 2
  assert "--bogus" in result.stderr


def test_requirements_are_pinned():
  extras = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "requirements-*.txt"))
                  if not p.endswith("requirements-dev.txt"))
  with open(os.path.join(ROOT, "requirements-dev.txt")) as f:
    included = {line.split()[1] for line in f if line.startswith("-r ")}
  # The optional extras stay out of the core install, and CI (requirements-dev) tests them.
  assert extras and set(extras) <= included, (extras, included)
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    assert not any(line.startswith("-r") for line in f)
  for name in ["requirements.txt", "requirements-dev.txt"] + extras:
    with open(os.path.join(ROOT, name)) as f:
      for line in f:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
          # name[extras]==version
          assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[0-9][0-9A-Za-z.\-]*",
                              line), (name, line)


def test_the_addons_package_is_mentioned_only_in_the_readme_note():
  offenders = []
  for directory, subdirs, files in os.walk(ROOT):
    subdirs[:] = [d for d in subdirs
                  if not d.startswith((".", "bazel-", "__pycache__", "runs"))]
    for file_name in files:
      path = os.path.join(directory, file_name)
      if os.path.relpath(path, ROOT) == "README.md":
        continue
      try:
        with open(path, encoding="utf-8") as f:
          text = f.read()
      except (UnicodeDecodeError, OSError):
        continue
      if any(name in text for name in ADDONS_NAMES):
        offenders.append(os.path.relpath(path, ROOT))
  assert not offenders, offenders
  with open(os.path.join(ROOT, "README.md")) as f:
    assert "No " + ADDONS_NAMES[0] in f.read()
