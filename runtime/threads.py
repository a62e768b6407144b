"""How a call uses the cores: one thread, chunks of the batch, or the step's units.

Three ways, chosen per call by `plan_call` from the sizes:
- serial: one thread runs the prologue and the time loop (every product is lstmc_runtime.gemm,
  on the calling thread). A kernel with a unit split runs it as one chunk of the batch split
  below, through its `_cols`: the one compiled function that its split calls run too, so a
  process compiles one time loop, not two (cold, a one-thread call then a split one: lstm
  4.2 -> 3.0 s, peephole_lstm 4.2 -> 2.8 s; the one-thread call alone: lstm 2.5 -> 2.8-3.0 s,
  `_cols` compiling a little longer than `_prologue` and `_rows`), and a small call makes one
  compiled call, not two (1-3 us less of 17-35 us at T=1);
- batch: rows of a batch never interact, so chunks of rows run on separate threads (the
  compiled functions release the GIL): one hand-off to each pool thread a call. A kernel
  with a unit split runs its `_cols` on each chunk for every unit, the input projection a
  few steps at a time (the module's `_launch_chunks`); others make their rows' hoisted work
  (the input projection, ...) for all steps, then run their time loop (`_rows`). A hoisted
  product whose weight is larger than L2 is made first instead, for all rows of ranges of
  steps on the threads (the module's `_launch` decides);
- units: each thread owns a range of the step's units and its blocks of the input and
  recurrent weights, and the threads meet at a spin barrier after each step (cpu_columns.py
  in the compiler, lstmc_runtime.sync). Each core streams only its share of the weights, and
  the element-wise work is split too. Kernels whose step allows it (one element-wise group
  after the products) have `launch_columns`; the others fall back to serial or batch.
  Such kernels run large steps this way on one thread too ("units x1"): `_cols` makes the
  input projection a few steps at a time, where the serial prologue makes it for all steps
  up front and the time loop reads it back from memory (lstm H=128, B=64, one thread:
  20.1 ms against 22.4).
Between the two splits, the batch split is taken where the step's weights are small
(_BATCH_MAX_WEIGHT_BYTES) and there are rows for two chunks, the unit split where the weights
are larger (each core then streams only its half). The helpers are lstmc_runtime.workers'
threads, which spin a while after each call before they sleep.
A split call of a kernel that calls the BLAS holds every BLAS to one thread
(lstmc_runtime.blas_hold, in Kernel.__call__), so that no BLAS thread competes with ours.
"""

from __future__ import annotations

import os
import threading

import numpy as np
from lstmc_runtime.layout import CHUNK_MAX_WEIGHT_BYTES, L2_BYTES
from lstmc_runtime.packing import unit_bounds
from lstmc_runtime.placement import forget_workers, keep_off_caller
from lstmc_runtime.sync import FLAG_STRIDE, finish_and_wait, new_flags, ring_and_wait
from lstmc_runtime.workers import Pool

# Below this many multiply-adds per call, threads cost more than they save: waking a pool thread
# took ~0.1 ms on this VM (a ThreadPoolExecutor's round trip then: 98 us; lstmc_runtime.workers'
# helpers, awake after a recent call, answer in ~30 us; a batch split made two such trips, the
# hoisted work then the rows, when these figures were taken). Measured on two vCPUs, split against
# one thread: 10-20M multiply-adds lose (gru H=32, B=16: 0.50 ms against 0.37; gru_cho H=64, B=8:
# 0.55 against 0.44; lstm H=32, B=8, 6.5M: 0.43 against 0.25), 26M ties, 40M and up win
# (layernorm_lstm H=64, B=16, 52M: 1.19 against 1.64; lstm H=64, B=16 by units: 0.89 against 1.13).
# It was 2M before, set when no figure below 100M had been measured. Not measured again since the
# batch split makes one trip.
_MIN_WORK = 24_000_000
# Kernels whose split calls run `_cols`, which takes part in the hand-shake of `_hand_off`
# (no thread waits for the GIL), split from this many: a one-step call by units took 61 us
# against 113 without it. Back to back, T=100, split against one thread: lstm H=32, B=8
# (6.6M) 1.09x, H=64, B=4 (13M) 1.10x, H=128, B=1 (13M) 1.17x, H=32, B=16 (13M) 1.29x; gru
# H=32, B=16 (9.8M) 1.32x, H=64, B=8 (20M) 1.28x; lstm H=64 and H=96, B=1 (3-7M, no unit
# split: a step under _UNITS_MIN_STEP) 0.98-1.00x. After 2 ms of idle (the helpers asleep):
# lstm H=128, B=1 1.07x, H=32, B=16 0.94-1.07x.
_MIN_WORK_COLS = 8_000_000
_MIN_ROWS = 4

