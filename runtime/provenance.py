"""Which lstmc_runtime a generated module was built against, and whether Numba may load the
module's machine code from its cache.

A compiled kernel holds its own copy of most runtime functions it calls: Numba links them
into the kernel's machine code, and caches that code beside the module (`cache=True`). Its
cache index watches the module's file alone. So a module written by `lstmc compile` and then
imported after lstmc was upgraded would run the old runtime's code, under the new runtime's
Python side. Each generated module records the runtime it was built against; on another one
its functions compile again, without the cache, and a CacheWarning says to recompile.
(Modules in lstmc's own cache never meet another runtime: its key holds the digest.)
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

from lstmc_runtime.errors import CacheWarning

__all__ = ["may_use_numba_cache", "runtime_digest"]


@functools.cache
def runtime_digest() -> str:
    """A sha256 of lstmc_runtime's sources (~1 ms, once a process)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def may_use_numba_cache(built_with: str, module_file: str) -> bool:
    """True when the module at `module_file` was built against this runtime (`built_with`,
    its digest); otherwise warn, once per module, and say no."""
    if built_with == runtime_digest():
        return True
    warnings.warn(
        f"{module_file} was generated against another lstmc_runtime (sha256 "
        f"{built_with[:12]}..., this one {runtime_digest()[:12]}...): its functions compile "
        "again, without Numba's cache. Recompile it (`lstmc compile`) to cache them again.",
        CacheWarning,
        stacklevel=2,
    )
    return False
