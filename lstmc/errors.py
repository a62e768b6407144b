"""The error hierarchy. Every error lstmc raises on purpose derives from LstmcError.

LstmcError
├── SpecError            a spec is wrong; carries file:line:col
├── VerifyError          an IR graph breaks an invariant; prints the IR, failing node marked
├── PassError            a pass failed or broke the graph; names the pass and the ones before
├── CodegenError         code generation could not handle a graph
└── KernelArgumentError  a kernel was called with bad arguments; names argument and shapes

CacheWarning (a UserWarning): a cache entry was bad and is being replaced, or the cache can't
be used; the kernel is compiled again, never wrong.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from lstmc_runtime.errors import (
    CacheWarning,
    CudaUnavailableError,
    KernelArgumentError,
    LstmcError,
)

__all__ = [
    "CacheWarning",
    "CodegenError",
    "CudaUnavailableError",
    "KernelArgumentError",
    "Location",
    "LstmcError",
    "PassError",
    "SpecError",
    "VerifyError",
    "did_you_mean",
]


@dataclass(frozen=True)
class Location:
    """A place in a spec file: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def shifted(self, offset: int) -> Location:
        """The location `offset` characters further along the same line."""
        return Location(self.file, self.line, self.col + offset)


class SpecError(LstmcError):
    """A spec file is invalid. The message starts with file:line:col."""

    def __init__(self, message: str, location: Location | None):
        self.location = location
        self.message = message
        super().__init__(f"{location}: error: {message}" if location else f"error: {message}")


class VerifyError(LstmcError):
    """An IR graph breaks an invariant."""


class PassError(LstmcError):
    """A pass failed, or left a graph that does not verify."""


class CodegenError(LstmcError):
    """Code generation cannot handle a graph (for example a size a kernel variant can't hold)."""


def did_you_mean(name: str, candidates) -> str:
    """A ' (did you mean `x`?)' suffix naming the nearest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
