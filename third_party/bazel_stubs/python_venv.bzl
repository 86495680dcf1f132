"""`python_venv`: register the repository's virtualenv interpreter as Bazel's Python toolchain.

Bazel runs a py_test through a generated stub that execs the toolchain's `interpreter_path`,
which must be absolute. The venv lives at `<workspace>/.venv`, so its absolute path differs
per checkout (a developer's tree, CI's fresh clone). This repository rule computes it when
Bazel fetches `@venv_python` (no network involved), so nothing machine-specific is committed.

Override with the environment variable BAZEL_VENV_PYTHON=/abs/path/to/python.
"""

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "runtime_pair",
    py2_runtime = None,
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _python_venv_impl(rctx):
    python = rctx.os.environ.get("BAZEL_VENV_PYTHON", "")
    if not python:
        workspace_root = rctx.path(Label("@//:WORKSPACE")).dirname
        python = "%s/%s" % (workspace_root, rctx.attr.interpreter)
    if not python.startswith("/"):
        fail("BAZEL_VENV_PYTHON must be an absolute path, got %r" % python)
    if not rctx.path(python).exists:
        fail(("Python interpreter %s not found. Create the venv first (README):\n" +
              "  python3.11 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt\n" +
              "or set BAZEL_VENV_PYTHON=/abs/path/to/python.") % python)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", _BUILD.format(python = python))

python_venv = repository_rule(
    implementation = _python_venv_impl,
    attrs = {
        "interpreter": attr.string(
            default = ".venv/bin/python",
            doc = "Interpreter path relative to the main workspace root.",
        ),
    },
    environ = ["BAZEL_VENV_PYTHON"],
    local = True,
)