_pool: Pool | None = None
_pool_lock = threading.Lock()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def serial(rows, B: int, handshake: bool = False) -> None:
    if handshake:  # part 0 alone: nothing reads or writes the flags (run_units' n == 1 too)
        rows(0, B, _ONE_THREAD_FLAGS, 0)
    else:
        rows(0, B)


# When the unit split pays (measured on a 2-core VM, lstm and gru, T=100, float32, with the
# step's products in lstmc_runtime.gemm; see benchmarks/RESULTS.md). Each thread multiplies by
# its own half of the weights and does its half of the element-wise work, and the threads meet
# once a step (0.1 us when both cores are free). That beat the batch split of the time, a
# product a step over a chunk's rows through `_rows`, in every size measured with at least
# _UNITS_MIN_STEP multiply-adds a step (lstm H=32, B=64: 1.25 ms against 2.0; H=128, B=16:
# 3.3 against 3.7; H=256, B=1: 1.3 against 2.4 serial); the batch split through `_cols`
# now beats it where the weights are small (_BATCH_MAX_WEIGHT_BYTES, below). Below it,
# one thread wins (H=32, B=1: 0.09 ms against 0.19 split; H=64, B=1: 0.21 against 0.30), and
# H=64, B=4 (131K) is a tie. Each thread gets at least one SIMD vector of units. A call of one
# step too (a decode step): there each thread reads half the weights once, where the batch
# split reads them all on both cores. T=1, two threads, by units against the batch split
# (or one thread) chosen before: lstm H=256, B=64 0.49 ms against 0.80; H=512, B=16 0.66
# against 0.89, B=64 2.25 against 2.97; gru H=512, B=64 1.58 against 2.66.
_UNITS_MIN_STEP = 100_000
_UNITS_MIN_EXTENT = 16
# On one thread the unit split pays only through _cols' chunked input projection, which
# layout.chunk_steps makes while the input weight is at most CHUNK_MAX_WEIGHT_BYTES: so
# "units x1" is used while all the step's weights together (work_per_row elements) are at most
# twice that. lstm H=512 (8 MB), against serial: 1.03x (B=16), 1.03x (B=64), 0.99x (B=1);
# gru H=512, B=64 1.03x.
_UNITS_ONE_THREAD_MAX_BYTES = 2 * CHUNK_MAX_WEIGHT_BYTES
# Where the step's weights are this small, the batch split beats the unit split: each thread
# reads all the weights, which its L2 holds, and the threads never wait for each other, where
# the unit split meets at a barrier every step and reads the other thread's half of h from
# its cache. Each chunk of rows runs the module's `_cols` for every unit (`_launch_chunks`),
# at least _MIN_ROWS rows a chunk. Two threads, T=100, float32, batch time over unit time:
# lstm 0.78-0.87 at H=32 (32 KB of weights, B=16-64), 0.87 at H=96 (288 KB), 0.94-0.99 at
# H=128 (512 KB), 1.04 at H=192 (1.1 MB), 1.00-1.05 at H=256, 1.06-1.14 at H=512; gru
# 0.89-0.97 at H=96-128 (216-384 KB), 1.00 at H=192 (864 KB), 0.99-1.09 at H=256. At most
# half of L2 on CPUs with less (each thread reads them all every step).
_BATCH_MAX_WEIGHT_BYTES = 640 * 1024
_units_lock = threading.Lock()
_unit_flags: dict[int, np.ndarray] = {}  # run_units' flags per thread count, under _units_lock
_ONE_THREAD_FLAGS = new_flags(1)


