"""A Ctrl-C (KeyboardInterrupt) at an unlucky moment of a split call leaves the threads
usable: no lock held for good, no helper asleep with its job rung, and the interrupt raised
as a KeyboardInterrupt. Each case runs in a fresh process (it rearranges the pool's
threads), which a timeout ends if the case hangs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lstmc

SETUP = """\
import os, sys, threading, time
import numpy as np, lstmc
from lstmc_runtime import threads as th

k = lstmc.compile(lstmc.builtin("lstm"))
p = k.pack(k.init_params(input=16, hidden=64))
x = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)
k.threads, k.split = 2, MODE
k(x, p)
"""


def _run_case(mode: str, body: str, env_extra: dict | None = None) -> str:
    code = SETUP.replace("MODE", repr(mode)) + textwrap.dedent(body)
    env = {**os.environ, **(env_extra or {})}
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("mode", ["batch", "units"])
def test_an_interrupt_just_after_the_pool_lock_is_taken_releases_it(mode):
    """The interrupt raised at the first line run while the pool's lock is held (with
    sys.settrace, where CPython would raise a pending Ctrl-C): the lock is free after, and the
    next split call runs."""
    out = _run_case(
        mode,
        """\
        fired = [False]
        def tracer(frame, event, arg):
            if frame.f_code is not th._hand_off.__code__:
                return None
            def local(frame, event, arg):
                if event == "line" and not fired[0] and th._pool.lock.locked():
                    fired[0] = True
                    raise KeyboardInterrupt
                return local
            return local
        sys.settrace(tracer)
        try:
            k(x, p)
        except KeyboardInterrupt:
            print("interrupted")
        sys.settrace(None)
        assert fired[0]
        print("lock held:", th._pool.lock.locked())
        t = threading.Thread(target=lambda: k(x, p), daemon=True)
        t.start()
        t.join(10)
        print("next call blocked:", t.is_alive())
        """,
    )
    assert "interrupted" in out and "lock held: False" in out and "blocked: False" in out, out


@pytest.mark.parametrize("mode", ["batch", "units"])
def test_a_wake_up_lost_to_an_interrupt_does_not_hang_the_next_call(mode):
    """A Ctrl-C inside Condition.notify (Worker.wake), right after it released the helper's
    waiter, leaves a stale waiter that takes the next notify: the helper must still find its
    job rung (it checks its doorbell while asleep), and the next call finish."""
    out = _run_case(
        mode,
        """\
        time.sleep(0.2)
        w0 = th._pool.workers[0]
        assert w0.sleeping
        fire = [True]
        class InterruptedNotify(threading.Condition):
            def notify(self, n=1):
                if fire[0]:
                    fire[0] = False
                    self._waiters[0].release()  # Condition.notify's first statements
                    raise KeyboardInterrupt      # then a pending Ctrl-C
                return super().notify(n)
        w0.cond.__class__ = InterruptedNotify
        ring_posted, rings = w0.ring_posted, [0]
        def delayed_ring_posted():  # the woken helper runs first, before the re-ring
            rings[0] += 1
            if rings[0] == 2:
                time.sleep(0.01)
            ring_posted()
        w0.ring_posted = delayed_ring_posted
        try:
            k(x, p)
        except KeyboardInterrupt:
            print("interrupted")
        time.sleep(0.2)
        t = threading.Thread(target=lambda: k(x, p), daemon=True)
        t.start()
        t.join(10)
        print("next call blocked:", t.is_alive())
        """,
        {"LSTMC_SPIN_US": "50000"},  # the woken helper is awake when the caller re-rings
    )
    assert "interrupted" in out and "next call blocked: False" in out, out


def test_an_interrupt_while_numba_boxes_a_result_is_raised_as_keyboard_interrupt(monkeypatch):
    """Numba reports a Ctrl-C that arrives while it boxes a compiled function's returned
    array as a SystemError caused by the KeyboardInterrupt; the kernel raises the cause."""
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    params = kernel.pack(kernel.init_params(input=4, hidden=8))
    x = np.zeros((2, 1, 4), np.float32)

    def interrupted(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise SystemError("CPUDispatcher(_cols) returned a result with an exception set") from e

    for name in ("_launch", "_launch_chunks", "_launch_columns"):
        monkeypatch.setattr(kernel, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        kernel(x, params)
    other = SystemError("something else")
    monkeypatch.setattr(kernel, "_launch_chunks", lambda *a: (_ for _ in ()).throw(other))
    monkeypatch.setattr(kernel, "_launch", lambda *a: (_ for _ in ()).throw(other))
    with pytest.raises(SystemError, match="something else"):
        kernel(x, params)


def test_an_interrupt_while_a_pool_starts_ends_its_threads():
    """A Ctrl-C while a new pool waits for its threads to start: the threads it started end
    (no one would ever ring them), their ids are forgotten, and the next call starts a pool."""
    out = _run_case(
        "units",
        """\
        from lstmc_runtime import placement, workers

        class Interrupted(threading.Event):
            def wait(self, timeout=None):
                super().wait(timeout)
                raise KeyboardInterrupt

        class SlowToRecord(workers.Worker):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.recorded = Interrupted()

        real, workers.Worker = workers.Worker, SlowToRecord
        try:
            th._get_pool(th._pool.size + 2)
        except KeyboardInterrupt:
            print("interrupted")
        workers.Worker = real
        time.sleep(0.2)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("lstmc-")]
        print("alive:", alive, "recorded:", len(placement._workers), "pool:", th._pool)
        k(x, p)
        print("next pool:", th._pool.size, len(placement._workers))
        """,
    )
    assert "interrupted" in out and "alive: [] recorded: 0 pool: None" in out, out
    assert "next pool: 1 1" in out, out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_holds_the_blas_gets_it_back():
    """blas_hold.hold_blas holds every BLAS to one thread while a split call runs; a child
    forked meanwhile has no such call, so it starts with the BLAS's threads restored and its
    own hold counted from zero."""
    code = textwrap.dedent("""\
        import os, threading
        import numpy as np
        from threadpoolctl import threadpool_info
        from lstmc_runtime import blas_hold as th

        def blas_threads():
            return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

        before = blas_threads()
        inside, leave = threading.Event(), threading.Event()
        def split_call():
            with th.hold_blas():
                inside.set()
                leave.wait()
        t = threading.Thread(target=split_call)
        t.start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            ok = th._hold_count == 0 and blas_threads() == before
            with th.hold_blas():
                pass
            ok = ok and th._hold_count == 0 and blas_threads() == before
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        leave.set()
        t.join()
        print("child ok:", os.waitstatus_to_exitcode(status) == 0, "parent back:", blas_threads() == before)
        """)
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr
    assert "child ok: True parent back: True" in r.stdout, r.stdout + r.stderr
