"""The CUDA run-time that generated CUDA modules import (as `lstmc_runtime.cuda`).

What lives here rather than in each generated module:

- `device_math(dtype)`: the transcendental functions bound to the ops' `_vm_*` names, as CUDA
  device functions typed for one float type (a float32 kernel never promotes to float64). They
  are built on `math.exp/tanh/log/log1p` (libdevice on the GPU), never overflow for large |x|
  and propagate NaN;
- `lane_sum`: the sum over a group of L adjacent lanes (a warp butterfly of `shfl_xor_sync`);
- generic kernels: the register-tiled matrix product of the hoisted input projection over all
  T*B rows (`C = A @ W.T`, specialized per dtype), device copies and fills;
- the launch configuration: tile shapes, the persistent kernel's grid (from the device's SM
  count, shared memory and cooperative occupancy), and fast launches with an explicit signature;
- `CudaKernel`: argument checks, packing onto the device, NumPy or device arrays in and out
  (anything with `__cuda_array_interface__`: Numba, CuPy, torch.cuda), streams, and the choice
  between the stepwise and the persistent variant.

Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same code runs with small tiles,
one cooperative block, and a barrier-based emulation of the warp shuffle, which the simulator
lacks; nothing else changes.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from lstmc_runtime.errors import KernelArgumentError
from lstmc_runtime.kernel import Kernel
from lstmc_runtime.packing import PackedParams, check_float, pack_weights
from lstmc_runtime.signature import size_value
from numba import cuda
from numba.core import types as nbtypes


def _simulator_enabled() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # older layouts keep it in numba's own config
        from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


SIMULATOR = _simulator_enabled()

# -- tile shapes -----------------------------------------------------------------------------
# The stepwise fused kernel is a register-tiled product [B, in] x [in, K*E] with the step's
# element-wise code as its epilogue: a block covers BM batch rows x BN units, each thread TM x TN
# of them, and the reduction runs through shared memory in chunks of BK. The persistent kernel
# gives every group of L lanes one unit and NB batch rows. The simulator runs a thread per
# Python thread, so it gets the smallest shapes that still exercise every index path.
if SIMULATOR:
    STEP_TILE = (4, 4, 2, 2, 2)  # BM, BN, BK, TM, TN
    GEMM_TILE = (4, 4, 2, 2, 2)
    PERSIST_NB = 2
    PERSIST_LANES = 4
    PERSIST_THREADS = 8
    POINT_THREADS = 8
    NORM_THREADS = 4
else:
    STEP_TILE = (32, 32, 16, 2, 2)
    GEMM_TILE = (64, 64, 16, 4, 4)
    PERSIST_NB = 4
    PERSIST_LANES = 32
    PERSIST_THREADS = 256
    POINT_THREADS = 256
    NORM_THREADS = 128

VARIANTS = ("auto", "stepwise", "persistent")


def numba_type(dtype):
    """The Numba scalar type of a NumPy float type (for shared and local arrays)."""
    return nbtypes.float32 if np.dtype(dtype) == np.float32 else nbtypes.float64


F64 = nbtypes.float64

# -- device math -----------------------------------------------------------------------------


class DeviceMath:
    """Device functions for one float type: sigmoid, tanh, exp, log, softplus."""

    def __init__(self, dtype):
        F = np.dtype(dtype).type
        ZERO, ONE = F(0.0), F(1.0)
        INF, NAN = F(np.inf), F(np.nan)
        # exp(v) overflows above log(max float): return inf there without calling exp (the
        # simulator's math.exp would raise OverflowError; the GPU gives inf either way).
        EXP_MAX = F(math.log(np.finfo(F).max))
        dev = cuda.jit(device=True, inline="always")

        @dev
        def sigmoid(v):
            # exp of a non-positive argument only: exact limits 0 and 1, NaN stays NaN
            if v >= ZERO:
                return ONE / (ONE + F(math.exp(-v)))
            z = F(math.exp(v))
            return z / (ONE + z)

        @dev
        def tanh(v):
            return F(math.tanh(v))

        @dev
        def exp(v):
            if v > EXP_MAX:
                return INF
            return F(math.exp(v))

        @dev
        def log(v):
            if v < ZERO:
                return NAN
            if v == ZERO:
                return -INF
            return F(math.log(v))

        @dev
        def softplus(v):
            # max(v, 0) + log1p(exp(-|v|)): no overflow, softplus(-inf) = 0, NaN stays NaN
            if v != v:  # noqa: PLR0124
                return v
            m = v if v > ZERO else ZERO  # noqa: FURB136
            return m + F(math.log1p(F(math.exp(-abs(v)))))

        self.sigmoid, self.tanh, self.exp, self.log, self.softplus = (
            sigmoid,
            tanh,
            exp,
            log,
            softplus,
        )


_MATH: dict = {}


def device_math(dtype) -> DeviceMath:
    key = np.dtype(dtype)
    if key not in _MATH:
        _MATH[key] = DeviceMath(key)
    return _MATH[key]


# -- lane reductions -------------------------------------------------------------------------

if SIMULATOR:

    def _shfl_xor_sim(value, offset):
        """The value of lane `tid ^ offset`: an emulation of `shfl_xor_sync` for the
        simulator, through a per-block mailbox and two block barriers. Callers keep the
        shuffle block-uniform (every thread of the block reaches it), as the barrier needs."""
        th = threading.current_thread()
        box = th._manager.__dict__.setdefault("_lstmc_lanes", {})
        box[th.thread_id] = value
        th.syncthreads()
        other = box[th.thread_id ^ offset]
        th.syncthreads()
        return other

    shfl_xor = cuda.jit(device=True)(_shfl_xor_sim)
else:

    @cuda.jit(device=True, inline="always")
    def shfl_xor(value, offset):
        return cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)


@cuda.jit(device=True, inline="always")
def lane_sum(v, lanes):
    """Sum of v over the aligned group of `lanes` lanes (a power of two up to 32); every lane
    of the group gets the sum. Every lane of the warp must call it."""
    off = lanes >> 1
    while off > 0:
        v += shfl_xor(v, off)
        off >>= 1
    return v


# -- generic kernels -------------------------------------------------------------------------


def _make_gemm(dtype):
    """C[m, n] = sum_k A[m, k] * W[n, k], register-tiled through shared memory.

    A is [M, K] in any layout (the input, or a column block of a hoisted value), W the packed
    weight [N, K] (rows = output units), C [M, N]. Grid: (ceil(M/BM), ceil(N/BN)), block
    (BN/TN, BM/TM). Each thread keeps a TM x TN tile of C in registers.
    """
    F = np.dtype(dtype).type
    NT = numba_type(dtype)
    ZERO = F(0.0)
    BM, BN, BK, TM, TN = GEMM_TILE

    @cuda.jit
    def gemm_nt(A, W, C):
        M = A.shape[0]
        K = A.shape[1]
        N = W.shape[0]
        # Dynamic shared memory only: the simulator hands static shared arrays out racily.
        sh = cuda.shared.array(0, NT)  # A tile [BK, BM], then W tile [BK, BN]
        acc = cuda.local.array((TM, TN), NT)
        fa = cuda.local.array(TM, NT)
        fw = cuda.local.array(TN, NT)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nthr = cuda.blockDim.x * cuda.blockDim.y
        tid = ty * cuda.blockDim.x + tx
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        for p in range(TM):
            for q in range(TN):
                acc[p, q] = ZERO
        for k0 in range(0, K, BK):
            for e in range(tid, BM * BK, nthr):
                r = e // BK
                c = e - r * BK
                m = m0 + r
                k = k0 + c
                sh[c * BM + r] = A[m, k] if (m < M and k < K) else ZERO
            for e in range(tid, BN * BK, nthr):
                r = e // BK
                c = e - r * BK
                n = n0 + r
                k = k0 + c
                sh[BK * BM + c * BN + r] = W[n, k] if (n < N and k < K) else ZERO
            cuda.syncthreads()
            for c in range(BK):
                for p in range(TM):
                    fa[p] = sh[c * BM + ty * TM + p]
                for q in range(TN):
                    fw[q] = sh[BK * BM + c * BN + tx * TN + q]
                for p in range(TM):
                    for q in range(TN):
                        acc[p, q] += fa[p] * fw[q]
            cuda.syncthreads()
        for p in range(TM):
            m = m0 + ty * TM + p
            for q in range(TN):
                n = n0 + tx * TN + q
                if m < M and n < N:
                    C[m, n] = acc[p, q]

    return gemm_nt


@cuda.jit
def copy_2d(src, dst):
    """dst[...] = src[...] for 2-D arrays of any layout (device copies, strided inputs)."""
    n1 = dst.shape[1]
    for idx in range(cuda.grid(1), dst.shape[0] * n1, cuda.gridsize(1)):
        r = idx // n1
        dst[r, idx - r * n1] = src[r, idx - r * n1]


@cuda.jit
def fill_2d(dst, value):
    n1 = dst.shape[1]
    for idx in range(cuda.grid(1), dst.shape[0] * n1, cuda.gridsize(1)):
        r = idx // n1
        dst[r, idx - r * n1] = value


_GEMM: dict = {}


def gemm_kernel(dtype):
    key = np.dtype(dtype)
    if key not in _GEMM:
        _GEMM[key] = _make_gemm(key)
    return _GEMM[key]


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
        self._launcher(name)(grid, (BN // TN, BM // TM), self.stream, shared, *args)

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


# -- arrays of every kind ----------------------------------------------------------------------


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


def _kind_of(a) -> str:
    if not is_device_array(a):
        return "numpy"
    module = type(a).__module__.split(".")[0]
    if module == "torch":
        return "torch"
    if module == "cupy":
        return "cupy"
    return "numba"


class _Allocator:
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
        kind = _kind_of(x)
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


def _launch_config_copy(n: int) -> tuple:
    threads = min(POINT_THREADS, max(1, n)) if SIMULATOR else POINT_THREADS
    return max(1, min(-(-n // threads), 65535)), threads


def _as_2d(a):
    """A C-contiguous array as [rows, last dimension] (the simulator's shapes take no -1)."""
    shape = tuple(a.shape)
    return a.reshape(int(np.prod(shape[:-1], dtype=np.int64)), shape[len(shape) - 1])


def device_copy(src, dst, stream) -> None:
    """dst[...] = src[...] on the device, for 2- or 3-D arrays of the same shape."""
    if dst.size == 0:
        return
    if src.is_c_contiguous():
        s = _as_2d(src)
    elif src.ndim == 3:  # strided 3-D: one 2-D copy per leading index
        for i in range(src.shape[0]):
            device_copy(src[i], dst[i], stream)
        return
    else:
        s = src
    d = _as_2d(dst)
    grid, threads = _launch_config_copy(d.size)
    copy_2d[grid, threads, stream or 0](s, d)


def device_fill(dst, value, stream) -> None:
    if dst.size == 0:
        return
    d = _as_2d(dst)
    grid, threads = _launch_config_copy(d.size)
    fill_2d[grid, threads, stream or 0](d, dst.dtype.type(value))


# -- the kernel object -------------------------------------------------------------------------


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
            new.variant = _check_variant(variant)
        if blocks is not None:
            if not isinstance(blocks, int) or blocks < 1:
                raise KernelArgumentError(f"blocks must be a positive integer, got {blocks!r}")
            new.blocks = blocks
        return new

    def pack(self, params: Mapping) -> PackedParams:
        """Check and pack params once, onto the device: each product's weight as one
        contiguous [out, in] array (the rows of its params stacked), vectors as they are."""
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
        sizes = self.signature.bind_params(
            host if isinstance(params, Mapping) else params, fixed=self.fixed_sizes
        )
        for name, a in host.items():
            check_float(f"param `{name}`", a)
        arrays = pack_weights(host, sizes, self.weights, self.vector_params, self.dtype)
        device = {}
        for name, a in arrays.items():
            if name in self.weights:
                a = np.ascontiguousarray(a.T)  # [in, out] -> [out, in]: rows are units
            device[name] = cuda.to_device(np.ascontiguousarray(a))
        return PackedParams(device, sizes, self.dtype, id(self.weights))

    def __call__(
        self, x, params, state: Mapping | None = None, stream=None, variant: str | None = None
    ):
        variant = _check_variant(variant) if variant is not None else self.variant
        packed = params if isinstance(params, PackedParams) else self.pack(params)
        if packed._owner != id(self.weights) or packed.dtype != self.dtype:
            raise KernelArgumentError(
                "these packed params were packed by another kernel; "
                "pack them with this kernel's .pack()"
            )
        kind = _kind_of(x)
        xv = as_device_view(x) if kind != "numpy" else x
        check_float("x", xv, self.dtype)
        if state is not None and not isinstance(state, Mapping):
            raise KernelArgumentError(
                f"state must be a dict {{name: [B, n] array}}, got {type(state).__name__}"
            )
        views = {
            k: (as_device_view(v) if is_device_array(v) else v) for k, v in (state or {}).items()
        }
        sizes = self.signature.bind(xv, None, views, fixed=packed.sizes)
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

        alloc = _Allocator(kind, x, self.dtype, stream or 0)
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


def _check_variant(variant) -> str:
    if variant not in VARIANTS:
        raise KernelArgumentError(
            f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        )
    return variant
