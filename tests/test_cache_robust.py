"""A bad kernel cache costs a warning and a recompile, never a crash.

Each test corrupts one file of a healthy cache (a copy of one the fixture fills), then runs a
fresh process: the kernel must still agree with the interpreter, one `CacheWarning` must name
the bad file, and the process after it must load everything from the cache again without a
warning. Fresh processes, because a process that imported a module already never rereads it,
and Numba reads its cache files only at a kernel's first call.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lstmc
from lstmc.codegen.cache import CacheWarning

CELL, DTYPE, SIZES = "rnn_tanh", "float64", {"input": 3, "hidden": 4}

# Compile, call, compare with the interpreter; report the warnings, Numba's cache hits and
# misses, and where the module came from.
SCRIPT = textwrap.dedent(f"""\
    import json, warnings
    import numpy as np
    import lstmc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cell = lstmc.builtin({CELL!r})
        kernel = lstmc.compile(cell, dtype={DTYPE!r})
        params = kernel.init_params(seed=1, **{SIZES!r})
        x = np.random.default_rng(0).standard_normal((3, 2, {SIZES["input"]}))
        y, state = kernel(x, params)
    y_ref, state_ref = lstmc.interpret(cell, x, params)
    error = max(
        float(np.max(np.abs(y - y_ref))),
        *(float(np.max(np.abs(state[k] - state_ref[k]))) for k in state_ref),
    )
    functions = [f for f in vars(kernel.module).values() if hasattr(f, "stats")]
    print(json.dumps({{
        "error": error,
        "warnings": [
            [w.category.__name__, str(w.message)] for w in caught
            if w.category.__name__ == "CacheWarning"
        ],
        "hits": sum(sum(f.stats.cache_hits.values()) for f in functions),
        "misses": sum(sum(f.stats.cache_misses.values()) for f in functions),
        "file": kernel.module.__file__,
    }}))
    """)


def _env(cache: Path) -> dict:
    env = dict(os.environ, LSTMC_CACHE_DIR=str(cache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the .pyc is part of the cache under test
    return env


def _start(cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        env=_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["error"] < 1e-9, report
    return report


def _run(cache: Path) -> dict:
    return _finish(_start(cache))


@pytest.fixture(scope="module")
def healthy_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("healthy-cache")
    first = _run(cache)
    assert first["misses"] > 0 and not first["warnings"]
    second = _run(cache)  # the cache serves everything
    assert second["hits"] > 0 and second["misses"] == 0 and not second["warnings"], second
    return cache


@pytest.fixture
def cache(healthy_cache, tmp_path) -> Path:
    """A copy of the healthy cache (mtimes kept: Numba's index checks the module's)."""
    copy = tmp_path / "cache"
    shutil.copytree(healthy_cache, copy, copy_function=shutil.copy2)
    return copy


def _entry(cache: Path) -> Path:
    (module,) = cache.glob(f"*/*/{CELL}.py")
    return module.parent


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(128, 256)) * 2)  # not UTF-8, not a pickle


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_module(path: Path) -> None:
    path.write_text("kernel = None  # the right name, the wrong module\n")


def _pyc_body(path: Path) -> None:
    """Keep the 16-byte header (so Python trusts the file), spoil the marshalled code."""
    path.write_bytes(path.read_bytes()[:16] + b"\xff" * 64)


CORRUPTIONS = {
    "nbc-garbage": ("__pycache__/*.nbc", _garbage),
    "nbc-empty": ("__pycache__/*.nbc", _empty),
    "nbc-truncated": ("__pycache__/*.nbc", _truncated),
    "nbi-garbage": ("__pycache__/*.nbi", _garbage),
    "nbi-empty": ("__pycache__/*.nbi", _empty),
    "nbi-truncated": ("__pycache__/*.nbi", _truncated),
    "py-garbage": (f"{CELL}.py", _garbage),
    "py-empty": (f"{CELL}.py", _empty),
    "py-truncated": (f"{CELL}.py", _truncated),
    "py-other-module": (f"{CELL}.py", _other_module),
    "pyc-corrupt": ("__pycache__/*.pyc", _pyc_body),
}


def _corrupt(cache: Path, kind: str) -> Path:
    """Corrupt one file; returns the file a warning must name (for a Numba data file, the
    index of its function: Numba's error doesn't say which of the two it was reading)."""
    pattern, spoil = CORRUPTIONS[kind]
    victims = sorted(_entry(cache).glob(pattern))
    assert victims, f"the healthy cache has no {pattern}: {list(_entry(cache).rglob('*'))}"
    victim = victims[-1]
    spoil(victim)
    if victim.suffix == ".nbc":  # <function>-<line>.py311.<n>.nbc -> <function>-<line>.py311.nbi
        return victim.with_name(victim.name.rsplit(".", 2)[0] + ".nbi")
    return victim


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_cache_file_is_replaced(cache, kind):
    named = _corrupt(cache, kind)
    repaired = _run(cache)
    assert len(repaired["warnings"]) == 1, repaired["warnings"]
    assert str(named) in repaired["warnings"][0][1], repaired["warnings"]
    if named.suffix in (".nbi", ".nbc"):
        assert repaired["misses"] > 0  # compiled again
    # (A rewritten module needs no new machine code: Numba's index keys on its content.)
    after = _run(cache)  # and the next process finds a healthy cache
    assert not after["warnings"], after["warnings"]
    assert after["hits"] > 0 and after["misses"] == 0, after
    assert not list(cache.rglob(".tmp-*")) and not list(cache.rglob("*.tmp.*"))


def test_two_processes_repair_the_same_entry_at_once(cache):
    named = _corrupt(cache, "nbc-garbage")
    procs = [_start(cache) for _ in range(2)]
    reports = [_finish(p) for p in procs]
    for report in reports:
        assert all(str(named) in message for _, message in report["warnings"]), report
    after = _run(cache)
    assert not after["warnings"] and after["misses"] == 0, after


def _compile_and_check(monkeypatch, cache_dir: Path):
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(cache_dir))
    cell = lstmc.builtin(CELL)
    with pytest.warns(CacheWarning) as record:
        kernel = lstmc.compile(cell, dtype=DTYPE)
    params = kernel.init_params(seed=2, **SIZES)
    x = np.random.default_rng(1).standard_normal((4, 2, SIZES["input"]))
    y, _ = kernel(x, params)
    y_ref, _ = lstmc.interpret(cell, x, params)
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-12)
    assert not Path(kernel.module.__file__).is_relative_to(cache_dir)
    return [str(w.message) for w in record if issubclass(w.category, CacheWarning)]


def test_a_cache_dir_that_is_a_file_warns_and_compiles_in_a_temporary_directory(
    monkeypatch, tmp_path
):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    messages = _compile_and_check(monkeypatch, not_a_dir)
    assert len(messages) == 1
    assert "LSTMC_CACHE_DIR" in messages[0] and str(not_a_dir) in messages[0]
    assert not_a_dir.read_text() == ""  # untouched


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_a_read_only_cache_dir_warns_and_compiles_in_a_temporary_directory(monkeypatch, tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        messages = _compile_and_check(monkeypatch, read_only / "lstmc")
    finally:
        read_only.chmod(0o700)
    assert len(messages) == 1 and "LSTMC_CACHE_DIR" in messages[0]
    assert not list(read_only.iterdir())


def test_a_cache_dir_refusing_writes_warns_and_compiles_in_a_temporary_directory(
    monkeypatch, tmp_path
):
    """As the test above, for root too (who may write anywhere): writes there are refused."""
    from lstmc.codegen import cache

    refusing = tmp_path / "refusing"
    real_mkstemp = cache.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(refusing):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cache.tempfile, "mkstemp", mkstemp)
    messages = _compile_and_check(monkeypatch, refusing)
    assert len(messages) == 1
    assert "LSTMC_CACHE_DIR" in messages[0] and "Permission denied" in messages[0]
    assert not [p for p in refusing.rglob("*") if p.is_file()]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_an_unknown_option_is_refused_before_anything_is_cached(monkeypatch, tmp_path, target):
    """The option names are checked first: a typo costs no compile and leaves no entry."""
    from lstmc.errors import LstmcError

    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    with pytest.raises(LstmcError, match=f"unknown option.* tile for target '{target}'"):
        lstmc.compile(CELL, target=target, tile=2)
    if target == "cuda":  # and the values of the known ones
        with pytest.raises(LstmcError, match="unknown variant 'fast'"):
            lstmc.compile(CELL, target=target, variant="fast")
        with pytest.raises(LstmcError, match="blocks must be a positive integer, got 0"):
            lstmc.compile(CELL, target=target, blocks=0)
    assert not list(tmp_path.iterdir())


def test_an_unusable_cache_dir_in_a_fresh_process(tmp_path):
    """The user's report: `LSTMC_CACHE_DIR=/dev/null` gave a NotADirectoryError traceback."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    report = _run(not_a_dir)
    assert len(report["warnings"]) == 1 and str(not_a_dir) in report["warnings"][0][1]
    assert not report["file"].startswith(str(not_a_dir))


