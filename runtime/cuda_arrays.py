"""Arrays of every kind for the CUDA run-time: telling NumPy from device arrays (anything
with `__cuda_array_interface__`: Numba, CuPy, torch.cuda, or the simulator's), Numba views of
them, allocating results of the input's kind, and resolving the caller's stream."""

from __future__ import annotations

import sys

import numpy as np
from lstmc_runtime.cuda_config import SIMULATOR
from numba import cuda


def _fake_array_type():
    if not SIMULATOR:
        return ()
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return (FakeCUDAArray,)


def is_device_array(a) -> bool:
    """Is `a` a device array (anything with `__cuda_array_interface__`, or the simulator's)?"""
    return (
        hasattr(a, "__cuda_array_interface__")
        or isinstance(a, _fake_array_type())
        or (cuda.is_cuda_array(a) if hasattr(cuda, "is_cuda_array") else False)
    )


def as_device_view(a):
    """A Numba device array sharing `a`'s memory (no copy)."""
    if isinstance(a, _fake_array_type()) or type(a).__name__ == "DeviceNDArray":
        return a
    return cuda.as_cuda_array(a)


def kind_of(a) -> str:
    if not is_device_array(a):
        return "numpy"
    module = type(a).__module__.split(".")[0]
    if module == "torch":
        return "torch"
    if module == "cupy":
        return "cupy"
    return "numba"


class Allocator:
    """Allocates the arrays a call returns, of the same kind as its input x."""

    def __init__(self, kind: str, like, dtype, stream):
        self.kind = kind
        self.like = like
        self.dtype = np.dtype(dtype)
        self.stream = stream

    def __call__(self, shape):
        """(the array to return, a Numba view of it to launch with)."""
        shape = tuple(int(s) for s in shape)
        if self.kind == "torch":
            torch = sys.modules["torch"]
            t = torch.empty(shape, dtype=getattr(torch, self.dtype.name), device=self.like.device)
            return t, cuda.as_cuda_array(t, sync=False)
        if self.kind == "cupy":
            cupy = sys.modules["cupy"]
            with self.like.device:
                c = cupy.empty(shape, dtype=self.dtype)
            return c, cuda.as_cuda_array(c, sync=False)
        d = cuda.device_array(shape, self.dtype, stream=self.stream)
        return d, d


def resolve_stream(stream, x):
    """A Numba stream from what the caller gave: a Numba stream, a torch/CuPy stream, a raw
    handle, or None (the current torch/CuPy stream for such inputs, else the default)."""
    if SIMULATOR:
        return 0 if stream is None else stream
    if stream is None:
        kind = kind_of(x)
        if kind == "torch":
            torch = sys.modules["torch"]
            handle = torch.cuda.current_stream(x.device).cuda_stream
            return cuda.external_stream(handle) if handle else 0
        if kind == "cupy":
            handle = sys.modules["cupy"].cuda.get_current_stream().ptr
            return cuda.external_stream(handle) if handle else 0
        return 0
    if isinstance(stream, int):
        return cuda.external_stream(stream) if stream else 0
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        handle = getattr(stream, attr, None)
        if isinstance(handle, int):
            return cuda.external_stream(handle) if handle else 0
    return stream
