"""The helper threads of split calls: each waits for its next job by spinning, then sleeping.

A split call hands a job to each helper, runs its own share, and waits for the helpers. With a
ThreadPoolExecutor the helpers slept on its queue between calls, and a hand-off cost a futex
wake-up of the helper, then GIL hand-overs between it and the caller: a no-op hand-off took
~100 us on this 2-vCPU VM (the unit split of lstm H=32, B=64 takes ~1.2 ms in all).

Here each helper is a thread of its own with a doorbell, a flag that the caller raises after
leaving the job in the helper's slot. After a job the helper signals that it is done and
watches its doorbell, without the GIL, for up to `LSTMC_SPIN_US` microseconds (default 200),
and only then sleeps on a condition, which the caller notifies when it finds it asleep. Calls
that follow each other closely (a model's layers, a benchmark's loop) so never wake a thread
from sleep: a no-op hand-off takes ~30-60 us instead of ~100 (most of what is left is the
GIL passing between the two threads, which the hand-shake of split calls avoids:
lstmc_runtime.threads._hand_off). The cost is a CPU busy for up to that long after each
split call; `LSTMC_SPIN_US=0` makes helpers sleep at once, as before.

A pool runs one hand-off at a time (its lock): a second Python thread's split call waits for
the first to finish. Each job is the caller's own closure, which never raises (the hand-off
catches its errors); the helpers are daemon threads, never joined.
"""

from __future__ import annotations

import math
import os
import threading
import time

from lstmc_runtime.placement import record_worker
from lstmc_runtime.sync import FLAG_STRIDE, new_flags, signal_and_wait, wait_for

__all__ = ["Pool", "spin_pauses"]

_DEFAULT_SPIN_US = 200.0
_SLEEP_CHECK_S = 0.1  # how often a sleeping helper looks at its doorbell anyway
_MAX_SPIN_US = 1e6  # a second: a larger value is surely a mistake
_pause_ns: float | None = None  # what one `pause` of sync.wait_for costs here, measured once


def spin_pauses() -> int:
    """How many pauses a helper spins for after a job: LSTMC_SPIN_US over the cost of one
    pause on this CPU (~12 ns on a recent Xeon, up to ~50 ns elsewhere), measured once."""
    global _pause_ns
    try:
        spin_us = float(os.environ.get("LSTMC_SPIN_US", _DEFAULT_SPIN_US))
    except ValueError:
        spin_us = _DEFAULT_SPIN_US
    if not math.isfinite(spin_us):  # "nan", "inf": the default, not an error in every call
        spin_us = _DEFAULT_SPIN_US
    if spin_us <= 0:
        return 0
    spin_us = min(spin_us, _MAX_SPIN_US)
    if _pause_ns is None:
        never = new_flags(1)
        wait_for(never, 0, 1, 100)  # compiled before timing
        start = time.perf_counter()
        wait_for(never, 0, 1, 20_000)
        _pause_ns = max((time.perf_counter() - start) / 20_000 * 1e9, 1.0)
    return int(spin_us * 1000 / _pause_ns)