def test_a_corrupt_cache_of_the_step_products_entry_point_is_rebuilt(tmp_path):
    """The step product's C entry point (lstmc_runtime.step_products.load_step_products) lives in
    Numba's cache, loaded when a generated module is imported: a file of it cut short warns
    and is compiled again, instead of failing every kernel until someone deletes it."""
    code = textwrap.dedent("""\
        import warnings, numpy as np, lstmc
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            k = lstmc.compile("rnn_tanh")
            y, _ = k(np.ones((3, 2, 4), np.float32), k.init_params(input=4, hidden=5))
        ref, _ = lstmc.interpret("rnn_tanh", np.ones((3, 2, 4)), k.init_params(input=4, hidden=5))
        assert np.abs(y - ref).max() < 1e-5
        named = [w for w in got if "step product" in str(w.message)]
        assert all(w.category is lstmc.CacheWarning for w in named), named
        print("warned" if named else "quiet")
        """)
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "LSTMC_CACHE_DIR": str(tmp_path / "lstmc"),
    }

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    assert run() == "quiet"
    entries = list((tmp_path / "numba").rglob("gemm._step_entry-*.nbc"))
    assert entries
    for path in entries:
        _truncated(path)
    assert run() == "warned"
    assert run() == "quiet"  # rebuilt in the cache


