"""The `lstmc` command line, driven the way a user drives it: `python -m lstmc ...` in a
subprocess (a few in-process runs through click's CliRunner where a failure must be injected).

- `compile` writes a module that a fresh Python, with lstmc, networkx and yaml blocked from
  import, loads and runs; its results match the interpreter run here.
- A compile that fails (bad spec, a write error, an interrupt, SIGKILL half-way) leaves DIR
  exactly as it was, whether DIR existed (with files) or not.
- Golden files pin `check`'s diagnostics (tests/golden/cli/check/*.stderr) and `show`'s IR
  (tests/golden/cli/show/*.ir). Regenerate them with LSTMC_UPDATE_GOLDEN=1 after an intended
  change, and review the diff.

Every subprocess shares one LSTMC_CACHE_DIR for the session, so a kernel is compiled once.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import lstmc
from lstmc import cells
from lstmc.cli import cli
from lstmc.compiler import DEFAULT_OPT
from lstmc.ir.interface import signature_of

GOLDEN = Path(__file__).parent / "golden" / "cli"
UPDATE = bool(os.environ.get("LSTMC_UPDATE_GOLDEN"))
VERBS = ["compile", "check", "show", "graph", "cells", "run", "bench"]


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict:
    """The environment of every CLI subprocess: the session's kernel cache (conftest's, else
    one of our own), and a private temporary directory (so a killed run's leftovers stay inside pytest's tmp)."""
    tmp = tmp_path_factory.mktemp("systmp")
    cache = os.environ.get("LSTMC_CACHE_DIR") or str(tmp_path_factory.mktemp("lstmc-cache"))
    return dict(
        os.environ,
        LSTMC_CACHE_DIR=cache,
        TMPDIR=str(tmp),
        PYTHONDONTWRITEBYTECODE="1",
    )


def lstmc_cli(env: dict, *args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lstmc", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def snapshot(path: Path):
    """Everything observable about a directory tree: names, kinds, bytes, modes, mtimes."""
    if not path.exists():
        return None
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(path))
        out[rel] = (
            ("dir", st.st_mode) if p.is_dir() else (p.read_bytes(), st.st_mode, st.st_mtime_ns)
        )
    return out


def populated_dir(path: Path) -> Path:
    """A DIR a user already has: an older module of the same name, other files, a folder."""
    path.mkdir(parents=True)
    (path / "lstm.py").write_text("# an older lstm module\nkernel = None\n")
    (path / "notes.txt").write_text("keep me\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return path


def golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"missing golden file {path}; run with LSTMC_UPDATE_GOLDEN=1"
    assert actual == path.read_text(), f"differs from {path} (LSTMC_UPDATE_GOLDEN=1 to update)"


# -- compile: a standalone artifact --------------------------------------------------------------

# Run in a fresh interpreter: block lstmc, networkx and yaml, import the artifact from DIR,
# call it on the arrays in an .npz, save what it returns.
ARTIFACT_SCRIPT = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"lstmc", "networkx", "yaml"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")

    sys.meta_path.insert(0, Block())
    for name in list(sys.modules):
        assert name.partition(".")[0] not in BLOCKED, name
    try:
        import yaml
    except ImportError:
        pass
    else:
        raise AssertionError("the import blocker does not work")

    import numpy as np

    folder, module_name, function, data_file, out_file = sys.argv[1:]
    sys.path.insert(0, folder)
    module = __import__(module_name)
    data = np.load(data_file)
    params = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
    state = {k[2:]: data[k] for k in data.files if k.startswith("s:")}
    y, final = getattr(module, function)(data["x"], params, state)
    y = y if isinstance(y, dict) else {"y": y}
    try:
        module.kernel(data["x"][:, :, :-1], params)
    except ValueError as exc:  # KernelArgumentError: a clear error, no crash
        bad_shape = str(exc)
    else:
        raise AssertionError("a wrongly shaped x was accepted")
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not leaked, leaked
    np.savez(out_file, **{"y:" + k: v for k, v in y.items()},
             **{"s:" + k: v for k, v in final.items()})
    print(module.__doc__)
    print("BAD SHAPE:", bad_shape)
""")