class Worker:
    """One helper thread. `flags[0]` is its doorbell (jobs handed over so far),
    `flags[FLAG_STRIDE]` the jobs it has finished; each on a cache line of its own. `flags` is
    the worker's view of its pool's flags (`Pool.flags`), where a caller rings several
    workers in one compiled call (lstmc_runtime.sync.ring_and_wait)."""

    def __init__(self, name: str, spins: int, flags, doorbell: int = 0):
        self.flags = flags
        self.doorbell = doorbell  # where flags[0] lies in the pool's flags
        self.job = None
        self.rung = 0  # jobs handed over (the caller's count; the doorbell shows it)
        self.spins = spins
        self.stopping = False
        self.cond = threading.Condition()
        self.sleeping = False
        self.recorded = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def ring(self, job) -> None:
        """Hand `job` (a callable that never raises) to the thread."""
        self.post(job)
        self.ring_posted()

    def ring_posted(self) -> None:
        """Ring for the jobs posted so far and wake the thread if it sleeps; a no-op for a
        doorbell already rung (sync.ring_and_wait) but for the wake-up."""
        # A plain store: the thread reads `job` only after it takes the GIL, which orders it.
        self.flags[0] = self.rung
        self.wake()

    def post(self, job) -> None:
        """Leave `job` for the thread without ringing: the caller then rings, with
        `ring_posted` or without the GIL (sync.ring_and_wait)."""
        self.job = job
        self.rung += 1

    def wake(self) -> None:
        """Notify the thread if it sleeps (it then finds its doorbell rung)."""
        with self.cond:
            if self.sleeping:
                self.cond.notify()

    def wait(self, spins: int) -> None:
        """Until the last job handed over is done: spinning without the GIL for up to `spins`
        pauses (helpers finish within microseconds of the caller), then in short sleeps (a
        helper that lags, descheduled). Raises if the thread has died (it never should)."""
        if wait_for(self.flags, FLAG_STRIDE, self.rung, spins):
            return
        while not wait_for(self.flags, FLAG_STRIDE, self.rung, 0):
            if not self.thread.is_alive():
                raise RuntimeError(f"lstmc helper thread {self.thread.name} has died")
            self.wake()  # asleep with its job rung (a wake-up lost to a Ctrl-C): again
            time.sleep(50e-6)

    def stop(self) -> None:
        self.stopping = True
        self.ring(None)

    def _run(self) -> None:
        if self.stopping:  # its pool was ended while it started (Pool._end_started)
            return
        record_worker()  # its id, for lstmc_runtime.placement
        self.recorded.set()
        done = 0
        while True:
            if self.flags[0] <= done:
                with self.cond:
                    self.sleeping = True
                    while self.flags[0] <= done:
                        # With a timeout: a Ctrl-C in the caller's notify can leave a stale
                        # waiter that takes the next notify, and this thread asleep with a
                        # job rung (the call then waited for good). Ten checks a second.
                        self.cond.wait(_SLEEP_CHECK_S)
                    self.sleeping = False
            job, self.job = self.job, None
            if self.stopping:
                return
            try:
                if job is not None:  # a hand-off rings once per job, and waits for it
                    job()
            finally:
                job = None  # the call's arrays are not kept alive until the next job
                done += 1
                # Publish `done` and watch the doorbell in one call without the GIL, so that
                # the caller, which wakes on `done`, finds the GIL free.
                signal_and_wait(self.flags, FLAG_STRIDE, done, 0, done + 1, self.spins)


class Pool:
    """`size` helper threads, started and recorded (placement) before the pool is returned."""

    def __init__(self, size: int):
        spins = spin_pauses()
        self.size = size
        self.lock = threading.Lock()  # one hand-off at a time
        # worker i's doorbell and done count: slots 2i and 2i + 1 (times FLAG_STRIDE)
        self.flags = new_flags(max(1, 2 * size - 1))
        self.workers = [
            Worker(
                f"lstmc-{i}",
                spins,
                self.flags[2 * i * FLAG_STRIDE : (2 * i + 2) * FLAG_STRIDE],
                2 * i * FLAG_STRIDE,
            )
            for i in range(size)
        ]
        self.stopped = False
        try:
            for w in self.workers:
                w.thread.start()
            for w in self.workers:  # each id is recorded before a hand-off sets where they run
                w.recorded.wait()
        except BaseException:  # a Ctrl-C: no one will hold this pool, so end what started
            self._end_started()
            raise

    def _end_started(self) -> None:
        """Stop every worker (ringing one never started does no harm: one that an interrupt
        in Thread.start left starting finds `stopping` set before it records its id)."""
        self.stopped = True
        for w in self.workers:
            w.stop()
        for w in self.workers:  # each ends at once: its doorbell is rung with `stopping` set
            if w.thread.ident is not None:
                w.thread.join(timeout=1.0)

    @property
    def threads(self) -> list[threading.Thread]:
        return [w.thread for w in self.workers]

    def shutdown(self) -> None:
        """End the threads, after the hand-off under way if any (a caller that took this pool
        before then finds it stopped under its lock and takes the new one)."""
        with self.lock:
            self.stopped = True
            for w in self.workers:
                w.stop()