class Plan:
    """How one call runs: `mode` is "serial", "batch" or "units", on `threads` threads; `run`
    is what the module's glue calls (run_chunks(rows, B, handshake=False) or run_threads(cols,
    n))."""

    def __init__(self, mode: str, threads: int, run):
        self.mode, self.threads, self.run = mode, threads, run

    def __repr__(self) -> str:
        return f"<Plan {self.mode} x{self.threads}>"


def plan_call(
    T: int,
    B: int,
    work_per_row: int,
    threads: int | None,
    units: int | None,
    split: str | None = None,
    itemsize: int = 4,
    chunks: bool = False,
) -> Plan:
    """Choose how a call uses the cores.

    `units`: the length of the step's splittable group, or None when the kernel has no unit
    split. `threads`: None (auto), or the number of threads to use; a kernel with a unit split
    then splits units (else batch rows), whatever the sizes. `split`: None (auto), "batch" or
    "units" to force one way. `itemsize`: bytes of the kernel's float type (how much of the
    cache the weights take). `chunks`: whether the kernel's batch split runs its unit-split
    function on each chunk of rows (the module's `_launch_chunks`), which beats the unit split
    where the weights are small.
    """
    n = cpu_count() if threads is None else max(1, threads)
    can_units = units is not None and split != "batch"
    if can_units and (split == "units" or (threads is not None and n > 1)):
        return Plan("units", max(1, min(n, units)), run_units)
    step = B * work_per_row
    if threads is None and T * step < (_MIN_WORK if units is None else _MIN_WORK_COLS):
        n = 1  # too little work to pay for waking another thread
    small = work_per_row * itemsize <= min(_BATCH_MAX_WEIGHT_BYTES, L2_BYTES // 2)
    by_rows = chunks and small and n > 1 and B >= 2 * _MIN_ROWS
    if can_units and units >= _UNITS_MIN_EXTENT * n and step >= _UNITS_MIN_STEP:
        if n > 1 and not by_rows and (B == 1 or _cuts_on_cache_lines(units, n, itemsize)):
            return Plan("units", n, run_units)
        # (one thread gains only through _cols' input projection made a few steps at a
        # time, which one step doesn't have)
        if n == 1 and T >= 2 and work_per_row * itemsize <= _UNITS_ONE_THREAD_MAX_BYTES:
            return Plan("units", 1, run_units)
    run = plan_chunks(T, B, work_per_row, n)
    if run is serial:
        return Plan("serial", 1, run)
    return Plan("batch", run.chunks, run)


def _cuts_on_cache_lines(units: int, threads: int, itemsize: int) -> bool:
    """Whether the unit split's cuts fall on 64-byte cache lines. Where they do not, two
    threads write one line of every batch row's state and output each step: gru H=48, B=16
    (cuts at 24 units, 96 bytes) took 1.34-1.41 ms split by units against 0.57 on one thread;
    H=32 (cuts at 64 bytes) still gains from the split (B=64: 1.23 ms against 1.70)."""
    line = max(1, 64 // itemsize)
    return all(cut % line == 0 for cut in unit_bounds(units, threads, itemsize)[1:-1])


def _get_pool(workers: int) -> Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.size < workers:
            old, _pool = _pool, None
            if old is not None:  # its threads end once their work is done: forget their ids,
                old.shutdown()  # which the system may give to other threads
            forget_workers()
            try:
                _pool = Pool(workers)  # its threads' ids recorded before any hand-off
            except BaseException:  # (a Ctrl-C) the pool ended its threads: forget their ids
                forget_workers()
                raise
        return _pool


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's pool threads, and a lock some other thread of
    the parent held stays held in the child: start again from nothing (placement forgets
    the threads' ids in its own handler)."""
    global _pool, _pool_lock, _units_lock
    _pool = None
    _pool_lock, _units_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# How long the end of a split call spins for its helpers (pauses of ~12 ns here: ~1 ms)
# before it waits in short sleeps instead.
_WAIT_SPINS = 80_000


# How long a hand-shake's caller waits for awake helpers to start (~0.5 ms): they start
# within microseconds unless descheduled.
_START_SPINS = 40_000


def _hand_off(pool: Pool, helpers: list, own, on_error=None, flags=None) -> None:
    """Run each of `helpers` on a pool thread and `own` on this one, wait for all, and raise
    the first error (this thread's first). `on_error()` runs as soon as any of them raises.

    The helpers are rung (lstmc_runtime.workers) and this thread then spins on their done
    flags without the GIL for up to _WAIT_SPINS pauses: the helpers of a split call finish
    within microseconds of this thread, and sleeping instead cost a futex wake-up (~45 us
    here) every call. One hand-off at a time holds the pool.

    `flags` (lstmc_runtime.sync): the helpers, parts 1, 2, ... of the call, run compiled code
    that takes part in the hand-shake (sync.started, sync.until_caller_waits), so that no
    thread ever waits for the GIL: awake helpers are rung, and started, without the GIL, and
    the caller says it waits before they go back to Python (a one-step call, lstm H=32,
    B=64, split by rows: ~100 us before). Helpers that sleep are woken as without it."""
    errors: list = [None] * len(helpers)

    def task(i: int, fn) -> None:
        try:
            fn()
        except BaseException as e:
            errors[i] = e
            if on_error is not None:
                on_error()

    # `with`, not acquire() then try: an interrupt (Ctrl-C) between the two left the lock
    # held, and every later split call waiting for it.
    while True:  # a pool replaced by a bigger one since the caller took it is stopped
        with pool.lock:
            if not pool.stopped:
                jobs = [lambda i=i, fn=fn: task(i, fn) for i, fn in enumerate(helpers)]
                error = _hand_off_held(pool, jobs, own, on_error, flags)
                break
        pool = _get_pool(len(helpers))
    error = error or next((e for e in errors if e is not None), None)
    if error is not None:
        raise error


def _hand_off_held(pool: Pool, jobs: list, own, on_error, flags):
    """`_hand_off`'s work once it holds the pool: ring a helper for each of `jobs` (callables
    that never raise), run `own`, wait for all. Returns `own`'s error, if any."""
    rung = []
    try:
        keep_off_caller(len(jobs))  # so that the helpers wake on other CPUs than this one
        shake = flags is not None and not any(w.sleeping for w in pool.workers[: len(jobs)])
        for worker, job in zip(pool.workers, jobs):
            worker.post(job)
            rung.append(worker)
        doors = _doorbells(rung)
        if not (shake and ring_and_wait(pool.flags, *doors, flags, _START_SPINS)):
            for w in rung:  # asleep, fallen asleep meanwhile, or descheduled
                w.ring_posted()
    except BaseException:  # the helpers already rung might wait for this thread forever
        if on_error is not None:
            on_error()
        for w in rung:  # posted but perhaps not rung, or rung but not woken: both now
            w.ring_posted()
        _wait_all(rung, pool, flags)
        raise
    error = None
    try:
        own()
    except BaseException as e:
        error = e
        if on_error is not None:
            on_error()
    _wait_all(rung, pool, flags, doors)
    return error


def _doorbells(workers: list):
    """Where `workers` keep their doorbells in their pool's flags, and their jobs rung so far."""
    slots = np.array([w.doorbell for w in workers], np.int64)
    return slots, np.array([w.rung for w in workers], np.int64)


def _wait_all(workers: list, pool=None, flags=None, doors=None) -> None:
    """Wait until every one of `workers` has done its job, even through an interrupt (Ctrl-C):
    the pool is handed to the next call only once no job of this one is left running or
    queued. The interrupt is raised after. With a hand-shake's `flags`, first say that this
    thread waits (sync.finish_and_wait), which the helpers wait for before taking the GIL;
    `doors`: `_doorbells(workers)`, if the caller has them."""
    interrupt = None
    if flags is not None and workers:
        slots, values = _doorbells(workers) if doors is None else doors
        try:
            if finish_and_wait(flags, pool.flags, slots + FLAG_STRIDE, values, _WAIT_SPINS):
                return
        except BaseException as e:  # an interrupt: still wait for them below, then raise it
            interrupt = e
    for w in workers:
        while True:
            try:
                w.wait(_WAIT_SPINS)
                break
            except RuntimeError:  # the thread died: nothing left to wait for
                raise
            except BaseException as e:
                interrupt = interrupt or e
    if interrupt is not None:
        raise interrupt


def run_units(cols, n: int) -> None:
    """Run `cols(k, n, flags)` for k < n on n threads at once (the caller is thread 0), its
    compiled code taking part in the hand-shake through `flags` (`_hand_off`).

    The threads wait for each other every step, so all n must run at the same time: one call
    at a time holds the unit split (a second caller waits for the first to finish), and
    each helper has a pool thread of its own. A thread
    that raises sets the abort flag, which ends the others' waits; the first error is raised.
    """
    if n == 1:  # no other thread to wait for or abort: nothing writes the flags
        cols(0, 1, _ONE_THREAD_FLAGS)
        return
    with _units_lock:
        # The flags of the last call with n threads, zeroed: no thread of that call reads them
        # any more (_hand_off returns once every helper is done); a new array cost ~1.4 us.
        flags = _unit_flags.get(n)
        if flags is None:
            flags = _unit_flags[n] = new_flags(n)
        flags.fill(0)

        def abort() -> None:
            flags[n * FLAG_STRIDE] = 1

        helpers = [lambda k=k: cols(k, n, flags) for k in range(1, n)]
        _hand_off(_get_pool(n - 1), helpers, lambda: cols(0, n, flags), abort, flags)


def chunk_bounds(B: int, n: int) -> list[int]:
    """The rows where the batch split's n chunks start, and B: chunk k is rows
    [bounds[k], bounds[k + 1])."""
    return [B * i // n for i in range(n + 1)]


def plan_chunks(T: int, B: int, work_per_row: int, threads: int | None):
    """Return the `run_chunks(rows, B, handshake=False)` function for one call.

    `threads=None` (auto) splits the batch into chunks of at least _MIN_ROWS rows once the
    call has _MIN_WORK multiply-adds; `threads=N` asks for N chunks whatever the work, each of
    at least _MIN_ROWS rows (a batch of 7 runs on one thread). With the step's products in
    lstmc_runtime.gemm (no BLAS in the time loop) two chunks beat one
    thread at every size measured once the BLAS is held to one thread for the whole call
    (Kernel.__call__ does so for split plans of kernels that call it): layernorm_lstm H=256,
    B=64: 60.6 ms against 79.6 serial; H=128, B=16: 4.7 against 6.0. Left with two threads,
    OpenBLAS's second thread kept spinning after the prologue's GEMM (a BLAS call then) and
    took a core from the chunks (H=256, B=64: 66.6 ms).
    """
    step = B * work_per_row
    if threads is None:
        threads = cpu_count() if T * step >= _MIN_WORK else 1
    n = max(1, min(threads, B // _MIN_ROWS))
    if n == 1:
        return serial

    def run_chunks(rows, B: int, handshake: bool = False) -> None:
        """rows(b0, b1) for each chunk; with `handshake`, rows(b0, b1, flags, part), whose
        compiled code takes part in the hand-shake (`_hand_off`) as `part` (0: the caller)."""
        bounds = chunk_bounds(B, n)
        if not handshake:
            helpers = [lambda i=i: rows(bounds[i], bounds[i + 1]) for i in range(n - 1)]
            # the calling thread takes the last chunk
            _hand_off(_get_pool(n), helpers, lambda: rows(bounds[-2], bounds[-1]))
            return
        flags = new_flags(n)
        helpers = [lambda i=i: rows(bounds[i], bounds[i + 1], flags, i + 1) for i in range(n - 1)]
        _hand_off(
            _get_pool(n), helpers, lambda: rows(bounds[-2], bounds[-1], flags, 0), None, flags
        )

    run_chunks.chunks = n  # chunk k is rows chunk_bounds(B, n)[k : k + 2]
    return run_chunks
