"""Where a split call's helper threads may run: anywhere the caller may, but on its CPU."""

from __future__ import annotations

import os

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
    rt_threads._get_pool(1)
    allowed = os.sched_getaffinity(0)
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


def test_a_system_that_refuses_affinity_changes_still_runs_the_split(monkeypatch):
    """A sandbox may forbid setting another thread's affinity: the hand-off goes on, and the
    masks are tried again next time."""

    def refuse(tid, mask):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(placement, "_applied", None)
    monkeypatch.setattr(placement.os, "sched_setaffinity", refuse)
    pool = rt_threads._get_pool(1)
    done = []
    rt_threads._hand_off(pool, [lambda: done.append("helper")], lambda: done.append("caller"))
    assert sorted(done) == ["caller", "helper"]
    assert placement._applied is None


def test_without_sched_getcpu_nothing_is_done(monkeypatch):
    monkeypatch.setattr(placement, "_sched_getcpu", None)
    monkeypatch.setattr(
        placement.os, "sched_setaffinity", lambda *a: pytest.fail("no mask may be set")
    )
    placement.keep_off_caller(helpers=1)
