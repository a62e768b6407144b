"""The step product as kernels call it: through a C entry point, by its symbol's name.

A kernel function that calls matmul_panels links its code, and Numba has LLVM optimize the
whole linked module again for every such function: ~0.8 s of each one's compile (a
function making one product call: 0.92 s against 0.16 s for one without). Kernels call
`matmul_step` instead, which calls lstmc_runtime.gemm's products through a C entry point by its
symbol's name (as Numba's own code calls its helper library): compiled once per dtype and
kept in Numba's cache, made known to LLVM by `load_step_products` before a kernel is
compiled or loaded from the cache. The same code runs: the same results, bit for bit, and
the same time ([1, 32] x [32, 128] 0.10 us, [64, 128] x [128, 512] 48.8 us a call).

The entry point's code (`gemm._step_entry`, which also holds the plain loop for operands
whose rows are not contiguous) stays in lstmc_runtime.gemm: Numba's cache of a function
follows its own file, and that code is gemm's. With the plain loop linked into the caller
(the overload below called it), each kernel compiled 0.3-0.6 s longer.
"""

from __future__ import annotations

import contextlib
import glob
import os
import warnings

import llvmlite.binding as llvm
import numpy as np
from lstmc_runtime.errors import CacheWarning
from lstmc_runtime.gemm import _lanes, _step_entry
from numba import cfunc, types
from numba.extending import intrinsic, overload

__all__ = ["load_step_products"]

# The name says how the entry point takes its operands (with both strides of a and out, in
# bytes): Numba's cache of a function outside lstmc that calls matmul_step keeps the call as
# it was compiled, and under a new calling convention it should fail to find the symbol, not
# pass it the arguments of the old one.
_STEP_SYMBOL = "lstmc_matmul_panels_strided_{}"


def _step_signature(dtype):
    ptr = types.CPointer(dtype)
    # a, its rows, columns, strides (bytes); w's panels, rows, panel width; out, its columns,
    # strides (bytes). It returns 0: an int, as Numba declares an external function returning
    # nothing as one returning a pointer, which a C `void` function does not.
    return types.int32(
        ptr, types.intp, types.intp, types.intp, types.intp,
        ptr, types.intp, types.intp, types.intp,
        ptr, types.intp, types.intp, types.intp,
    )  # fmt: skip


_step_entries: dict = {}  # dtype name -> the compiled entry point (kept alive: LLVM calls it)


def load_step_products(dtype) -> None:
    """Compile, or load from Numba's cache, the step product's C entry point for `dtype` and
    give LLVM its address, once per process. A generated module calls this when imported,
    before any of its functions is compiled or loaded: the cached ones call it by name."""
    name = np.dtype(dtype).name
    if name in _step_entries:
        return
    if name not in ("float32", "float64"):
        raise ValueError(f"matmul_step: float32 or float64 arrays, not {name}")
    sig = _step_signature(getattr(types, name))
    try:
        entry = cfunc(sig, cache=True, error_model="numpy")(_step_entry)
    except Exception as exc:  # a cache file cut short or garbled: every kernel would fail
        warnings.warn(
            f"lstmc_runtime: Numba's cached step product ({name}) in {_cached_entry_glob()} "
            f"could not be loaded ({type(exc).__name__}: {exc}); removing it and compiling "
            "it again",
            CacheWarning,
            stacklevel=2,
        )
        _forget_cached_entry()
        try:
            entry = cfunc(sig, cache=True, error_model="numpy")(_step_entry)
        except Exception:  # the cache cannot be written either: this process only
            entry = cfunc(sig, error_model="numpy")(_step_entry)
    llvm.add_symbol(_STEP_SYMBOL.format(name), entry.address)
    _step_entries[name] = entry


def _forget_cached_entry() -> None:
    """Remove Numba's cache files of the step product's entry point (both dtypes share one
    index), wherever Numba keeps this module's cache."""
    for path in glob.glob(_cached_entry_glob()):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _cached_entry_glob() -> str:
    from numba.core.caching import FunctionCache

    return os.path.join(FunctionCache(_step_entry)._cache_path, "gemm._step_entry-*")


def matmul_step(a, w, out):
    """out[:, :] = a @ W for W in panels, as matmul_panels computes it, for compiled code:
    through the C entry point of load_step_products. Not for general use: a function that
    calls it and is loaded from Numba's cache finds the entry point only if its module has
    called load_step_products(dtype) first, as every generated module does on import
    (without it the call jumps to no code)."""
    raise TypeError("matmul_step is for compiled code; from Python call matmul_panels")


@overload(matmul_step, jit_options={"nogil": True, "_nrt": False})
def _matmul_step_impl(a, w, out):
    if not (isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)):
        return None
    load_step_products(a.dtype.name)  # known to LLVM for this compile too
    product = types.ExternalFunction(_STEP_SYMBOL.format(a.dtype.name), _step_signature(a.dtype))

    def impl(a, w, out):
        m, n = a.shape[0], out.shape[1]
        if a.shape[1] != w.shape[1] or out.shape[0] != m or n > w.shape[0] * w.shape[2]:
            raise ValueError("matmul_step: shapes do not match")
        if m == 0:
            return
        if a.shape[1] == 0:  # no terms: zeros (a weight of no rows has no layout to check)
            out[:, :] = 0
            return
        panel = w.shape[2]
        item = a.itemsize
        # C-contiguous panels (a stride of a length-1 axis is anything NumPy likes)
        if (
            panel % _lanes(a) != 0
            or w.strides[2] != item
            or (w.shape[1] > 1 and w.strides[1] != panel * item)
            or (w.shape[0] > 1 and w.strides[0] != w.shape[1] * panel * item)
        ):
            raise ValueError("matmul_step: panels of whole vectors, contiguous, are expected")
        product(
            _data(a), m, a.shape[1], a.strides[0], a.strides[1],
            _data(w), w.shape[0], w.shape[1], panel,
            _data(out), n, out.strides[0], out.strides[1],
        )  # fmt: skip

    return impl


@intrinsic
def _data(typingctx, arr):
    """The pointer to an array's first element."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen
