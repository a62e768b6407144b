"""`CudaKernel`, the kernel object of a compiled CUDA module: argument checks, packing onto
the device, NumPy or device arrays in and out, streams, and the choice between the stepwise
and the persistent variant."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
from lstmc_runtime.cuda_arrays import (
    Allocator,
    as_device_view,
    is_device_array,
    kind_of,
    resolve_stream,
)
from lstmc_runtime.cuda_config import check_blocks, check_variant
from lstmc_runtime.cuda_generic import device_copy, device_fill
from lstmc_runtime.cuda_launch import Launcher, Run
from lstmc_runtime.errors import CudaUnavailableError, KernelArgumentError
from lstmc_runtime.kernel import Kernel
from lstmc_runtime.packing import PackedParams, check_float, pack_weights, packing_sizes
from lstmc_runtime.signature import as_dict, size_value
from numba import cuda

_NO_CUDA = ("CudaSupportError", "CudaDriverError")


def _needs_cuda(method):
    """Numba's "no driver" / "no device" errors, raised at the first device call, as lstmc's
    own error, which says what to do (the CLI reports the same thing)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ not in _NO_CUDA:
                raise
            raise CudaUnavailableError(
                f"CUDA is not usable here: no CUDA device is available ({type(exc).__name__}: "
                f"{' '.join(str(exc).split()).rstrip(' :')}); compile with target='cpu' on this "
                "machine, or set NUMBA_ENABLE_CUDASIM=1 for Numba's (slow) simulator"
            ) from exc

    return wrapper


