"""Holding the BLAS to one thread while lstmc's own threads run a split call.

A BLAS thread left spinning after a product of the prologue would take a core from the
call's threads (lstmc_runtime.threads). threadpoolctl sets the limit; this module counts the
calls that overlap, so that the first one in limits and the last one out restores, and lets
go of threadpoolctl's control of OpenBLAS when it does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["hold_blas"]

_controller = None  # (len(sys.modules) when made, a threadpoolctl ThreadpoolController)

_hold_lock = threading.Lock()
_hold_count = 0
_hold = None  # the first holder's limiter, and whether it took control of OpenBLAS


@contextlib.contextmanager
def hold_blas():
    """Hold every BLAS to one thread while any caller is inside (no-op without threadpoolctl).

    Counted, not nested limits: threadpoolctl's limiter restores the count it saw when it
    started, so two overlapping calls from two threads, each with its own limiter, could
    leave the BLAS at one thread for good (the second saw the first's limit). Here the
    first holder limits and the last one out restores."""
    global _controller, _hold_count, _hold
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with _hold_lock:
        if _hold_count == 0:
            # A controller lists the BLAS libraries loaded when it was made (0.7 ms to make,
            # so it is kept); SciPy's OpenBLAS, the one Numba calls, loads with the first
            # compiled product. Made again whenever Python has imported modules since.
            if _controller is None or _controller[0] != len(sys.modules):
                _controller = (len(sys.modules), ThreadpoolController())
            limiter = _controller[1].limit(limits=1, user_api="blas")
            _hold = (limiter, _controls_openblas())
        _hold_count += 1
    try:
        yield
    finally:
        with _hold_lock:
            _hold_count -= 1
            if _hold_count == 0:
                _restore(*_hold)
                _hold = None


def _openblas_controller():
    """threadpoolctl's OpenBLASController where it lets one thread alone set OpenBLAS's
    threads (threadpoolctl 3.8 on, for an OpenBLAS on pthreads), else None."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:
        return None
    shared = getattr(OpenBLASController, "_SHARED_STATE", None)
    if shared is None or not hasattr(OpenBLASController, "clear_controlling_thread"):
        return None
    return OpenBLASController


def _controls_openblas() -> bool:
    """Whether this thread is the one threadpoolctl lets set OpenBLAS's threads."""
    controller = _openblas_controller()
    return controller is not None and (
        controller._SHARED_STATE.controlling_thread is threading.current_thread()
    )


def _restore(limiter, took_control: bool) -> None:
    """Restore what `limiter` limited, from whichever thread leaves last, and let go of
    OpenBLAS. threadpoolctl gives the first thread that limits a pthreads OpenBLAS control
    of it, and ignores every other thread's setting while that one lives (and a limiter not
    used in a `with` never lets go). So a restore from another thread than the first holder
    did nothing, leaving the BLAS at one thread for good, and the first holder kept control,
    so a user's own `threadpool_limits` on another thread did nothing either."""
    controller = _openblas_controller() if took_control else None
    if controller is not None:
        controller.clear_controlling_thread(force=True)  # the first holder's control
    limiter.restore_original_limits()
    if controller is not None:
        controller.clear_controlling_thread()  # this thread's, taken by the restore


def _after_fork_in_child() -> None:
    """A forked child has no other thread of the parent, so no holder of the BLAS: give the
    child's BLAS its threads back, which the holder's exit would have done in the parent."""
    global _hold_lock, _hold_count, _hold
    if _hold is not None:  # failing, it leaves the child's BLAS as it is: no error
        with contextlib.suppress(Exception):
            _restore(*_hold)
    _hold_lock, _hold_count, _hold = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
