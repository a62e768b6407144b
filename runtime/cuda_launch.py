"""Launching on the device: its limits (SM count, shared memory, cooperative launches),
kernels with a fixed signature (`Launcher`), the run context a generated `_launch` calls
(`Run`: allocation, the launch shapes of each kind of kernel), and the persistent kernel's grid
from the device's SM count, shared memory and cooperative occupancy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from lstmc_runtime.cuda_config import (
    GEMM_TILE,
    NORM_THREADS,
    PERSIST_LANES,
    PERSIST_THREADS,
    POINT_THREADS,
    SIMULATOR,
    STEP_TILE,
    numba_type,
)
from lstmc_runtime.cuda_generic import gemm_kernel
from lstmc_runtime.errors import KernelArgumentError
from numba import cuda
from numba.core import types as nbtypes

if TYPE_CHECKING:
    from lstmc_runtime.cuda_kernel import CudaKernel

# -- device properties -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceLimits:
    """What the launch configuration needs to know about the current device."""

    name: str
    sm_count: int
    max_threads_per_block: int
    shared_per_block: int  # without opting in
    shared_per_block_optin: int  # the most a kernel may ask for once it opts in
    cooperative: bool
    compute_capability: tuple


_LIMITS: dict = {}


def device_limits() -> DeviceLimits:
    if SIMULATOR:
        return DeviceLimits("CUDA simulator", 1, 1024, 48 * 1024, 48 * 1024, True, (5, 0))
    dev = cuda.get_current_device()
    key = dev.id
    if key not in _LIMITS:

        def attr(name, default):
            try:
                return int(getattr(dev, name))
            except Exception:  # noqa: BLE001 - a driver without the attribute: assume
                return default

        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        base = attr("MAX_SHARED_MEMORY_PER_BLOCK", 48 * 1024)
        _LIMITS[key] = DeviceLimits(
            name=name,
            sm_count=attr("MULTIPROCESSOR_COUNT", 1),
            max_threads_per_block=attr("MAX_THREADS_PER_BLOCK", 1024),
            shared_per_block=base,
            shared_per_block_optin=max(base, attr("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", base)),
            cooperative=bool(attr("COOPERATIVE_LAUNCH", 1)),
            compute_capability=tuple(dev.compute_capability),
        )
    return _LIMITS[key]


# -- launching -------------------------------------------------------------------------------


def arg_types(spec: str, dtype) -> tuple:
    """Numba types of a kernel's arguments from their compact spec: `a<ndim>` is a C-contiguous
    array of the kernel's dtype, `i` an int64."""
    nt = numba_type(dtype)
    out = []
    for code in spec.split():
        if code == "i":
            out.append(nbtypes.int64)
        elif code[0] == "a":
            out.append(nbtypes.Array(nt, int(code[1:]), "C"))
        else:
            raise ValueError(f"bad argument code {code!r}")
    return tuple(out)


def _dims(d) -> tuple:
    d = tuple(d) if isinstance(d, (tuple, list)) else (d,)
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


class Launcher:
    """Launches one kernel with a fixed signature.

    On a GPU it compiles the kernel once for the declared argument types and launches the
    compiled kernel directly, which skips the dispatcher's per-call type inference (the CPU
    cost of a launch matters: the stepwise variant launches once or more per timestep). The
    caller passes only device arrays of the declared layout. Under the simulator, or if the
    direct path is not available in this Numba version, it goes through the dispatcher.
    """

    def __init__(self, dispatcher, spec: str, dtype):
        self.dispatcher = dispatcher
        self.types = arg_types(spec, dtype)
        self._kernel = None
        self._direct = not SIMULATOR
        self._optin = 0

    def compiled(self):
        if self._kernel is None:
            self._kernel = self.dispatcher.compile(self.types)
        return self._kernel

    def max_cooperative_blocks(self, nthreads: int, shared: int) -> int:
        if SIMULATOR:
            return 1
        kernel = self.compiled()
        self.allow_shared(shared)
        return int(kernel.max_cooperative_grid_blocks(nthreads, shared))

    def allow_shared(self, nbytes: int) -> bool:
        """Opt in to more than the default dynamic shared memory per block (Hopper: up to
        227 KiB). Returns whether `nbytes` may be used."""
        if SIMULATOR or nbytes <= device_limits().shared_per_block or nbytes <= self._optin:
            return True
        try:
            from numba.cuda.cudadrv.driver import binding, driver

            func = self.compiled()._codelibrary.get_cufunc()
            attr = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            driver.cuKernelSetAttribute(attr, int(nbytes), func.handle, func.device.id)
            self._optin = nbytes
            return True
        except Exception:  # noqa: BLE001 - no opt-in on this driver: keep the default
            return False

    def __call__(self, grid, block, stream, shared, *args):
        if self._direct:
            try:
                kernel = self.compiled()
            except (AttributeError, TypeError, NotImplementedError):
                self._direct = False
            else:
                kernel.launch(args, _dims(grid), _dims(block), stream or 0, shared)
                return
        self.dispatcher[grid, block, stream or 0, shared](*args)


# -- the run context ---------------------------------------------------------------------------


def _blocks_for(total: int, threads: int, limits: DeviceLimits) -> int:
    return max(1, min(-(-total // threads), limits.sm_count * 32))


class Run:
    """What a generated `_launch` calls to allocate and launch on one stream."""

    def __init__(self, kernel: CudaKernel, stream, variant: str):
        self.kernel = kernel
        self.dtype = kernel.dtype
        self.stream = stream
        self.variant = variant
        self.limits = device_limits()
        self.used = None  # the variant that ran
        self.grid = None  # the persistent kernel's (blocks, threads, shared bytes), if it ran

    def empty(self, shape):
        return cuda.device_array(tuple(int(s) for s in shape), self.dtype, stream=self.stream)

    def _launcher(self, name):
        return self.kernel._launcher(name)

    def pointwise(self, name, total, *args):
        """A grid-stride element-wise kernel over `total` elements."""
        if total <= 0:
            return
        threads = min(POINT_THREADS, max(1, total)) if SIMULATOR else POINT_THREADS
        self._launcher(name)(
            _blocks_for(total, threads, self.limits), threads, self.stream, 0, *args
        )

    def rows(self, name, rows, *args):
        """A kernel with one block per row (layer_norm), float64 scratch in shared memory."""
        if rows <= 0:
            return
        self._launcher(name)(
            min(rows, 65535 * 1024), NORM_THREADS, self.stream, NORM_THREADS * 8, *args
        )

    def fused(self, name, B, E, cols, *args):
        """A step's products and element-wise work: the register-tiled fused kernel, with
        shared memory for an operand tile and `cols` weight tiles."""
        if B <= 0 or E <= 0:
            return
        BM, BN, BK, TM, TN = STEP_TILE
        shared = (BK * BM + cols * BK * BN) * self.dtype.itemsize
        grid = (-(-E // BN), -(-B // BM))
        if grid[1] > 65535:
            raise KernelArgumentError(
                f"batch {B} exceeds the stepwise kernel's limit of {65535 * BM} rows; the "
                f"persistent variant (variant='persistent') has no batch limit where the "
                f"weights fit in shared memory; else split the batch"
            )
        launcher = self._launcher(name)
        if shared > self.limits.shared_per_block:
            self._opt_in(launcher, name, cols, shared)
        launcher(grid, (BN // TN, BM // TM), self.stream, shared, *args)

    def _opt_in(self, launcher, name: str, cols: int, shared: int) -> None:
        """Over 48 KiB a block (float64 from 12 weight tiles on one operand, float32 from
        24) the fused kernel must opt in, or its launch fails in the driver."""
        what = (
            f"the stepwise kernel `{name}` multiplies one operand by {cols} weight blocks at "
            f"once: {shared} bytes of shared memory a block"
        )
        smaller = " (float32 halves it)" if self.dtype.itemsize == 8 else ""
        if shared > self.limits.shared_per_block_optin:
            raise KernelArgumentError(
                f"{what}, more than {self.limits.name} gives "
                f"({self.limits.shared_per_block_optin}){smaller}; write the cell with fewer "
                f"products of one operand"
            )
        if not launcher.allow_shared(shared):
            raise KernelArgumentError(
                f"{what}, more than the {self.limits.shared_per_block} a block gets without "
                f"opting in, and this driver refused the opt-in{smaller}"
            )

    def gemm(self, A, W, C):
        """C = A @ W.T for the hoisted products (A: [M, K] any layout, W: [N, K])."""
        M, N = C.shape
        if M <= 0 or N <= 0:
            return
        BM, BN, BK, TM, TN = GEMM_TILE
        grid = (-(-M // BM), -(-N // BN))
        if grid[1] > 65535:
            raise KernelArgumentError(
                f"a hoisted product with {N} outputs exceeds the limit of {65535 * BN}"
            )
        shared = (BK * BM + BK * BN) * self.dtype.itemsize
        gemm_kernel(self.dtype)[grid, (BN // TN, BM // TM), self.stream or 0, shared](A, W, C)

    def persistent(self, name, phases, T, B, *args) -> bool:
        """Run the whole sequence in one cooperative launch if this call should (the variant
        and the sizes decide). `phases` lists (units, floats per unit) of each product phase.
        Returns False when the caller must run the stepwise variant instead."""
        if self.variant == "stepwise":
            return False
        config = persistent_config(self.kernel, name, phases, B, self.dtype)
        if isinstance(config, str):
            if self.variant == "persistent":
                raise KernelArgumentError(
                    f"the persistent variant can not run these sizes: {config}; use "
                    f"variant='stepwise' (or 'auto', which falls back to it)"
                )
            return False
        self.used = "persistent"
        self.grid = config
        if T <= 0 or B <= 0:
            return True
        nblk, nthr, shared = config
        self._launcher(name)(nblk, nthr, self.stream, shared, *args, PERSIST_LANES)
        return True


def persistent_shared_bytes(phases, nblk: int, nthr: int, itemsize: int) -> int:
    """Dynamic shared memory of the persistent kernel: a float64 scratch of one slot per
    thread (layer_norm reductions), then each product phase's weight slab: the columns of
    the ceil(units / blocks) units a block owns."""
    return nthr * 8 + sum(-(-e // nblk) * w for e, w in phases) * itemsize


def persistent_config(kernel, name, phases, B, dtype):
    """(blocks, threads, shared bytes) for the persistent kernel, or why it can't run."""
    limits = device_limits()
    if not limits.cooperative:
        return f"{limits.name} does not support cooperative launches"
    nthr = PERSIST_THREADS
    itemsize = np.dtype(dtype).itemsize
    launcher = kernel._launcher(name)
    need = persistent_shared_bytes(phases, 1, 0, itemsize)
    if SIMULATOR or kernel.blocks:
        nblk = kernel.blocks or 1
        shared = persistent_shared_bytes(phases, nblk, nthr, itemsize)
        if shared > limits.shared_per_block_optin or not launcher.allow_shared(shared):
            return (
                f"the recurrent weights need {shared} bytes of shared memory in each of "
                f"{nblk} block(s), more than the {limits.shared_per_block_optin} of "
                f"{limits.name}"
            )
        fits = launcher.max_cooperative_blocks(nthr, shared) if not SIMULATOR else nblk
        if fits < nblk:
            return f"only {fits} blocks of {shared} bytes of shared memory are co-resident"
        return nblk, nthr, shared
    cap = limits.shared_per_block_optin
    best_reason = None
    # Fewest blocks first (a grid-wide sync costs more with more blocks); more blocks need
    # less shared memory each. Blocks beyond the widest phase's units would own no units.
    units = max((e for e, _ in phases), default=0)
    candidates = sorted(
        {min(limits.sm_count * k, units) if units else limits.sm_count * k for k in range(1, 33)}
    )
    for nblk in candidates:
        shared = persistent_shared_bytes(phases, nblk, nthr, itemsize)
        if shared > cap:
            continue
        if not launcher.allow_shared(shared):
            cap = limits.shared_per_block
            if shared > cap:
                continue
        fits = launcher.max_cooperative_blocks(nthr, shared)
        if fits >= nblk:
            return nblk, nthr, shared
        best_reason = (
            f"{nblk} blocks of {shared} bytes of shared memory are not co-resident ({fits} fit)"
        )
    total = limits.sm_count * cap
    return (
        f"the recurrent weights ({need / 2**20:.1f} MiB) do not fit in the shared memory of "
        f"{limits.name} ({limits.sm_count} SMs x {cap // 1024} KiB = {total / 2**20:.1f} MiB"
        + (f"; {best_reason}" if best_reason else "")
        + ")"
    )
