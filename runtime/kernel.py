"""The kernel object that compiled modules expose: argument checks, packing, allocation.

    y, state = kernel(x, params, state=None)

`params` is the dict of declared params (any float dtype; packed on every call) or what
`kernel.pack(params)` returned (no copying at all). `state` is `{name: [B, n]}`; missing
entries start at zero. The caller's arrays are never written to. CPU torch tensors go in and
come out as views (lstmc_runtime.torch_tensors).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import math
import threading
from collections.abc import Mapping

import numpy as np
from lstmc_runtime import threads as _threads
from lstmc_runtime.blas_hold import hold_blas
from lstmc_runtime.errors import KernelArgumentError
from lstmc_runtime.layout import ALIGN_BYTES, to_panels
from lstmc_runtime.packing import (
    PackedParams,
    check_float,
    describe,
    pack_weights,
    packing_sizes,
)
from lstmc_runtime.signature import Signature, as_dict, size_value
from lstmc_runtime.threads import chunk_bounds, plan_call
from lstmc_runtime.torch_tensors import as_numpy, is_torch, to_torch

# Arrays that several threads write (state, spare state, outputs, the prologue's hoisted
# buffers: layout.aligned_index) start on a 128-byte boundary, and the unit split cuts rows
# on 128-byte boundaries too (packing.unit_bounds): two threads writing the same 128-byte
# pair of cache lines (the unit the CPU's adjacent-line prefetcher moves) made a column-split
# step 10x slower (H=128, B=1: 6.2 ms against 0.69 ms aligned). The batch split's cuts
# (threads.chunk_bounds) are not rounded: rows of a multiple of 128 bytes, or an even cut
# of them, meet on a boundary, other sizes share the one line where two chunks meet.
ALIGN = ALIGN_BYTES


def _address(raw: np.ndarray) -> int:
    """Where a writable array's data starts. `raw.ctypes.data` (which builds a ctypes object
    of numpy's) and `raw.__array_interface__` (a dict) took ~0.9 us each, this ~0.3."""
    return ctypes.addressof(ctypes.c_char.from_buffer(raw))


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty whose data starts on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    raw = np.empty(n * dtype.itemsize + ALIGN, np.uint8)
    start = -_address(raw) % ALIGN
    return raw[start : start + n * dtype.itemsize].view(dtype).reshape(shape)


