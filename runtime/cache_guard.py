"""Numba's on-disk cache made safe to fail: a corrupt entry is a cache miss, not an error.

Numba loads a function's machine code from its cache files at the first call for a signature
and lets any error escape, so one `.nbi` or `.nbc` file cut short would fail every process
that calls the kernel, for good. Modules in lstmc's cache and modules written by `lstmc
compile` both guard their functions, and lstmc_runtime's, through `guard_numba_cache`.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
import warnings
from types import ModuleType

from lstmc_runtime.errors import CacheWarning

__all__ = ["guard_numba_cache", "warn_once"]

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(message: str) -> None:
    """Warn with `message` the first time this process meets it (a bad file is reported once,
    however many kernels or threads run into it)."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, CacheWarning, stacklevel=3)


def _drop_numba_entry(numba_cache, what: str, exc: Exception) -> None:
    """Warn about, and remove, the index and data files of one function's Numba cache."""
    index = getattr(getattr(numba_cache, "_cache_file", None), "_index_path", None)
    if not isinstance(index, str) or not index.endswith(".nbi"):
        where = getattr(numba_cache, "_cache_path", "Numba's cache")
        warn_once(
            f"lstmc: could not {what} compiled code in {where} ({type(exc).__name__}: {exc}); "
            "compiling again"
        )
        return
    base = index[: -len(".nbi")]
    warn_once(
        f"lstmc: could not {what} Numba's cache entry {index} (or its data files "
        f"{os.path.basename(base)}.*.nbc) ({type(exc).__name__}: {exc}); removing it and "
        "compiling again"
    )
    for name in [index, *glob.glob(glob.escape(base) + ".*.nbc")]:
        try:
            os.unlink(name)
        except OSError:
            pass  # gone already (another process dropped it too), or not ours to remove


def _guard(numba_cache) -> None:
    load, save = numba_cache.load_overload, numba_cache.save_overload

    def load_overload(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - pickle, OS and LLVM errors alike: a miss
            _drop_numba_entry(numba_cache, "load", exc)
            return None  # the dispatcher compiles, then saves a fresh entry

    def save_overload(*args, **kwargs):
        try:
            save(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the kernel is compiled; only the cache failed
            _drop_numba_entry(numba_cache, "save", exc)

    load_overload.lstmc_guarded = save_overload.lstmc_guarded = True
    numba_cache.load_overload, numba_cache.save_overload = load_overload, save_overload


def guard_numba_cache(namespace: ModuleType | dict, runtime: bool = True) -> None:
    """Make every cached Numba function of `namespace` (a module, or a module's globals())
    treat an unreadable cache entry as a miss, and with `runtime` those of every lstmc_runtime
    module imported so far too (Numba keeps their entries beside the installed package or, where
    that is read-only, in the user's cache).

    The guard replaces the load and save of each function's cache object (`dispatcher._cache`,
    a `numba.core.caching.Cache` for `njit` and `cuda.jit` alike) with ones that warn once,
    remove the function's entry, and compile instead."""
    if runtime:
        for name, module in list(sys.modules.items()):
            if name.partition(".")[0] == "lstmc_runtime" and module is not None:
                guard_numba_cache(module, runtime=False)
    values = namespace if isinstance(namespace, dict) else vars(namespace)
    for value in list(values.values()):
        numba_cache = getattr(value, "_cache", None)
        load = getattr(numba_cache, "load_overload", None)
        if (
            load is None
            or not hasattr(numba_cache, "_cache_file")  # a NullCache: nothing on disk
            or getattr(load, "lstmc_guarded", False)
        ):
            continue
        _guard(numba_cache)
