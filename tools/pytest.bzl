"""`pytest_test`: a py_test that runs its source file(s) through pytest (tools/bazel_pytest.py)."""

_RUNNER = "//tools:bazel_pytest.py"

# What every test needs at run time: the root conftest.py and pytest.ini (markers, addopts).
_COMMON_DATA = ["//:pytest_config"]

def pytest_test(name, srcs, deps = [], data = [], args = [], tags = [], size = "medium", **kwargs):
    """Declares a Bazel test that runs `srcs` under pytest.

    Args:
      name: target name (by convention the test file's path without `.py`).
      srcs: the pytest file(s) of this target (e.g. ["official/data/preprocessing_test.py"]).
      deps: py_library targets the test imports (e.g. ["//:official"]).
      data: extra runtime files.
      args: extra pytest arguments (e.g. ["-m", "not slow"]).
      tags: Bazel tags; "smoke" marks the targets that .ci/run executes.
      size: Bazel test size (timeout class).
      **kwargs: passed to py_test (timeout, shard_count, flaky, env, ...).
    """
    native.py_test(
        name = name,
        srcs = srcs + [_RUNNER],
        main = _RUNNER,
        args = ["$(rootpath %s)" % src for src in srcs] + args,
        deps = deps,
        data = data + _COMMON_DATA,
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        tags = tags,
        **kwargs
    )

def pytest_tests(srcs, deps = [], data = [], smoke = [], exclude = [], **kwargs):
    """One `pytest_test` per file in `srcs`, named after the file's path without `.py`.

    Args:
      srcs: test files (usually a glob).
      deps: deps of every generated target.
      data: data of every generated target.
      smoke: files whose targets get the "smoke" tag (run by .ci/run).
      exclude: files to skip (declare them with an explicit pytest_test instead).
      **kwargs: passed to every pytest_test.
    """
    for src in srcs:
        if src in exclude:
            continue
        pytest_test(
            name = src[:-len(".py")] if src.endswith(".py") else src,
            srcs = [src],
            deps = deps,
            data = data,
            tags = ["smoke"] if src in smoke else [],
            **kwargs
        )