@pytest.mark.parametrize("level", ["prefix", "key"])
def test_a_file_where_a_cache_folder_should_be_is_removed(cache, level):
    """A file at <cache>/<key[:2]> or <cache>/<key[:2]>/<key> made every process report the
    whole cache directory unusable and compile into a temporary one, for good."""
    entry = _entry(cache)
    spoiled = entry.parent if level == "prefix" else entry
    shutil.rmtree(spoiled)
    spoiled.write_text("junk")
    report = _run(cache)
    assert len(report["warnings"]) == 1, report
    assert f"{spoiled} should be a cache folder but is a file" in report["warnings"][0][1]
    assert report["file"].startswith(str(cache))
    again = _run(cache)
    assert again["misses"] == 0 and not again["warnings"], again


def test_a_relative_cache_dir_gives_one_module_per_process(monkeypatch, tmp_path):
    """A relative LSTMC_CACHE_DIR never matched the module's (absolute) __file__: every
    compile of the same spec imported the module again."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LSTMC_CACHE_DIR", "relative-cache")
    first = lstmc.compile("rnn_tanh")
    assert lstmc.compile("rnn_tanh").module is first.module
    assert first.module.__file__.startswith(str(tmp_path / "relative-cache"))


def test_a_compiled_artifacts_corrupt_numba_cache_is_a_miss(tmp_path):
    """A module written by `lstmc compile` keeps Numba's cache in DIR/__pycache__. Only
    modules loaded through lstmc's own cache were guarded: in an artifact, a `.nbi` cut
    short failed every call (UnpicklingError) until someone deleted it."""
    out = tmp_path / "out"
    env = dict(os.environ, LSTMC_CACHE_DIR=str(tmp_path / "lstmc"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = ["-m", "lstmc", "compile", CELL, "--dtype", DTYPE, "-o", str(out), "--no-check"]
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = textwrap.dedent(f"""\
        import json, sys, warnings
        import numpy as np
        sys.path.insert(0, {str(out)!r})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import {CELL} as m
            params = m.kernel.init_params(seed=1, **{SIZES!r})
            x = np.random.default_rng(0).standard_normal((3, 2, {SIZES["input"]}))
            y, _ = m.kernel(x, params)
        import lstmc
        y_ref, _ = lstmc.interpret({CELL!r}, x, params)
        print(json.dumps({{
            "error": float(np.abs(y - y_ref).max()),
            "warnings": [str(w.message) for w in caught if w.category is lstmc.CacheWarning],
        }}))
        """)

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["error"] < 1e-9, report
        return report

    assert run()["warnings"] == []  # compiles, and fills DIR/__pycache__
    indexes = list((out / "__pycache__").glob(f"{CELL}.*.nbi"))
    assert indexes
    for path in indexes:
        _truncated(path)
    warned = run()["warnings"]
    assert warned and all("removing it and compiling again" in w for w in warned), warned
    assert run()["warnings"] == []  # written again, healthy


def test_two_threads_compiling_the_same_spec_at_once_both_succeed(monkeypatch, tmp_path):
    """The second thread's compile waits for the first one's import of the module (it once
    found the module half-run in sys.modules: an AttributeError, no `kernel`)."""
    import threading

    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    for trial in range(4):  # a new spec, so a new module, each trial
        cell = lstmc.loads(
            textwrap.dedent(f"""\
                cell: threads_{trial}
                sizes: [input, hidden]
                inputs: {{x: [input]}}
                state: {{h: [hidden]}}
                params: {{W: [hidden, input], U: [hidden, hidden]}}
                equations:
                  h_next: tanh(W @ x + U @ h)
                update: {{h: h_next}}
                outputs: [h_next]
                """),
            f"threads_{trial}.yaml",
        )
        start = threading.Barrier(2)
        out: list = [None, None]

        def compile_it(i, cell=cell, start=start, out=out):
            start.wait()
            try:
                out[i] = lstmc.compile(cell, dtype="float64")
            except Exception as e:  # reported below
                out[i] = e

        threads = [threading.Thread(target=compile_it, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not [o for o in out if isinstance(o, Exception)], out
        x = np.random.default_rng(trial).standard_normal((3, 2, 2))
        params = out[0].init_params(seed=trial, input=2, hidden=3)
        y_ref, _ = lstmc.interpret(cell, x, params)
        for kernel in out:
            np.testing.assert_allclose(kernel(x, params)[0], y_ref, rtol=1e-9, atol=1e-12)