class CudaKernel(Kernel):
    """A compiled cell on the CUDA target.

        y, state = kernel(x, params, state=None, stream=None, variant=None)

    x and state may be NumPy arrays (copied to the device and the results back) or device
    arrays implementing `__cuda_array_interface__` (Numba, CuPy, torch.cuda): those are read in
    place and the results come back as device arrays of the same kind, on `stream` (default:
    the current torch/CuPy stream for their arrays, else the default stream). The caller's
    arrays are never written to. `kernel.pack(params)` moves packed weights to the device once.

    variant: "auto" (default: the persistent kernel when the recurrent weights fit in the
    device's shared memory, else stepwise), "stepwise" (a few launches per timestep) or
    "persistent" (one cooperative launch for the whole sequence; an error if it can't run).
    """

    target = "cuda"

    def __init__(
        self,
        signature,
        weights,
        vector_params,
        launch,
        dtype=np.float32,
        fixed_sizes=None,
        doc=None,
    ):
        super().__init__(signature, weights, vector_params, launch, dtype, fixed_sizes, doc)
        self.variant = "auto"
        self.blocks: int | None = None  # the persistent grid; None: from the device
        self.last_variant: str | None = None  # what the last call ran
        # the last persistent call's grid: (blocks, threads per block, shared bytes per block)
        self.last_grid: tuple | None = None
        self._launchers: dict = {}

    @property
    def _module_globals(self) -> dict:
        return self._launch.__globals__

    def _launcher(self, name) -> Launcher:
        if name not in self._launchers:
            g = self._module_globals
            self._launchers[name] = Launcher(g[name], g["_KERNELS"][name], self.dtype)
        return self._launchers[name]

    def with_options(self, variant: str | None = None, blocks: int | None = None) -> CudaKernel:
        """A kernel sharing this one's compiled code with other options (packed params made
        for one work for both). `blocks` fixes the persistent kernel's grid (tuning and tests;
        under the simulator more than one block is only exact for single-phase cells at T=1,
        where no block waits for another's results)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if variant is not None:
            new.variant = check_variant(variant)
        if blocks is not None:
            new.blocks = check_blocks(blocks)
        return new

    @_needs_cuda
    def pack(self, params: Mapping, /, **sizes: int) -> PackedParams:
        """Check and pack params once, onto the device: each product's weight as one
        contiguous [out, in] array (the rows of its params stacked), vectors as they are.
        `sizes`: as the CPU kernel's pack takes them."""
        if isinstance(params, PackedParams):
            return params
        host = {}
        for name, a in params.items() if isinstance(params, Mapping) else ():
            host[name] = (
                a.copy_to_host()
                if hasattr(a, "copy_to_host")
                else (
                    np.asarray(as_device_view(a).copy_to_host())
                    if is_device_array(a)
                    else np.asarray(a)
                )
            )
        origins: dict[str, str] = {}
        if isinstance(params, Mapping):
            sizes = packing_sizes(self.signature, self.fixed_sizes, host, sizes, origins)
        else:  # the message that a dict is needed
            sizes = self.signature.bind_params(params, self.fixed_sizes, origins)
        for name, a in host.items():
            check_float(f"param `{name}`", a)
        arrays = pack_weights(host, sizes, self.weights, self.vector_params, self.dtype)
        device = {}
        for name, a in arrays.items():
            if name in self.weights:
                a = np.ascontiguousarray(a.T)  # [in, out] -> [out, in]: rows are units
            device[name] = cuda.to_device(np.ascontiguousarray(a))
        return PackedParams(device, sizes, self.dtype, id(self.weights), origins=origins)

    @_needs_cuda
    def __call__(
        self, x, params, state: Mapping | None = None, stream=None, variant: str | None = None
    ):
        variant = check_variant(variant) if variant is not None else self.variant
        packed = self._packed_for_call(params, x, state)
        if packed._owner != id(self.weights) or packed.dtype != self.dtype:
            raise KernelArgumentError(
                "these packed params were packed by another kernel; "
                "pack them with this kernel's .pack()"
            )
        kind = kind_of(x)
        xv = as_device_view(x) if kind != "numpy" else x
        check_float("x", xv, self.dtype)
        views = {
            k: (as_device_view(v) if is_device_array(v) else v)
            for k, v in as_dict(state, "state", "[B, n] array").items()
        }
        sizes = self.signature.bind(xv, None, views, packed.sizes, packed.origins)
        stream = resolve_stream(stream, x)
        T, B = int(xv.shape[0]), int(xv.shape[1])

        # x on the device, C-contiguous
        if kind == "numpy":
            xd = cuda.to_device(np.ascontiguousarray(xv), stream=stream or 0)
        elif xv.is_c_contiguous():
            xd = xv
        else:
            xd = cuda.device_array(xv.shape, self.dtype, stream=stream or 0)
            device_copy(xv, xd, stream)

        alloc = Allocator(kind, x, self.dtype, stream or 0)
        cur, nxt, handles = {}, {}, {}
        for s in self.signature.state:
            n = size_value(s.shape[0], sizes)
            a_obj, a = alloc((B, n))
            b_obj, b = alloc((B, n))
            handles[id(a)], handles[id(b)] = a_obj, b_obj
            given = views.get(s.name)
            if given is None:
                device_fill(a, 0.0, stream)
            else:
                check_float(f"state `{s.name}`", given, self.dtype)
                if is_device_array(given):
                    device_copy(given, a, stream)
                else:
                    a.copy_to_device(
                        np.ascontiguousarray(given, dtype=self.dtype), stream=stream or 0
                    )
            cur[s.name], nxt[s.name] = a, b
        outputs, out_objs = {}, {}
        for name, size in self.signature.outputs:
            obj, view = alloc((T, B, size_value(size, sizes)))
            outputs[name], out_objs[name] = view, obj

        run = Run(self, stream, variant)
        final = self._launch(run, xd, cur, nxt, packed.arrays, outputs, sizes)
        self.last_variant = run.used or "stepwise"
        self.last_grid = run.grid

        if kind == "numpy":
            ys = {k: v.copy_to_host(stream=stream or 0) for k, v in outputs.items()}
            fin = {k: v.copy_to_host(stream=stream or 0) for k, v in final.items()}
            if stream:
                stream.synchronize()
        else:
            ys = out_objs
            fin = {k: handles[id(v)] for k, v in final.items()}
        y = next(iter(ys.values())) if len(ys) == 1 else ys
        return y, fin
