"""Shared fixtures: a fresh database path per test, and a helper that runs Python code
in a child process (for crash, faulthandler and multi-process tests)."""

import os
import subprocess
import sys
import textwrap

import pytest


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "test.wdb")


def run_py(code, *args, timeout=120, env=None, check=True):
    """Run `code` in a fresh interpreter; return the CompletedProcess (text output)."""
    e = dict(os.environ)
    e.pop("PYTHONFAULTHANDLER", None)
    if env:
        e.update(env)
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"child exited with {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        )
    return p
