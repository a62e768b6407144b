"""Where a split call's helper threads wake up: on other CPUs than the calling thread's.

A split call hands work to pool threads that sleep between calls, then computes its own share
and, in the unit split, waits at a spin barrier every step. Linux wakes a sleeping thread on a
CPU of its choosing, often the waker's own (wake-affine) when the other CPUs have gone idle,
and moves it to an idle CPU only when load balancing runs, some milliseconds later. Until
then helper and caller share one CPU, and a barrier hands it back and forth each step.
Measured on a 2-vCPU VM, lstm H=32, B=64, T=100, split by units: 1.4-1.5 ms back to back,
medians of 6.8-7.5 ms after 10-100 ms of idle. Calls after 100 ms, one by one: those in which
`sched_getcpu` showed helper and caller on one CPU took 7-10 ms, the others 2.8-3.2 ms. With
this module: medians of 1.8-4.8 ms after 10-100 ms (benchmarks/call_context.py).

So before each hand-off, every pool thread may run on the caller's allowed CPUs except the one
the caller is on: a helper woken then starts elsewhere. The masks are written again only when
the caller's CPU or allowed set changes (one `sched_getcpu` a hand-off otherwise), and left
whole when there are more helpers than other CPUs (they would crowd onto them). The
pool's threads are lstmc's own; the caller's affinity is never changed. Where the system
cannot do this (not Linux, no `sched_getcpu`) or refuses (a sandbox), nothing is done. Two
Python threads making split calls at once from different CPUs rewrite the masks in turn: a
helper may then start on the other caller's CPU, which costs time, never results.
"""

from __future__ import annotations

import ctypes
import os
import threading

__all__ = ["forget_workers", "keep_off_caller", "record_worker", "worker_ids"]

_lock = threading.Lock()
_workers: list[int] = []  # native ids of the pool threads (every pool's)
_applied: frozenset | None = None  # the mask the pool threads have now
_refused = False  # the system refused a mask once: leave placement to it from then on


def _find_sched_getcpu():
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn


_sched_getcpu = _find_sched_getcpu()


def record_worker() -> None:
    """Pool initializer: remember this thread's native id, so its mask can be set."""
    global _applied
    with _lock:
        _workers.append(threading.get_native_id())
        _applied = None  # the new thread has the creator's mask


def forget_workers() -> None:
    """Forget every recorded thread (a pool replaced: the system may give its threads' ids
    to other threads)."""
    global _applied
    with _lock:
        _workers.clear()
        _applied = None


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads, and a lock another thread of the
    parent held stays held in the child."""
    global _lock, _applied
    _lock = threading.Lock()
    _workers.clear()
    _applied = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def worker_ids() -> list[int]:
    with _lock:
        return list(_workers)


def keep_off_caller(helpers: int) -> None:
    """Let the pool threads run anywhere the calling thread may, but on the CPU it is on now
    (see the module docstring); `helpers` is how many of them this hand-off wakes."""
    global _applied, _refused
    if _sched_getcpu is None or _refused:
        return
    cpu = _sched_getcpu()
    if cpu < 0:
        return
    allowed = frozenset(os.sched_getaffinity(0))
    others = allowed - {cpu}
    mask = others if helpers <= len(others) else allowed
    if mask == _applied:
        return
    with _lock:
        for tid in list(_workers):
            try:
                os.sched_setaffinity(tid, mask)
            except ProcessLookupError:  # a thread that has ended
                _workers.remove(tid)
            except PermissionError:  # not allowed here (a sandbox): leave it to the system
                _refused = True
                return
            except OSError:  # e.g. a CPU taken offline since: try again next call
                return
        _applied = mask
