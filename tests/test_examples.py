"""Smoke tests: every example runs to completion, as a user would run it, and says ok.

The examples compare their kernels with the interpreter themselves and exit nonzero on a
mismatch; these tests only run them (in a subprocess, from another directory, with the test
session's kernel cache) and check the exit status and the final line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    cache = os.environ.get("LSTMC_CACHE_DIR") or str(tmp_path_factory.mktemp("lstmc-cache"))
    return dict(os.environ, LSTMC_CACHE_DIR=cache, PYTHONDONTWRITEBYTECODE="1")


def run_example(env: dict, cwd: Path, *args) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def test_every_example_is_tested():
    scripts = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.py")}
    assert scripts == {"quickstart.py", "custom_cell/main.py"}, "add a smoke test"


def test_quickstart(env, tmp_path):
    r = run_example(env, tmp_path, EXAMPLES / "quickstart.py")
    assert r.stdout.splitlines()[-1] == "ok"
    assert "max |kernel - interpreter| y" in r.stdout


def test_custom_cell(env, tmp_path):
    build = tmp_path / "build"
    r = run_example(env, tmp_path, EXAMPLES / "custom_cell" / "main.py", build)
    assert r.stdout.splitlines()[-1].startswith("ok: the artifact matches the interpreter")
    assert "$ lstmc compile" in r.stdout
    # the compiled module and the machine code Numba cached beside it on the first call
    assert (build / "clipped_cifg.py").is_file()
    assert set(os.listdir(build)) <= {"clipped_cifg.py", "__pycache__"}
    clipped = [ln for ln in r.stdout.splitlines() if "the clip held c" in ln]
    assert clipped and not clipped[0].endswith(" 0% of all (t, b, unit)")
