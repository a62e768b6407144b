"""The CUDA target (issue 6).

numba.cuda picks the simulator or the real driver once, when Numba is first imported, and the
rest of this test process has imported it long before. So the kernel tests live in
`tests/cuda_kernels/` and run in child processes:

- under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), at tiny sizes: every shipped cell and
  random cells, both variants (the persistent kernel on one block), both dtypes, against the
  interpreter, plus the run-time's device-array, stream, state and error handling;
- `ptx_check.py` without the simulator: every generated kernel, and the run-time's own, compiled
  to PTX for float32 and float64 (the simulator can't see code Numba would refuse on a GPU);
- on a real GPU, where there is one: the same directory without the simulator at realistic sizes.

The two checks that need no device start together and overlap. The generated source itself is
checked here, in process.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lstmc
from lstmc.codegen import cuda as cuda_codegen
from lstmc.compiler import generate_source, optimize
from lstmc.errors import CodegenError

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[1]
KERNEL_TESTS = REPO / "tests" / "cuda_kernels"
CELLS = lstmc.cells.names()
TIMEOUT = 900


def _env(cache: Path, **extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUMBA_ENABLE_CUDASIM", "LSTMC_CUDA_DEVICE_TESTS")
    }
    env.update(LSTMC_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1", **extra)
    return env


def _start(args, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The simulator suite and the PTX check, started at once."""
    cache = tmp_path_factory.mktemp("lstmc-cache")
    procs = {
        "sim": _start(
            [
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                str(KERNEL_TESTS),
            ],
            _env(cache, NUMBA_ENABLE_CUDASIM="1"),
        ),
        "ptx": _start([str(KERNEL_TESTS / "ptx_check.py")], _env(cache)),
    }
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


def _finish(proc) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out


def test_kernels_match_the_interpreter_on_the_simulator(children):
    rc, out = _finish(children["sim"])
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    assert rc == 0, f"the simulator suite failed ({summary}):\n{out[-20000:]}"
    assert re.search(r"\d+ passed", summary), out[-5000:]


def test_every_kernel_compiles_to_ptx(children):
    rc, out = _finish(children["ptx"])
    records = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    failed = [r for r in records if not r["ok"]]
    assert not failed and rc == 0, json.dumps(failed, indent=1) or out[-5000:]
    names = {(r["kernel"], r["dtype"]) for r in records}
    for cell in CELLS:
        for dtype in ("float32", "float64"):
            assert (f"{cell}._persistent", dtype) in names
    for r in records:
        # only the persistent kernel synchronizes the grid
        assert r["grid_sync"] == r["kernel"].endswith("._persistent"), r


def test_on_a_real_gpu_when_there_is_one(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("no CUDA device here (the simulator suite covers the kernels)")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(KERNEL_TESTS)],
        cwd=REPO,
        env=_env(tmp_path, LSTMC_CUDA_DEVICE_TESTS="1"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-20000:]


# -- the generated source, in process ----------------------------------------------------------

ALLOWED_IMPORTS = {"math", "numpy", "numba", "lstmc_runtime"}


def _kernels(source: str) -> list[str]:
    return re.findall(r"^def (_k_\w+|_persistent)\(", source, re.MULTILINE)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CELLS)
def test_generated_module_is_readable_and_standalone(name, dtype):
    cell = lstmc.builtin(name)
    source, _graph, _ = generate_source(cell, target="cuda", dtype=dtype)
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    # the same header as the CPU module, but for the target line
    cpu, _, _ = generate_source(cell, target="cpu", dtype=dtype)
    head = [ln for ln in source.split('"""')[0].splitlines() if not ln.startswith("# target")]
    assert head == [ln for ln in cpu.split('"""')[0].splitlines() if not ln.startswith("# target")]
    assert f"# target: cuda   dtype: {dtype}" in source
    assert f"_F = np.{dtype}" in source
    # every kernel says which IR it computes, and is declared with its argument types
    kernels = _kernels(source)
    assert "_persistent" in kernels
    for k in kernels:
        body = source.split(f"def {k}(")[1].split("\n\n\n")[0]
        assert re.search(r"# %\w+ = ", body), k
        assert re.search(rf"^    {k!r}: '[ai0-9 ]+',$", source, re.MULTILINE), k


@pytest.mark.parametrize(
    ("name", "launches"),
    [
        ("lstm", 1),
        ("gru", 1),
        ("peephole_lstm", 1),
        ("cifg_lstm", 1),
        ("rnn_tanh", 1),
        ("rnn_relu", 1),
        ("indrnn", 1),  # two element-wise groups over the same units: merged into one launch
        ("gru_cho", 2),  # U_n @ (r * h) needs every r * h of the row first
        ("mgu", 2),  # W_h @ (f * h), likewise
        ("lstmp", 2),  # the projection W_hr @ m, then stores to h
    ],
)
def test_one_launch_per_step_where_the_sizes_allow(name, launches):
    """The stacked recurrent product and the step's element-wise work share a launch: a
    thread computes the gate rows off_k + j it needs, then the group's code, then stores."""
    source, _, _ = generate_source(lstmc.builtin(name), target="cuda")
    steps = [k for k in _kernels(source) if k.startswith("_k_step_")]
    assert len(steps) == launches, steps
    persistent = source.split("def _persistent(")[1].split("\n\n\n")[0]
    assert persistent.count("grid.sync()") == launches  # one grid-wide sync per launch


def test_products_are_fused_not_stored():
    source, _, _ = generate_source(lstmc.builtin("lstm"), target="cuda")
    assert "v_packed_h" not in source  # the recurrent product lives in registers
    assert "run.gemm(x.reshape(T * B, n_input), w_packed_x" in source  # hoisted, all rows
    assert "d_packed_h_3 = acc[3, p, q]" in source  # the fourth gate's rows, off 3H + j


def test_unsupported_dtype_is_a_codegen_error():
    graph, _ = optimize(lstmc.builtin("lstm"))
    with pytest.raises(CodegenError, match="float32 and float64"):
        cuda_codegen.generate(graph, "float16")
