"""Where a split call's helper threads may run: anywhere the caller may, but on its CPU."""

from __future__ import annotations

import os
import signal
import time

import pytest
from lstmc_runtime import placement
from lstmc_runtime import threads as rt_threads

needs_affinity = pytest.mark.skipif(
    placement._sched_getcpu is None or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux's sched_getcpu and two CPUs",
)


@pytest.fixture
def fresh_masks(monkeypatch):
    """Open every pool thread's mask to all the caller's CPUs and forget which masks were
    applied (so the next hand-off must write them), and record the CPU the hand-off saw the
    caller on."""
    rt_threads._get_pool(1)
    if placement._sched_getcpu is not None:
        for tid in placement.worker_ids():
            os.sched_setaffinity(tid, os.sched_getaffinity(0))
    monkeypatch.setattr(placement, "_applied", None)
    monkeypatch.setattr(placement, "_refused", False)
    seen = []
    real = placement._sched_getcpu

    def recording():
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(placement, "_sched_getcpu", recording)
    return seen


@needs_affinity
def test_hand_off_keeps_every_pool_thread_off_the_callers_cpu(fresh_masks):
    pool = rt_threads._get_pool(1)
    ran_on = []
    rt_threads._hand_off(pool, [lambda: ran_on.append(placement._sched_getcpu())], lambda: None)
    caller_cpu = fresh_masks[0]
    allowed = os.sched_getaffinity(0)
    assert placement.worker_ids(), "the pool's threads were not recorded"
    for tid in placement.worker_ids():
        assert os.sched_getaffinity(tid) == allowed - {caller_cpu}
    assert ran_on and ran_on[0] != caller_cpu  # where the helper started, once woken


@needs_affinity
def test_more_helpers_than_other_cpus_may_run_anywhere(fresh_masks):
    allowed = os.sched_getaffinity(0)
    placement.keep_off_caller(helpers=1)  # narrowed first, so that the opening shows
    assert all(os.sched_getaffinity(t) != allowed for t in placement.worker_ids())
    placement.keep_off_caller(helpers=len(allowed))
    for tid in placement.worker_ids():
        assert os.sched_getaffinity(tid) == allowed


@needs_affinity
def test_masks_are_written_only_when_the_callers_cpu_changes(fresh_masks, monkeypatch):
    rt_threads._get_pool(1)
    placement.keep_off_caller(helpers=1)
    writes = []
    monkeypatch.setattr(placement.os, "sched_setaffinity", lambda *a: writes.append(a))
    cpu = fresh_masks[0]
    monkeypatch.setattr(placement, "_sched_getcpu", lambda: cpu)
    placement.keep_off_caller(helpers=1)
    assert writes == []
    other = min(os.sched_getaffinity(0) - {cpu})
    monkeypatch.setattr(placement, "_sched_getcpu", lambda: other)
    placement.keep_off_caller(helpers=1)
    assert {mask for _, mask in writes} == {frozenset(os.sched_getaffinity(0) - {other})}


@needs_affinity
def test_a_system_that_refuses_affinity_changes_still_runs_the_split(fresh_masks, monkeypatch):
    """A sandbox may forbid setting another thread's affinity: the hand-off goes on, and no
    later call tries again."""
    attempts = []

    def refuse(tid, mask):
        attempts.append(tid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(placement.os, "sched_setaffinity", refuse)
    pool = rt_threads._get_pool(1)
    for _ in range(2):
        done = []
        rt_threads._hand_off(
            pool, [lambda d=done: d.append("helper")], lambda d=done: d.append("caller")
        )
        assert sorted(done) == ["caller", "helper"]
    assert len(attempts) == 1 and placement._applied is None


def test_without_sched_getcpu_nothing_is_done(monkeypatch):
    monkeypatch.setattr(placement, "_sched_getcpu", None)
    monkeypatch.setattr(
        placement.os,
        "sched_setaffinity",
        lambda *a: pytest.fail("no mask may be set"),
        raising=False,  # absent off Linux
    )
    placement.keep_off_caller(helpers=1)


def test_a_bigger_pool_forgets_the_old_threads():
    """Replacing the pool with a bigger one shuts the old one down and forgets its threads'
    ids (the system may give them to other threads): only the new pool's are kept."""
    old = rt_threads._get_pool(1)
    rt_threads._get_pool(old.size + 1)
    new = rt_threads._get_pool(1)
    assert new is not old and old.stopped
    for t in old.threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert sorted(placement.worker_ids()) == sorted(t.native_id for t in new.threads)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_no_pool(tmp_path):
    """A child forked after split calls has none of the parent's pool threads: it forgets
    them and makes its own pool, instead of waiting forever on threads that do not exist."""
    rt_threads._get_pool(1)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if a hand-off completes
        try:
            ok = rt_threads._pool is None and placement.worker_ids() == []
            done = []
            rt_threads._hand_off(rt_threads._get_pool(1), [lambda: done.append(1)], lambda: None)
            os._exit(0 if ok and done == [1] else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    status = done[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
