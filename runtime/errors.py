"""The root of lstmc's error hierarchy, and the errors raised at kernel call time.

They live in the run-time package because compiled artifacts raise them without the compiler;
`lstmc.errors` re-exports both and adds the compile-time errors below LstmcError.
"""


def argument_name(name: str) -> str:
    """How a message names an argument: `x` for a bare name; a phrase that names it already
    (param `W_i`, state `h`) as it is."""
    return name if "`" in name else f"`{name}`"


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
