"""A spin barrier for compiled code: the threads of a column-split time loop meet once a step.

When a call splits a step's columns across threads (see lstmc_runtime.threads), every thread
computes its own columns of the step's products and element-wise work, then must wait until
the others have written theirs: the next step's product reads the whole new state. Steps last
microseconds, so an OS primitive (futex wake-up ~5-50 us) would cost more than the step; the
threads instead spin on one flag each, with a `pause` between reads and, after a while,
`sched_yield` so that a thread whose partner was descheduled gives its core back.

Memory order: a thread stores its flag with release semantics after its last store of the
step, and readers load flags with acquire semantics, so a thread that sees every flag at
`step` also sees every other thread's state columns (C++11 release/acquire; on x86 these are
plain moves that the compiler may not reorder or hoist out of the spin loop).

`flags` is an int64 array of (n + 1) * FLAG_STRIDE slots: slot k * FLAG_STRIDE is thread k's
last finished step (a cache line of its own, so spinning readers do not slow the writer), and
slot n * FLAG_STRIDE is the abort flag, which the Python side sets when a thread raised so
that the others return instead of waiting forever.

The same flags carry a split call's hand-shake (`started`, `until_caller_waits` in the
compiled code of each part; `ring_and_wait`, `finish_and_wait` on the caller's side, see
lstmc_runtime.threads): slot k * FLAG_STRIDE + 1 says that part k has entered its compiled
code, slot n * FLAG_STRIDE + 1 that the caller waits for the helpers to finish. Its purpose is
the GIL: a thread that asks for it while another holds it sleeps on a futex, ~20-45 us to wake
on this VM. With the hand-shake, each thread takes the GIL only while the other is in compiled
code without it, so it is always free: the caller rings and waits (without the GIL) until the
helpers have started, and each helper, done, waits (without the GIL) until the caller is
waiting for it before going back to Python.
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FLAG_STRIDE",
    "barrier",
    "finish_and_wait",
    "new_flags",
    "ring_and_wait",
    "signal",
    "signal_and_wait",
    "started",
    "until_caller_waits",
    "wait_for",
]

FLAG_STRIDE = 16  # int64 slots: 128 bytes, two cache lines, between flags
_SPINS_BEFORE_YIELD = 2000  # tens of us of `pause`, then give the core back
# The first reads of a wait go without `pause` (~40 ns each on recent Xeons): a partner that
# finishes its step within a few hundred ns is seen at once. Two threads meeting at a barrier
# and nothing else: 200-310 -> 180-190 ns a step (a 2-vCPU Xeon VM).
_SPINS_BEFORE_PAUSE = 256
# How long a helper waits at its end for the caller (pauses of ~12 ns here: ~1 ms): longer
# only when the parts are uneven, after which it takes the GIL as it comes.
_END_SPINS = 80_000

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_sched_yield = types.ExternalFunction("sched_yield", types.int32())


def new_flags(threads: int) -> np.ndarray:
    """Zeroed flags for `threads` threads, on cache lines of their own (with a spare line on
    each side): a flag sharing a line with data that a thread writes every step would turn
    every spinning read into a transfer of that line away from the writer."""
    line = FLAG_STRIDE * 8  # bytes
    n = (threads + 1) * FLAG_STRIDE
    raw = np.zeros(n + 3 * FLAG_STRIDE, np.int64)
    start = FLAG_STRIDE + (-raw.ctypes.data % line) // 8  # a whole spare line before
    return raw[start : start + n]


def _slot_pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def _load_acquire(typingctx, flags, index):
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot_pointer(context, builder, sig, args), "acquire", 8)

    return types.int64(flags, index), codegen


@intrinsic
def _store_release(typingctx, flags, index, value):
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _slot_pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(flags, index, value), codegen


@intrinsic
def _cpu_relax(typingctx):
    """The x86 `pause` hint (an LLVM intrinsic: Numba's JIT has no inline-asm parser)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(
                cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), []
            )
        return context.get_dummy_value()

    return types.void(), codegen


