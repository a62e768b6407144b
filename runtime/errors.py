"""The root of lstmc's error hierarchy, and the errors raised at kernel call time.

They live in the run-time package because compiled artifacts raise them without the compiler;
`lstmc.errors` re-exports both and adds the compile-time errors below LstmcError.
"""

from collections.abc import Mapping


def argument_name(name: str) -> str:
    """How a message names an argument: `x` for a bare name; a phrase that names it already
    (param `W_i`, state `h`) as it is."""
    return name if "`" in name else f"`{name}`"


def as_dict(value, what: str, holds: str):
    """`value` if it is a mapping (a dict of `holds`), {} for None; else the KernelArgumentError
    that names `what`. Tested before anything else reads it: an array's or a tensor's truth
    value raises NumPy's or torch's own error, and an empty list would pass as no state."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise KernelArgumentError(
            f"{what} must be a dict {{name: {holds}}}, got {type(value).__name__}"
        )
    return value


class LstmcError(Exception):
    """Base class of every error lstmc raises deliberately."""


class KernelArgumentError(LstmcError, ValueError):
    """A kernel was called with bad arguments. The message names the argument and both shapes.

    Also a ValueError, so code that already catches ValueError for bad arrays keeps working.
    """


class CudaUnavailableError(LstmcError, RuntimeError):
    """A CUDA kernel was called where Numba finds no CUDA driver or device."""


class CacheWarning(UserWarning):
    """A cache entry was unreadable (and is being replaced), the cache can't be used, or a
    generated module's machine code can't come from Numba's cache (lstmc_runtime.provenance)."""
