"""Compile every generated CUDA kernel to PTX, without a GPU (run as a script, NOT under the
simulator: `python tests/cuda_kernels/ptx_check.py [cell ...]`).

The simulator runs kernels as Python, so it can't see code that Numba would refuse for the GPU
(a float64 constant in a float32 kernel, an unsupported call, a type that doesn't unify). This
compiles each kernel of each shipped cell (and of any spec files given) for float32 and float64
with `numba.cuda.compile_ptx`, with the exact argument types the run-time launches them with,
plus the run-time's own kernels. It prints one JSON line per kernel and exits non-zero if any
failed. NVVM comes from the `numba-cuda[cu13]` wheels; no driver is needed, except that Numba
asks the current device for its compute capability when it compiles a device function, so this
script answers that question itself (CC below).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import types

if os.environ.get("NUMBA_ENABLE_CUDASIM") not in (None, "", "0"):
    sys.exit("ptx_check.py needs the real numba.cuda: unset NUMBA_ENABLE_CUDASIM")

CC = (9, 0)  # H100; the PTX is the same for any recent target

import numba.cuda.dispatcher as _dispatcher

# Device functions are compiled for the current device's compute capability; there is none.
_dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)

from lstmc_runtime import cuda as rt
from numba import cuda
from numba.core import types as nbtypes

import lstmc

_F64_OP = re.compile(r"^\s*(?:add|sub|mul|fma|div|neg|abs|max|min)\S*\.f64\b", re.MULTILINE)


def compile_one(label, pyfunc, argtypes, dtype, allow_f64=False):
    start = time.perf_counter()
    rec = {"kernel": label, "dtype": dtype}
    try:
        ptx, _ = cuda.compile_ptx(pyfunc, argtypes, device=False, cc=CC)
    except Exception as exc:  # noqa: BLE001 - report every failure, keep going
        rec.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    else:
        rec.update(
            ok=True,
            ptx_lines=ptx.count("\n"),
            grid_sync="cudaCGSynchronize" in ptx,
            f64_ops=len(_F64_OP.findall(ptx)),
        )
        if dtype == "float32" and rec["f64_ops"] and not allow_f64:
            rec.update(ok=False, error=f"{rec['f64_ops']} float64 operations in a float32 kernel")
    rec["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(rec), flush=True)
    return rec["ok"]


def main(argv):
    cells = [a for a in argv if not a.endswith(".yaml")] or lstmc.cells.names()
    specs = [lstmc.load(a) for a in argv if a.endswith(".yaml")]
    ok = True
    for dtype in ("float32", "float64"):
        nt = rt.numba_type(dtype)
        a1, a2c = nbtypes.Array(nt, 1, "C"), nbtypes.Array(nt, 2, "C")
        a2a = nbtypes.Array(nt, 2, "A")
        gemm = rt.gemm_kernel(dtype).py_func
        ok &= compile_one("runtime.gemm_nt[A]", gemm, (a2a, a2c, a2c), dtype)
        ok &= compile_one("runtime.gemm_nt[C]", gemm, (a2c, a2c, a2c), dtype)
        ok &= compile_one("runtime.copy_2d", rt.copy_2d.py_func, (a2a, a2c), dtype)
        ok &= compile_one("runtime.fill_2d", rt.fill_2d.py_func, (a2c, nt), dtype)
        del a1
        for cell in [lstmc.builtin(c) for c in cells] + specs:
            kernel = lstmc.compile(cell, target="cuda", dtype=dtype, cache=False)
            mod = kernel.module
            for name, spec in mod._KERNELS.items():
                has_ln = "layer_norm" in kernel.source  # float64 statistics, on purpose
                ok &= compile_one(
                    f"{cell.name}.{name}",
                    getattr(mod, name).py_func,
                    rt.arg_types(spec, dtype),
                    dtype,
                    allow_f64=has_ln,
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