# Without Numba's reference counting (`_nrt=False`), like lstmc_runtime.gemm: these run
# every step or every call, and each call paid an atomic increment and decrement of each
# array's count (nothing here allocates or keeps an array).
@njit(cache=True, nogil=True, _nrt=False)
def barrier(flags, k, threads, step):
    """Publish that thread k finished `step` (1-based), then wait until every thread has.

    Returns False if the call was aborted (another thread raised): the caller returns at once.
    """
    _store_release(flags, k * FLAG_STRIDE, step)
    abort = threads * FLAG_STRIDE
    for i in range(threads):
        spins = 0
        while _load_acquire(flags, i * FLAG_STRIDE) < step:
            if _load_acquire(flags, abort) != 0:
                return False
            spins += 1
            if spins < _SPINS_BEFORE_PAUSE:
                continue
            if spins < _SPINS_BEFORE_YIELD:
                _cpu_relax()
            else:
                _sched_yield()
    return True


@njit(cache=True, nogil=True, _nrt=False)
def signal(flags, index, value):
    """flags[index] = value, published with release semantics (what `wait_for` reads)."""
    _store_release(flags, index, value)


@njit(cache=True, nogil=True, _nrt=False)
def wait_for(flags, index, value, max_spins):
    """Spin, without the GIL, until flags[index] >= value: True; or False after `max_spins`
    pauses (the caller then blocks some other way). The end of a split call waits so for its
    helpers, which finish within microseconds of the caller: sleeping on a lock instead
    cost a futex wake-up, ~45 us on this VM, every call."""
    for _ in range(max_spins):
        if _load_acquire(flags, index) >= value:
            return True
        _cpu_relax()
    return _load_acquire(flags, index) >= value


@njit(cache=True, nogil=True, _nrt=False)
def signal_and_wait(flags, index, value, wait_index, wait_value, max_spins):
    """`signal(flags, index, value)`, then `wait_for(flags, wait_index, wait_value,
    max_spins)`, in one call without the GIL: a helper thread publishes that its job is done
    and watches for the next one without taking the GIL in between, so the caller, which
    wakes on the first flag, finds the GIL free (lstmc_runtime.workers)."""
    _store_release(flags, index, value)
    return wait_for(flags, wait_index, wait_value, max_spins)


@njit(cache=True, nogil=True, _nrt=False)
def started(flags, k):
    """Part k > 0 of a split call has entered its compiled code (and let go of the GIL)."""
    if k > 0:
        _store_release(flags, k * FLAG_STRIDE + 1, 1)


@njit(cache=True, nogil=True, _nrt=False)
def until_caller_waits(flags, k):
    """Part k > 0, done: wait until the caller waits for the helpers (`finish_and_wait`), so
    that the GIL is free when this thread goes back to Python; at most _END_SPINS pauses."""
    if k > 0:
        waiting = (flags.size // FLAG_STRIDE - 1) * FLAG_STRIDE + 1
        wait_for(flags, waiting, 1, _END_SPINS)


@njit(cache=True, nogil=True, _nrt=False)
def ring_and_wait(doors, slots, values, flags, max_spins):
    """The caller's start of a hand-shake: doors[slots[i]] = values[i] (the helpers' doorbells,
    lstmc_runtime.workers), then wait until parts 1..len(slots) have `started`: True, or False
    after `max_spins` pauses. Both without the GIL, which the helpers then take at once."""
    for i in range(slots.size):
        _store_release(doors, slots[i], values[i])
    for i in range(slots.size):
        if not wait_for(flags, (i + 1) * FLAG_STRIDE + 1, 1, max_spins):
            return False
    return True


@njit(cache=True, nogil=True, _nrt=False)
def finish_and_wait(flags, doors, slots, values, max_spins):
    """The caller's end of a hand-shake: say that it waits (what `until_caller_waits` watches),
    then wait until doors[slots[i]] >= values[i] for every i (the helpers' done counts): True,
    or False after `max_spins` pauses for one of them."""
    _store_release(flags, (flags.size // FLAG_STRIDE - 1) * FLAG_STRIDE + 1, 1)
    for i in range(slots.size):
        if not wait_for(doors, slots[i], values[i], max_spins):
            return False
    return True
