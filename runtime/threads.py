"""How a call uses the cores: the BLAS's threads, or chunks of the batch on threads.

Rows of a batch never interact, so the CPU kernel can run the whole time loop for chunks of
rows on separate threads (its compiled functions release the GIL), with the BLAS held to one
thread each so the cores are not oversubscribed. By default it does not (see plan_chunks): the
per-step products gain more from the BLAS's own threads. Small steps run on one BLAS thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

# Below this many multiply-adds per call, threads cost more than they save.
_MIN_WORK = 2_000_000
_MIN_ROWS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_controller = None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _blas_limit():
    """A context manager holding every BLAS to one thread (no-op without threadpoolctl)."""
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        import contextlib

        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def serial(rows, B: int) -> None:
    rows(0, B)


# A step's products smaller than this (multiply-adds) run on one BLAS thread: OpenBLAS would
# split them across threads that then wait for each other every step, which costs more than
# it saves, and collapses when another process keeps a core busy.
_SMALL_STEP = 4_000_000


def serial_one_blas_thread(rows, B: int) -> None:
    with _blas_limit():
        rows(0, B)


def plan_chunks(T: int, B: int, work_per_row: int, threads: int | None):
    """Return the `run_chunks(rows, B)` function for one call.

    `threads=None` (auto) splits the batch only when a step's products are small. Measured on
    a 2-core machine: OpenBLAS's per-step products stream the whole weight matrix whatever
    the number of rows, so for large weights two chunks cost each thread nearly what the
    whole batch costs one, while the BLAS's own threads split the columns (H=256, B=16:
    17 ms unsplit against 31 ms in two chunks; H=512, B=64: 210 ms against 249 ms). Small
    weights stay in each core's cache, and there the split wins (H=128, B=16: 3.0 ms
    against 6.1 ms). `threads=N` asks for N chunks whatever the sizes.
    """
    step = B * work_per_row
    if threads is None:
        small = step < _SMALL_STEP and T * step >= _MIN_WORK
        threads = cpu_count() if small else 1
    n = max(1, min(threads, B // _MIN_ROWS))
    if n == 1:
        if T * step >= _MIN_WORK // 2 and step < _SMALL_STEP:
            return serial_one_blas_thread  # holding the BLAS costs ~12 us: only when it pays
        return serial

    def run_chunks(rows, B: int) -> None:
        global _pool
        with _pool_lock:
            if _pool is None or _pool._max_workers < n:
                _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lstmc")
        bounds = [B * i // n for i in range(n + 1)]
        with _blas_limit():
            futures = [_pool.submit(rows, bounds[i], bounds[i + 1]) for i in range(n - 1)]
            rows(bounds[-2], bounds[-1])  # the calling thread takes the last chunk
            for f in futures:
                f.result()

    return run_chunks