@pytest.mark.parametrize(
    "cell_name, dtype, options, module, function, constants, tol",
    [
        ("lstm", "float64", [], "lstm", "lstm", {}, 1e-10),
        # fixed size, constant override and a module name of one's own (which also names the
        # module's entry function)
        (
            "cifg_lstm",
            "float32",
            ["--size", "hidden=8", "--const", "forget_bias=1.0", "--name", "cifg8", "-O2"],
            "cifg8",
            "cifg8",
            {"forget_bias": 1.0},
            1e-4,
        ),
    ],
)
def test_compiled_module_runs_without_the_compiler(
    env, tmp_path, cell_name, dtype, options, module, function, constants, tol
):
    out = tmp_path / "build"
    r = lstmc_cli(
        env, "compile", cell_name, "--target", "cpu", "-o", out, "--dtype", dtype, *options
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # piped: no progress output
    assert f"wrote {out / (module + '.py')}" in r.stdout
    assert f"it defines `kernel` and `{function}`" in r.stdout
    assert sorted(os.listdir(out)) == [f"{module}.py"]  # the module and nothing else
    source = (out / f"{module}.py").read_text()
    imported = {
        n.names[0].name.partition(".")[0]
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Import)
    }
    imported |= {
        n.module.partition(".")[0]
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.ImportFrom) and n.module
    }
    assert imported <= {"numpy", "numba", "lstmc_runtime", "math", "__future__"}, imported

    cell = lstmc.builtin(cell_name)
    sig = signature_of(lstmc.to_ir(cell, constants))
    rng = np.random.default_rng(7)
    sizes = {"input": 5, "hidden": 8}
    params = {
        p.name: (0.3 * rng.standard_normal(p.concrete(sizes))).astype(dtype) for p in sig.params
    }
    T, B = 6, 3
    x = rng.standard_normal((T, B, sizes["input"])).astype(dtype)
    state = {"h": (0.5 * rng.standard_normal((B, sizes["hidden"]))).astype(dtype)}
    data = tmp_path / "data.npz"
    np.savez(
        data,
        x=x,
        **{"p:" + k: v for k, v in params.items()},
        **{"s:" + k: v for k, v in state.items()},
    )

    result = tmp_path / "result.npz"
    child = subprocess.run(
        [sys.executable, "-c", ARTIFACT_SCRIPT, str(out), module, function, str(data), str(result)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert f"Compiled kernel of the `{cell_name}` cell (cpu, {dtype})" in child.stdout
    assert "Equations" in child.stdout  # the module docstring: equations, param layout
    assert f"    {sig.params[0].name}: {sig.params[0].text()}" in child.stdout
    (bad,) = [ln for ln in child.stdout.splitlines() if ln.startswith("BAD SHAPE:")]
    assert "x" in bad and "shape" in bad

    got = np.load(result)
    f64 = {k: v.astype(np.float64) for k, v in params.items()}
    s64 = {k: v.astype(np.float64) for k, v in state.items()}
    y_ref, final_ref = lstmc.interpret(cell, x.astype(np.float64), f64, s64, constants)
    np.testing.assert_allclose(got["y:y"], y_ref, rtol=0, atol=tol)
    for k, v in final_ref.items():
        np.testing.assert_allclose(got["s:" + k], v, rtol=0, atol=tol)


def test_compile_again_rewrites_a_module_built_on_another_runtime(monkeypatch, tmp_path):
    """A module's Numba cache watches only its file, not the runtime code compiled into it:
    the runtime's digest in its header makes `lstmc compile` rewrite it after the runtime
    changed, instead of calling it up to date (and leaving the old machine code in use)."""
    import lstmc.codegen.module as module_codegen

    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "build"
    args = ["compile", "rnn_tanh", "-o", str(out), "--no-check"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    from lstmc.codegen.cache import runtime_digest

    assert f"# lstmc_runtime sha256: {runtime_digest()}" in (out / "rnn_tanh.py").read_text()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "is up to date" in r.output, r.output
    monkeypatch.setattr(module_codegen, "runtime_digest", lambda: "0" * 64)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert f"# lstmc_runtime sha256: {'0' * 64}" in (out / "rnn_tanh.py").read_text()


# Import an artifact, call it, report its warnings and Numba's cache hits; under "other",
# as if lstmc had been upgraded since the artifact was written.
STALE_ARTIFACT_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from lstmc_runtime import provenance

    folder, runtime = sys.argv[1:]
    if runtime == "other":
        provenance.runtime_digest = lambda: "f" * 64
    sys.path.insert(0, folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import rnn_tanh
    k = rnn_tanh.kernel
    params = k.init_params(input=3, hidden=4)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = k(x, params)
    functions = [  # the module's own (the runtime's, imported, have caches of their own)
        f for f in vars(rnn_tanh).values()
        if hasattr(f, "stats") and f.py_func.__module__ == "rnn_tanh"
    ]
    print(json.dumps({
        "y": y.tolist(),
        "warnings": [str(w.message) for w in caught],
        "hits": sum(sum(f.stats.cache_hits.values()) for f in functions),
    }))
""")


def test_an_artifact_imported_under_another_runtime_compiles_without_numbas_cache(env, tmp_path):
    """Numba's cache beside an artifact holds the machine code of the runtime it was written
    against: imported under another (lstmc upgraded since), its functions compile again, a
    CacheWarning says to recompile, and the cache is left for the runtime it belongs to."""
    out = tmp_path / "build"
    assert lstmc_cli(env, "compile", "rnn_tanh", "-o", out, "--no-check").returncode == 0
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(runtime: str) -> dict:
        r = subprocess.run(
            [sys.executable, "-c", STALE_ARTIFACT_SCRIPT, str(out), runtime],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    first = run("same")  # compiles, and fills Numba's cache beside the artifact
    assert not first["warnings"] and first["hits"] == 0
    other = run("other")
    (message,) = other["warnings"]
    assert "rnn_tanh.py was generated against another lstmc_runtime" in message, message
    assert "`lstmc compile`" in message and other["hits"] == 0
    assert other["y"] == first["y"]
    again = run("same")  # the cache still serves the runtime it was written for
    assert not again["warnings"] and again["hits"] > 0 and again["y"] == first["y"]


def test_compile_again_keeps_an_identical_module(env, tmp_path):
    out = tmp_path / "build"
    assert lstmc_cli(env, "compile", "rnn_tanh", "-o", out, "--no-check").returncode == 0
    before = snapshot(out)
    r = lstmc_cli(env, "compile", "rnn_tanh", "-o", out, "--no-check")
    assert r.returncode == 0 and "is up to date" in r.stdout
    assert snapshot(out) == before  # same mtime: Numba's cache beside it stays valid
    r = lstmc_cli(env, "compile", "rnn_tanh", "-o", out, "--no-check", "--dtype", "float64")
    assert r.returncode == 0 and "wrote" in r.stdout
    assert "float64" in (out / "rnn_tanh.py").read_text()
    assert sorted(os.listdir(out)) == ["rnn_tanh.py"]


# -- compile: atomic, whatever happens -----------------------------------------------------------

BAD_SPEC = GOLDEN / "check" / "unknown_name.yaml"


@pytest.mark.parametrize("existing", [True, False], ids=["existing-dir", "missing-dir"])
def test_failed_compile_leaves_dir_as_it_was(env, tmp_path, existing):
    parent = tmp_path / "work"
    parent.mkdir()
    out = populated_dir(parent / "build") if existing else parent / "a" / "build"
    before, parent_before = snapshot(out), snapshot(parent)
    r = lstmc_cli(env, "compile", BAD_SPEC, "-o", out)
    assert r.returncode == 2
    assert "unknown_name.yaml:11:28: error: unknown name `hh`" in r.stderr
    assert snapshot(out) == before
    assert snapshot(parent) == parent_before  # no temporary files, no parents created


@pytest.mark.parametrize("existing", [True, False], ids=["existing-dir", "missing-dir"])
@pytest.mark.parametrize("failure", ["interrupt", "disk-full"])
def test_compile_interrupted_while_writing_leaves_dir_as_it_was(
    tmp_path, monkeypatch, existing, failure
):
    """In-process: the interrupt or the write error strikes once the module's bytes are in
    the temporary file, right before it would be renamed into place."""
    parent = tmp_path / "work"
    parent.mkdir()
    out = populated_dir(parent / "build") if existing else parent / "a" / "build"
    before, parent_before = snapshot(out), snapshot(parent)
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path / "cache"))
    exc = KeyboardInterrupt() if failure == "interrupt" else OSError(28, "No space left")
    calls = []

    def fail_fsync(fd):
        calls.append(fd)
        raise exc

    monkeypatch.setattr(os, "fsync", fail_fsync)
    r = CliRunner().invoke(cli, ["compile", "lstm", "-o", str(out), "--no-check"])
    assert calls, "the failure was never injected"
    assert r.exit_code == (130 if failure == "interrupt" else 2), r.output
    assert snapshot(out) == before
    assert snapshot(parent) == parent_before


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("existing", [True, False], ids=["existing-dir", "missing-dir"])
def test_compile_killed_half_way_leaves_dir_as_it_was(env, tmp_path, existing):
    """SIGKILL while the generated module is being checked in a subprocess: the source is
    complete by then, but not yet in DIR. Then SIGKILL at fixed times, whichever phase they
    hit: DIR is either as it was or holds the complete module, never anything else."""
    out = populated_dir(tmp_path / "build") if existing else tmp_path / "new" / "build"
    before = snapshot(out)
    args = [sys.executable, "-m", "lstmc", "compile", "gru", "-o", str(out)]

    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _children(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the compile finished before its check step was seen"
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(out) == before

    for delay in (0.05, 0.3, 0.6):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        after = snapshot(out)
        if after == before:
            continue
        # The compile won the race: DIR holds the finished module and nothing else new.
        module = out / "gru.py"
        assert "kernel = CpuKernel(" in module.read_text()
        assert set(after) - set(before or {}) <= {"gru.py"}
        assert {k: v for k, v in after.items() if k != "gru.py"} == {
            k: v for k, v in (before or {}).items() if k != "gru.py"
        }
        if existing:
            module.unlink()
        else:
            shutil.rmtree(out)
        before = snapshot(out)


def test_compile_rejects_bad_names_and_paths(env, tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in ("not-valid", "\ufb01x"):  # ﬁx: Python would import it as `fix`
        r = lstmc_cli(env, "compile", "lstm", "-o", tmp_path / "out", "--name", bad)
        assert r.returncode == 2 and f"--name `{bad}` is not a valid module name" in r.stderr
    for shadowing in ("numpy", "json"):
        r = lstmc_cli(env, "compile", "lstm", "-o", tmp_path / "out", "--name", shadowing)
        assert r.returncode == 2 and f"`{shadowing}` would shadow" in r.stderr
    r = lstmc_cli(env, "compile", "lstm", "-o", tmp_path / "file")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = lstmc_cli(env, "compile", "lstm", "-o", tmp_path / "out", "--name", "")
    assert r.returncode == 2 and "--name `` is not a valid module name" in r.stderr
    assert not (tmp_path / "out").exists()


def test_compile_never_replaces_a_file_it_did_not_write(tmp_path):
    """`-o DIR --name utils` replaced the user's own DIR/utils.py without a word."""
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "utils.py"
    mine.write_text("def important():\n    return 42\n")
    args = ["compile", "lstm", "-o", str(out), "--name", "utils", "--no-check"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "exists and was not written by lstmc" in r.output, r.output
    assert mine.read_text() == "def important():\n    return 42\n"
    mine.unlink()
    assert CliRunner().invoke(cli, args).exit_code == 0
    r = CliRunner().invoke(cli, [*args, "--dtype", "float64"])  # its own file: replaced
    assert r.exit_code == 0 and "wrote" in r.output, r.output


def test_install_into_missing_folders_that_another_process_makes_meanwhile(monkeypatch, tmp_path):
    """Processes writing into the same missing DIR/a/b at once: a folder made by another
    process between the check and the mkdir raised FileExistsError ("cannot write")."""
    from lstmc.cli import atomic

    real_mkdir = Path.mkdir
    raced = []

    def mkdir_after_another_process(self, *args, **kwargs):
        if not raced:
            raced.append(self)
            real_mkdir(self)  # the other process's
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_after_another_process)
    out = tmp_path / "a" / "b" / "out"
    assert atomic.install(out, "m.py", "# Generated by lstmc x\n")
    assert (out / "m.py").read_text() == "# Generated by lstmc x\n"
    assert raced == [tmp_path / "a"]


# -- check: golden diagnostics -------------------------------------------------------------------


@pytest.mark.parametrize("spec", sorted(p.name for p in (GOLDEN / "check").glob("*.yaml")))
def test_check_error_golden(env, spec):
    r = lstmc_cli(env, "check", spec, cwd=GOLDEN / "check")
    assert r.returncode == 2
    assert r.stdout == ""
    golden(GOLDEN / "check" / spec.replace(".yaml", ".stderr"), r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_check_ok_and_several_specs(env):
    r = lstmc_cli(env, "check", "lstm", "gru", str(cells.path("mgu")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (
        "ok: lstm (6 equations; state h, c; 12 params; outputs h_next; sizes input, hidden)"
    )
    assert len(r.stdout.splitlines()) == 3
    r = lstmc_cli(env, "check", "lstm", BAD_SPEC, "gru")
    assert r.returncode == 2
    assert len(r.stdout.splitlines()) == 2 and "unknown name `hh`" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "no_such.yaml"], "lstmc: error: no such spec file: no_such.yaml"),
        (["check", "lstn"], "no shipped cell `lstn` (did you mean `lstm`?)"),
        (["run", "lstm", "--size", "hidden=0"], "hidden: '0' is not a positive integer"),
        (["run", "lstm", "--size", "hiden=8"], "unknown size `hiden` (did you mean `hidden`?)"),
        (["show", "lstm", "--after", "hoistt"], "unknown pass `hoistt` (did you mean `hoist`?)"),
        (["show", "lstm", "-O1", "--after", "hoist"], "pass `hoist` does not run at -O1"),
        (["show", "lstm", "-O7"], "'-O' / '--opt': 7 is not in the range 0<=x<=3"),
        (["compile", "lstm", "-o", "x", "--target", "tpu"], "'tpu' is not one of 'cpu', 'cuda'"),
        (["show", "cifg_lstm", "--const", "forget_bais=1"], "unknown constant `forget_bais`"),
    ],
)
def test_errors_exit_2_with_one_clear_message(env, tmp_path, args, message):
    r = lstmc_cli(env, *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_verbose_shows_the_traceback(env):
    r = lstmc_cli(env, "--verbose", "check", BAD_SPEC)
    assert r.returncode == 2 and "Traceback" in r.stderr and "unknown name `hh`" in r.stderr
    r = lstmc_cli(env, "check", BAD_SPEC, "-v")  # also after the verb
    assert "Traceback" in r.stderr


def test_internal_errors_exit_3_and_say_so(monkeypatch):
    def boom(spec):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("lstmc.cli._load_cell", boom)
    r = CliRunner().invoke(cli, ["check", "lstm"])
    assert r.exit_code == 3
    assert "internal error: RuntimeError: boom (rerun with --verbose" in r.output
    assert "Traceback" not in r.output and "second line" not in r.output
    r = CliRunner().invoke(cli, ["-v", "check", "lstm"])
    assert r.exit_code == 3 and "Traceback" in r.output


def test_quiet(env):
    for args in (["-q", "check", "lstm"], ["check", "lstm", "--quiet"]):
        r = lstmc_cli(env, *args)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_progress_only_on_a_terminal(monkeypatch, capsys):
    from lstmc import cli as cli_module

    with cli_module._progress("compiling x"):
        time.sleep(0.05)
    assert capsys.readouterr().err == ""  # not a terminal: nothing
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with cli_module._progress("compiling x"):
        time.sleep(0.6)
    err = capsys.readouterr().err
    assert "compiling x..." in err and err.endswith("\r\033[K")  # the line is cleared after


# -- show: golden IR -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name",
    [
        (["lstm", "-O3"], "lstm.O3.ir"),
        (["lstm", "-O3", "--after", "fuse-gates"], "lstm.after-fuse-gates.ir"),
        (["lstm", "-O0"], "lstm.O0.ir"),
    ],
)
def test_show_golden(env, args, name):
    from lstmc.ir.parser import parse_graph
    from lstmc.ir.printer import print_graph

    r = lstmc_cli(env, "show", *args)
    assert r.returncode == 0, r.stderr
    golden(GOLDEN / "show" / name, r.stdout)
    text = "".join(ln + "\n" for ln in r.stdout.splitlines() if not ln.startswith("#"))
    assert print_graph(parse_graph(text)) == text  # what show prints parses back


def test_show_print_after_all_time_passes_and_source(env):
    r = lstmc_cli(env, "show", "gru", "--print-after-all", "--time-passes")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# ---- lowered from the spec ----\ncell gru\n")
    assert "# ---- after fuse-gates (pass " in r.stdout
    assert r.stderr.splitlines()[0].split() == ["pass", "runs", "changed", "ms"]
    assert r.stderr.splitlines()[-1].startswith("total")
    r = lstmc_cli(env, "show", "gru", "--source", "--dtype", "float64", "--size", "hidden=4")
    assert r.returncode == 0, r.stderr
    tree = ast.parse(r.stdout)
    defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "gru" in defs and "FIXED_SIZES = {'hidden': 4}" in r.stdout
    assert "dtype: float64" in r.stdout


# -- graph ---------------------------------------------------------------------------------------


def test_graph_svg(env, tmp_path):
    pytest.importorskip("lstmc.ir.dot", reason="lstmc.ir.dot (to_dot) not written yet")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    r = lstmc_cli(env, "graph", "lstm", "-o", tmp_path / "lstm.svg")
    assert r.returncode == 0, r.stderr
    root = ET.parse(tmp_path / "lstm.svg").getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "W_i" in texts and "h_next" in texts
    r = lstmc_cli(env, "graph", "gru", "-O3", "-o", tmp_path / "gru.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "gru.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_writes_into_a_fifo_and_through_a_symlink(env, tmp_path):
    """-o named a FIFO (or a device: as root, /dev/null): it was replaced by a regular file.
    A symlink was replaced by a file too, instead of its target being written."""
    import threading

    fifo = tmp_path / "pipe.dot"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    r = lstmc_cli(env, "graph", "lstm", "--format", "dot", "-o", fifo)
    reader.join(60)
    assert r.returncode == 0, r.stderr
    assert fifo.is_fifo() and got and got[0].startswith("digraph"), got
    target = tmp_path / "real.dot"
    target.write_text("old")
    link = tmp_path / "link.dot"
    link.symlink_to(target)
    r = lstmc_cli(env, "graph", "lstm", "--format", "dot", "-o", link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and target.read_text().startswith("digraph")


def test_graph_without_graphviz(env, tmp_path):
    no_dot = dict(env, PATH=str(tmp_path))  # nothing on PATH: no `dot`
    r = lstmc_cli(no_dot, "graph", "lstm", "-o", tmp_path / "lstm.svg")
    assert r.returncode == 2
    assert "apt-get install graphviz" in r.stderr and "brew install graphviz" in r.stderr
    assert not (tmp_path / "lstm.svg").exists()
    pytest.importorskip("lstmc.ir.dot", reason="lstmc.ir.dot (to_dot) not written yet")
    r = lstmc_cli(no_dot, "graph", "lstm", "--format", "dot", "-o", tmp_path / "lstm.dot")
    assert r.returncode == 0, r.stderr
    assert "digraph" in (tmp_path / "lstm.dot").read_text()
    r = lstmc_cli(no_dot, "graph", "lstm", "--format", "dot", "-o", "-")
    assert r.returncode == 0 and "digraph" in r.stdout


# -- cells, help, entry points -------------------------------------------------------------------


def test_cells_lists_every_shipped_cell(env):
    r = lstmc_cli(env, "cells")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == cells.names()
    for line, name in zip(lines, cells.names()):
        assert line.split(None, 1)[1] == lstmc.builtin(name).summary() != ""


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_has_an_example(verb):
    r = CliRunner().invoke(cli, [verb, "--help"] if verb else ["--help"])
    assert r.exit_code == 0
    assert "Example" in r.output
    assert "lstmc " in r.output.split("Example", 1)[1]


def test_entry_points(env):
    r = lstmc_cli(env, "--help")
    assert r.returncode == 0 and "Usage: lstmc" in r.stdout
    script = Path(sys.executable).parent / "lstmc"
    if not script.exists():
        pytest.skip("the lstmc console script is not installed in this environment")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0 and lstmc.__version__ in r.stdout


# -- run and bench -------------------------------------------------------------------------------

RUN_ARGS = ["--T", "10", "--B", "2", "--size", "input=4", "--size", "hidden=8"]


def test_run_matches_the_interpreter(env):
    r = lstmc_cli(env, "run", "lstm", "--target", "cpu", *RUN_ARGS)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"lstm: cpu, float32, -O{DEFAULT_OPT}; T=10 B=2 input=4 hidden=8; seed 0"
    assert [ln.split()[:2] for ln in lines[1:4]] == [
        ["output", "h_next"],
        ["state", "h"],
        ["state", "c"],
    ]
    assert lines[-1].startswith("ok: every error within 0.0001")
    # the same kernel (cached now) with no tolerance at all: float32 can't be exact
    r = lstmc_cli(env, "run", "lstm", *RUN_ARGS, "--tol", "0")
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "exceeds the float32 tolerance 0" in r.stderr


def test_run_counts_nan_in_the_same_places_as_agreement(env, tmp_path):
    """NaN in, NaN out: a cell that makes NaN everywhere, as the interpreter does, passes
    `run` (it printed max |err| nan and failed); NaN on one side only still fails."""
    spec = tmp_path / "nanny.yaml"
    spec.write_text(
        "cell: nanny\nsizes: [input, hidden]\ninputs: {x: [input]}\nstate: {h: [hidden]}\n"
        "params: {W: [hidden, input], U: [hidden, hidden]}\n"
        "equations:\n  h_next: tanh(W @ x + U @ h) + log(0) * 0\n"
        "update: {h: h_next}\noutputs: [h_next]\n"
    )
    r = lstmc_cli(env, "run", spec, *RUN_ARGS, "-O", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NaN or inf at the same 160 place(s) in both" in r.stdout
    from lstmc.cli.run import _compare

    ref = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])
    assert _compare(ref.copy(), ref) == (0.0, 2.0, 3, 0)
    assert _compare(np.array([1.0, 0.0, np.inf, np.inf, np.nan]), ref)[3] == 3


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_output_names_the_path_asked_for(env):
    """/proc takes no new files: the error names -o's path, not a temporary file of ours."""
    r = lstmc_cli(env, "compile", "lstm", "-o", "/proc/lstmc-nope", "--no-check")
    assert r.returncode == 2
    assert "cannot write /proc/lstmc-nope" in r.stderr and ".lstmc-" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["graph", "gru", "-o", "g.pdf"], "can not tell the format from `.pdf`"),
        (["graph", "gru", "--format", "png", "-o", "g.svg"], "names a .svg file but --format"),
        (["show", "lstm", "--size", "hidden=8"], "use it with --source"),
    ],
    ids=["graph-suffix", "graph-mismatch", "show-size"],
)
def test_options_that_would_be_ignored_are_usage_errors(args, message, tmp_path):
    """A file named .pdf got SVG bytes, .svg got PNG bytes, and `show --size` printed the
    symbolic IR: each is now refused, and nothing is written."""
    r = CliRunner().invoke(cli, [a if not a.startswith("g.") else str(tmp_path / a) for a in args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not list(tmp_path.iterdir())


def test_compile_says_when_the_function_is_renamed(tmp_path):
    """A cell called `kernel` can't define a function `kernel` beside the kernel object: the
    module's function is `run_kernel`, and `compile` says so."""
    spec = tmp_path / "kernel.yaml"
    spec.write_text(
        "cell: kernel\nsizes: [input, hidden]\ninputs: {x: [input]}\nstate: {h: [hidden]}\n"
        "params: {W: [hidden, input], U: [hidden, hidden]}\n"
        "equations:\n  h_next: tanh(W @ x + U @ h)\nupdate: {h: h_next}\noutputs: [h_next]\n"
    )
    out = tmp_path / "build"
    r = CliRunner().invoke(cli, ["compile", str(spec), "-o", str(out), "--no-check"])
    assert r.exit_code == 0, r.output
    assert "defines `kernel` and `run_kernel` (`kernel` is a name it needs)" in r.output
    assert "def run_kernel(" in (out / "kernel.py").read_text()


@pytest.mark.parametrize("name", ["range", "min", "len"])
def test_a_cell_named_like_a_builtin_runs(tmp_path, name):
    """The module's last function took the cell's name: one called `range`, `min` or `len`
    shadowed the builtin its compiled loops and its glue call (a TypingError, or a TypeError
    on a threaded call). Its function is `run_<name>` now."""
    import numpy as np

    import lstmc

    spec = (lstmc.cells.path("lstm")).read_text().replace("cell: lstm\n", f"cell: {name}\n")
    cell = lstmc.loads(spec)
    kernel = lstmc.compile(cell, dtype="float64")
    kernel.threads = 2
    params = kernel.init_params(input=3, hidden=16, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 8, 3))
    y, _ = kernel(x, params)
    y_ref, _ = lstmc.interpret(cell, x, params)
    assert np.abs(y - y_ref).max() < 1e-10
    assert callable(getattr(kernel.module, f"run_{name}"))
    out = tmp_path / "build"
    r = CliRunner().invoke(cli, ["compile", "lstm", "-o", str(out), "--name", name, "--no-check"])
    assert r.exit_code == 0, r.output
    assert f"defines `kernel` and `run_{name}` (`{name}` is a builtin its code calls)" in r.output
    assert f"def run_{name}(" in (out / f"{name}.py").read_text()


def test_bench(env):
    # one thread: OpenMP threads of torch crawl on a loaded machine with few cores
    r = lstmc_cli(env, "bench", "lstm", *RUN_ARGS, "--repeat", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "lstmc kernel" in r.stdout
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch is not installed" in r.stdout
    else:
        assert "torch nn.LSTM (1 thread)" in r.stdout and "than torch" in r.stdout


def test_bench_of_a_cell_with_several_outputs():
    """y is then a dict: bench times the kernel all the same (it took y for an array)."""
    spec = Path(__file__).parent.parent / "examples" / "custom_cell" / "clipped_cifg.yaml"
    args = ["bench", str(spec), "--T", "3", "--B", "2", "--size", "input=4", "--size"]
    r = CliRunner().invoke(cli, [*args, "hidden=4", "--repeat", "1"])
    assert r.exit_code == 0, r.output
    assert "lstmc kernel" in r.output and "no module equivalent" in r.output


def test_bench_of_an_edited_cell_under_a_shipped_name(tmp_path):
    """A copy of lstm.yaml with its state renamed keeps `cell: lstm`: bench says it is not
    PyTorch's nn.LSTM and times the kernel alone (a KeyError before)."""
    text = lstmc.cells.path("lstm").read_text()
    edited = tmp_path / "lstm.yaml"
    edited.write_text(re.sub(r"\bh\b", "hs", re.sub(r"\bc\b", "cs", text)))
    args = ["bench", str(edited), "--T", "3", "--B", "2", "--size", "input=4", "--size"]
    r = CliRunner().invoke(cli, [*args, "hidden=4", "--repeat", "1"])
    assert r.exit_code == 0, r.output
    assert "the spec is not PyTorch's nn.LSTM (KeyError: 'h')" in r.output, r.output


def test_bench_gives_the_threads_back():
    """In-process (CliRunner, a notebook), `bench --threads 1` holds the BLAS and torch to one
    thread while it times, and leaves both as it found them: a limit left behind slowed every
    later product of the process (and made a later test here skip)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    torch = pytest.importorskip("torch")

    def blas_threads():
        return [
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        ]

    before, torch_before = blas_threads(), torch.get_num_threads()
    if max(before + [torch_before]) < 2:
        pytest.skip("one thread here already: nothing to see given back")
    args = ["bench", "lstm", "--T", "3", "--B", "2", "--size", "input=4", "--size", "hidden=4"]
    r = CliRunner().invoke(cli, [*args, "--repeat", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "torch nn.LSTM (1 thread)" in r.output  # it did hold torch to one thread
    assert blas_threads() == before
    assert torch.get_num_threads() == torch_before


def test_user_errors_in_numbers_are_usage_errors(env, tmp_path):
    """Each of these was an "internal error" (exit 3) or a refusal of a valid value."""
    tiny = ["--T", "2", "--B", "1", "--size", "input=3", "--size", "hidden=4"]
    for args, message in (
        (["run", "lstm", *tiny, "--seed", "-1"], "-1 is not in the range x>=0"),
        (["run", "lstm", *tiny, "--tol", "nan"], "not NaN"),
        (["run", "lstm", "--size", "hidden=3000000000"], "up to 2147483647"),
    ):
        r = lstmc_cli(env, *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    # inf turns the clip off, as compile(constants={"cell_clip": inf}) does
    spec = Path(__file__).parent.parent / "examples" / "custom_cell" / "clipped_cifg.yaml"
    r = lstmc_cli(env, "run", spec, *tiny, "--const", "cell_clip=inf")
    assert r.returncode == 0, r.stderr
    r = lstmc_cli(env, "run", spec, *tiny, "--const", "cell_clip=nan")
    assert r.returncode == 2 and "is not a number (not NaN)" in r.stderr


def test_sizes_too_large_for_the_machine_are_a_usage_error(monkeypatch):
    """A MemoryError is the user's sizes, not a bug in lstmc. Raised here in process: a real
    one needs an allocation the system refuses, which a host that overcommits memory would
    grant and then end the process for."""
    import lstmc.cli.run as run_module

    def refuse(*args, **kwargs):
        raise MemoryError("Unable to allocate 671. GiB for an array")

    monkeypatch.setattr(run_module, "random_inputs", refuse)
    r = CliRunner().invoke(cli, ["run", "rnn_tanh", "--T", "1", "--B", "1"])
    assert r.exit_code == 2, r.output
    assert "lstmc: error: out of memory: Unable to allocate 671. GiB" in r.output
    assert "internal error" not in r.output


def test_a_reader_that_goes_away_ends_the_command_quietly(env):
    """`lstmc show ... | head -1`: no "Broken pipe" error; the status a shell gives a
    process that SIGPIPE ended, as for a C tool."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstmc", "show", "lstm", "--print-after-all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    # The reader goes away before the command prints (Python takes far longer to start):
    # with the ~16 KB of output in the pipe's 64 KB buffer, a later close could come after
    # the command had printed everything and exited 0.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_cuda_target_from_the_command_line(env, tmp_path):
    """The CUDA artifact imports on its own (checked by compile) and `run` matches the
    interpreter, here on Numba's CUDA simulator; without a usable device it is an error, not a
    crash."""
    r = lstmc_cli(env, "compile", "gru", "--target", "cuda", "-o", tmp_path / "build")
    assert r.returncode == 0, r.stderr
    assert "CudaKernel" in (tmp_path / "build" / "gru.py").read_text()
    tiny = ["--T", "3", "--B", "2", "--size", "input=3", "--size", "hidden=4"]
    r = lstmc_cli(dict(env, NUMBA_ENABLE_CUDASIM="1"), "run", "gru", "--target", "cuda", *tiny)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gru: cuda, float32")
    no_sim = {k: v for k, v in env.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = lstmc_cli(no_sim, "run", "gru", "--target", "cuda", *tiny)
    assert r.returncode in (0, 2), r.stderr  # 0 where there is a GPU
    if r.returncode == 2:
        assert "CUDA is not usable here" in r.stderr and "Traceback" not in r.stderr