def aligned_arrays(shapes, dtype) -> list[np.ndarray]:
    """Uninitialized arrays of `dtype` and these shapes, each starting on an ALIGN-byte
    boundary, cut from one allocation: each allocation with its address cost ~1.5 us, and a
    split call needs a state, a spare state and the outputs (three allocations: a state
    returned from the outputs' allocation would keep y alive)."""
    dtype = np.dtype(dtype)
    spans = [-(-math.prod(shape) * dtype.itemsize // ALIGN) * ALIGN for shape in shapes]
    raw = np.empty(sum(spans) + ALIGN, np.uint8)
    at = -_address(raw) % ALIGN
    out = []
    for shape, span in zip(shapes, spans):
        out.append(np.ndarray(shape, dtype, raw, at))  # a view of raw (~0.2 us, slicing 0.4)
        at += span
    return out


def aligned_like(arrays: dict) -> dict:
    """`aligned_empty_like` of each of `arrays` (a kernel's state: one dtype), in one
    allocation (`aligned_arrays`)."""
    if not arrays:
        return {}
    made = aligned_arrays([a.shape for a in arrays.values()], next(iter(arrays.values())).dtype)
    return dict(zip(arrays, made))


def aligned_empty_like(a: np.ndarray) -> np.ndarray:
    return aligned_empty(a.shape, a.dtype)


def _state_as_numpy(state, dtype):
    """A state dict with its CPU torch tensors as NumPy views (lstmc_runtime.torch_tensors)."""
    if all(type(a) is np.ndarray for a in state.values()):
        return state
    return {name: as_numpy(f"state `{name}`", a, dtype) for name, a in state.items()}


def _taking_work(launch):
    """`launch` as a function of the current glue's arguments. Modules that lstmc 0.1.0 wrote
    before the workspace (artifacts of `lstmc compile`) have a `_launch` without its last
    argument, `work`; they keep working, allocating their buffers each call as they did."""
    if "work" in inspect.signature(launch).parameters:
        return launch
    return lambda *args: launch(*args[:-1])


# Scratch memory a kernel keeps for the next call on a thread (Kernel.workspace), at most.
WORKSPACE_KEEP_BYTES = 256 << 20
# Calls' sizes and plans kept per packed params (Kernel._bind_and_plan): a few shapes in use.
_CALLS_KEPT = 32


class Kernel:
    target = "base"

    def __init__(
        self,
        signature: Signature,
        weights: dict,
        vector_params: list,
        launch,
        dtype=np.float32,
        fixed_sizes: dict | None = None,
        doc: str | None = None,
        columns: dict | None = None,
        launch_columns=None,
        panels=(),
        blas_weights=None,
        launch_chunks=None,
    ):
        self.signature = signature
        self.weights = weights
        self.vector_params = list(vector_params)
        self._launch = _taking_work(launch) if self.target == "cpu" else launch
        self.dtype = np.dtype(dtype)
        self.fixed_sizes = dict(fixed_sizes or {})
        self.__doc__ = doc
        self.source: str | None = None  # set by the compiler
        self.ir: str | None = None
        self.threads: int | None = None  # None: choose from the sizes; N: use N threads
        # How threads split a call: None (choose from the sizes), "batch" (chunks of rows) or
        # "units" (the step's units, where the module has `launch_columns`); see threads.py.
        self.split: str | None = None
        self.columns = columns
        # packed weights that the products read in panels (lstmc_runtime.layout.to_panels);
        # modules written before panels have none and read every weight row-major
        self.panels = frozenset(panels)
        # Whether a call may run a BLAS product (np.dot). Modules that do not say so (written
        # before BLAS_WEIGHTS) may: their hoisted products were np.dot calls.
        self.calls_blas = blas_weights is None or bool(blas_weights)
        self._launch_columns = launch_columns and _taking_work(launch_columns)
        # The batch split through the module's `_cols` (chunks of rows, every unit each, the
        # input projection a few steps at a time), which one-thread calls take too, as one
        # chunk (threads.py); modules written before it use `_launch`.
        self._launch_chunks = launch_chunks
        self.last_plan = None
        self._work = threading.local()
        self._work_per_row_cache: dict = {}
        self._widths_cache: dict = {}

    @property
    def threads(self) -> int | None:
        """None: choose from the sizes; N >= 1: use N threads."""
        return self._threads

    @threads.setter
    def threads(self, value) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise KernelArgumentError(
                f"kernel.threads must be None (choose from the sizes) or an int >= 1; got {value!r}"
            )
        self._threads = None if value is None else int(value)

    @property
    def split(self) -> str | None:
        """None: choose; "batch": chunks of rows; "units": the step's units (kernels whose
        module has a unit split; others split rows)."""
        return self._split

    @split.setter
    def split(self, value) -> None:
        if value not in (None, "batch", "units"):
            raise KernelArgumentError(
                f'kernel.split must be None, "batch" or "units"; got {value!r}'
            )
        self._split = value

    def workspace(self) -> dict:
        """This thread's scratch memory, kept from call to call: the prologue's hoisted
        [T, B, n] buffers (the input projection of every step, ...) live in it.

        Allocating them afresh every call cost page faults: glibc hands large blocks back to
        the OS, and after any call on another thread (the batch split's, say) it did so on
        every call (layernorm_lstm H=64, B=64: 3168 faults, 12.5 ms a call against 9.0 ms).
        One dict per calling thread and kernel, so concurrent calls never share it; it grows to
        the largest call's needs, and is dropped after a call that needed more than
        WORKSPACE_KEEP_BYTES. `release_workspace()` frees this thread's."""
        spaces = getattr(self._work, "spaces", None)
        if spaces is None:
            spaces = self._work.spaces = {}
        return spaces

    def __copy__(self):
        """A copy with its own workspaces (lstmc.compile hands out copies of a module's
        kernel: copies sharing one would keep each other's memory alive)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._work = threading.local()
        return new

    def release_workspace(self) -> None:
        """Free the calling thread's workspace (the next call allocates it again)."""
        self._work.spaces = {}

    def _widths(self, sizes) -> tuple[dict[str, int], dict[str, int]]:
        """The widths of the state and of the outputs for these sizes, kept per sizes
        (size_value over the signature was ~1 us of a small call)."""
        key = tuple(sizes.items())
        widths = self._widths_cache.get(key)
        if widths is None:
            state = {s.name: size_value(s.shape[0], sizes) for s in self.signature.state}
            outputs = {name: size_value(size, sizes) for name, size in self.signature.outputs}
            widths = self._widths_cache[key] = (state, outputs)
        return widths

    def _work_per_row(self, sizes) -> int:
        """Multiply-adds of one batch row's step: the size of every packed weight. Kept per
        sizes: working it out from the signature took a quarter of a small call's time."""
        key = tuple(sizes.items())
        total = self._work_per_row_cache.get(key)
        if total is None:
            total = self._work_per_row_cache[key] = self._count_work_per_row(sizes)
        return total

    def _count_work_per_row(self, sizes) -> int:
        total = 0
        for blocks in self.weights.values():
            rows = 0
            for param, cols in blocks:
                spec = next(p for p in self.signature.params if p.name == param)
                shape = spec.concrete(sizes)
                rows += shape[0] * (size_value(cols[1], sizes) if cols else shape[1])
            total += rows
        return total

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.signature.cell} target={self.target} dtype={self.dtype}>"
        )

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self.signature.outputs]

    def init_params(self, /, seed: int = 0, **sizes: int) -> dict[str, np.ndarray]:
        """Fresh params for the given sizes (every size symbol), in the kernel's dtype:
        uniform in ±1/sqrt(hidden) as PyTorch's RNNs, or zeros/ones as the spec says.
        `seed`: what numpy.random.default_rng takes (an int >= 0, None for fresh entropy, a
        SeedSequence, ...)."""
        try:  # (a bool is an int to NumPy, and surely a mistake here)
            if isinstance(seed, bool):
                raise TypeError("a bool")
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise KernelArgumentError(
                f"seed must be an int >= 0 (or None, or what numpy.random.default_rng takes), "
                f"got {seed!r} ({exc})"
            ) from None
        for name, value in sizes.items():
            fixed = self.fixed_sizes.get(name)
            if fixed is not None and value != fixed:
                raise KernelArgumentError(
                    f"size {name} was fixed at {fixed} when compiling; got {name}={value!r}"
                )
        return self.signature.init_params({**self.fixed_sizes, **sizes}, rng, self.dtype)

    def pack(self, params: Mapping[str, np.ndarray], /, **sizes: int) -> PackedParams:
        """Check and pack params once; pass the result in place of params on every call.

        `sizes` are needed only where the params alone do not give every size, as in a
        cell whose only param is `b: [hidden + input]`; a call with a dict of params finds
        them from its x and state."""
        if isinstance(params, PackedParams):
            return params
        if not isinstance(params, Mapping):
            raise KernelArgumentError(
                f"params must be a dict {{name: array}} (as kernel.init_params returns) or "
                f"kernel.pack(params); got {describe(params)}"
            )
        params = {name: as_numpy(f"param `{name}`", a) for name, a in params.items()}
        origins: dict[str, str] = {}
        sizes = packing_sizes(self.signature, self.fixed_sizes, params, sizes, origins)
        for name, a in params.items():
            check_float(f"param `{name}`", a)
        arrays = pack_weights(
            {k: np.asarray(v) for k, v in params.items()},
            sizes,
            self.weights,
            self.vector_params,
            self.dtype,
        )
        widths = {}
        for name in self.panels:
            widths[name] = arrays[name].shape[1]
            arrays[name] = to_panels(arrays[name])
        return PackedParams(arrays, sizes, self.dtype, id(self.weights), widths, origins)

    def _packed_for_call(self, params, x, state) -> PackedParams:
        """`params` packed for a call: as given where packed already; else with the sizes
        that the call's x and state give, where the params alone lack some."""
        if isinstance(params, PackedParams):
            return params
        if isinstance(params, Mapping) and not self._params_give_their_sizes:
            sizes = self.signature.bind(x, params, state, self.fixed_sizes)
            return self.pack(params, **{s: sizes[s] for s in sizes if s not in self.fixed_sizes})
        return self.pack(params)

    @functools.cached_property
    def _params_give_their_sizes(self) -> bool:
        return not self.signature.sizes_params_lack(self.fixed_sizes)

    def _bind_and_plan(self, x, state, packed: PackedParams):
        """A call's sizes (Signature.bind, which checks the shape of x and of the state
        against the packed params) and its plan (plan_call).

        Both follow from the shapes alone, given the packed params, the kernel's `threads`
        and `split` and the cores this process may use, so they are kept with the packed
        params under those, for NumPy arrays: a call with the shapes of an earlier one skips
        both (~5 us of the ~30 us a small call spends in Python)."""
        key = None
        if type(x) is np.ndarray and (
            state is None
            or (type(state) is dict and all(type(a) is np.ndarray for a in state.values()))
        ):
            state_shapes = None if state is None else tuple((n, a.shape) for n, a in state.items())
            key = (x.shape, state_shapes, self.threads, self.split, _threads.cpu_count())
            known = packed.calls.get(key)
            if known is not None:
                return known
        sizes = self.signature.bind(x, None, state, packed.sizes, packed.origins)
        T, B = x.shape[:2]
        units = None
        if self.columns and T > 0 and B > 0:
            units = size_value(next(iter(self.columns.values()))["extent"], sizes)
        plan = plan_call(
            T,
            B,
            self._work_per_row(sizes),
            self.threads,
            units,
            self.split,
            self.dtype.itemsize,
            chunks=self._launch_chunks is not None,
        )
        if key is not None:
            if len(packed.calls) >= _CALLS_KEPT:
                packed.calls.clear()
            packed.calls[key] = (sizes, plan)
        return sizes, plan

    def __call__(self, x, params, state: Mapping | None = None):
        if type(x) is not np.ndarray and is_torch(x):  # torch tensors in, torch tensors out
            y, final = self(as_numpy("x", x, self.dtype), params, state)
            return to_torch(y), to_torch(final)
        if state is not None:
            state = _state_as_numpy(as_dict(state, "state", "[B, n] array"), self.dtype)
        packed = params if type(params) is PackedParams else self._packed_for_call(params, x, state)
        if packed._owner != id(self.weights) or packed.dtype != self.dtype:
            raise KernelArgumentError(
                "these packed params were packed by another kernel; "
                "pack them with this kernel's .pack()"
            )
        check_float("x", x, self.dtype)
        sizes, plan = self._bind_and_plan(x, state, packed)
        x = np.ascontiguousarray(x)
        T, B = x.shape[:2]
        state_widths, output_widths = self._widths(sizes)
        # Arrays that threads write side by side start on ALIGN bytes; one thread's need not.
        if plan.threads == 1:
            cur = {name: np.zeros((B, n), self.dtype) for name, n in state_widths.items()}
            outputs = {name: np.empty((T, B, n), self.dtype) for name, n in output_widths.items()}
        else:
            # two allocations, not one: a returned state that shared y's memory would keep
            # all of y alive for as long as the caller keeps the state
            made = aligned_arrays([(B, n) for n in state_widths.values()], self.dtype)
            cur = dict(zip(state_widths, made))
            made = aligned_arrays([(T, B, n) for n in output_widths.values()], self.dtype)
            outputs = dict(zip(output_widths, made))
            for a in cur.values():
                a.fill(0)
        if state is not None:
            for name, a in cur.items():
                if name in state:
                    check_float(f"state `{name}`", state[name], self.dtype)
                    a[...] = state[name]  # a copy: the caller's array is not written
        self.last_plan = plan  # how the last call used the threads (benchmarks report it)
        # A split call that runs a BLAS product holds the BLAS to one thread from the prologue
        # on: a BLAS thread left spinning after the prologue's GEMM would take a core from our
        # threads (threads.py). Holding costs ~20 us a call (threadpoolctl), so a kernel whose
        # products are all lstmc_runtime.gemm's does not.
        hold = plan.threads > 1 and self.calls_blas
        try:
            with hold_blas() if hold else contextlib.nullcontext():
                if plan.mode == "units":
                    blocks = packed.unit_blocks(plan.threads, self.columns)
                    final = self._launch_columns(
                        x, cur, packed.arrays, blocks, outputs, sizes, plan.run, self.workspace()
                    )
                elif self._launch_chunks is not None and plan.mode in ("batch", "serial"):
                    (block,) = packed.unit_blocks(1, self.columns)
                    final = self._launch_chunks(
                        x, cur, packed.arrays, block, outputs, sizes, plan.run, self.workspace()
                    )
                else:
                    final = self._launch(
                        x, cur, packed.arrays, outputs, sizes, plan.run, self.workspace()
                    )
        except SystemError as e:
            # A Ctrl-C that arrives while Numba boxes a compiled function's returned array
            # (in its Python-level unpickling) comes out as "returned a result with an
            # exception set", the KeyboardInterrupt as its cause: raised as what it is, so
            # that `except KeyboardInterrupt` sees it.
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise e.__cause__ from None
            raise
        spaces = self.workspace()
        # Per-thread buffers this plan does not use: ("cols", k) of unit splits with more
        # threads, ("chunk", b0) of batch splits into other chunks.
        used = {("cols", k) for k in range(plan.threads)} if plan.mode == "units" else set()
        if plan.mode in ("batch", "serial"):  # a serial call of `_launch_chunks`: one chunk
            used = {("chunk", b0) for b0 in chunk_bounds(B, plan.threads)[:-1]}
        for key in [k for k in spaces if type(k) is tuple and k not in used]:
            del spaces[key]
        if sum(a.nbytes for a in spaces.values()) > WORKSPACE_KEEP_BYTES:
            spaces.clear()  # a rare huge call: do not hold its scratch memory for good
        y = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return y, final


class CpuKernel(Kernel):
    target = "cpu"
