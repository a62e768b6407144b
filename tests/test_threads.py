"""How the CPU kernel uses threads: the unit split's plan, bounds, blocks and barrier."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lstmc_runtime import blas_hold
from lstmc_runtime import threads as rt_threads
from lstmc_runtime.gemm import to_panels
from lstmc_runtime.layout import ALIGN_BYTES, ALIGN_SLACK, aligned_index
from lstmc_runtime.packing import split_units, unit_bounds
from lstmc_runtime.sync import FLAG_STRIDE, barrier, new_flags
from numba import njit

import lstmc
from lstmc.codegen.cpu_columns import column_plan
from lstmc.codegen.schedule import schedule
from lstmc.compiler import optimize

SPLITS = {"lstm", "gru", "peephole_lstm", "cifg_lstm", "rnn_tanh", "rnn_relu"}


@pytest.mark.parametrize("name", lstmc.cells.names())
def test_which_shipped_cells_split_by_units(name):
    graph, _ = optimize(lstmc.builtin(name), 2, None, None)
    plan = column_plan(graph, schedule(graph))
    # gru_cho and mgu multiply a value of the step (r * h), lstmp projects the step's result,
    # layernorm_lstm normalizes whole rows, indrnn has no product in its step.
    assert (plan is not None) == (name in SPLITS)
    if plan is not None:
        # the one stacked recurrent product, and the hoisted input projection, which each
        # thread computes for its own units
        assert len(plan.offsets.keys() - plan.hoisted) == 1 and len(plan.hoisted) == 1
        for slots in plan.offsets.values():
            assert len(slots) == len({str(o) for o in slots})


@given(extent=st.integers(1, 3000), threads=st.integers(1, 8))
def test_unit_bounds_cover_the_units_in_order(extent, threads):
    b = unit_bounds(extent, threads)
    assert b[0] == 0 and b[-1] == extent and len(b) == threads + 1
    assert all(x <= y for x, y in zip(b, b[1:], strict=False))
    if extent >= threads:  # nobody idles at the barrier
        assert all(x < y for x, y in zip(b, b[1:], strict=False))
    if extent >= 32 * threads * 4:  # room to align: every cut on 128 bytes (32 float32s),
        assert all(x % 32 == 0 for x in b[1:-1])  # and shares within 32 of equal
        assert max(y - x for x, y in zip(b, b[1:], strict=False)) - extent / threads <= 32
    b64 = unit_bounds(extent, threads, itemsize=8)
    if extent >= 16 * threads * 4:  # float64: 16 units to 128 bytes
        assert all(x % 16 == 0 for x in b64[1:-1])


def test_split_units_cuts_each_slot_at_the_threads_units():
    rng = np.random.default_rng(0)
    H, K = 40, 7
    w = rng.standard_normal((K, 3 * H)).astype(np.float32)  # slots at 2H, 0, H (as a GRU)
    columns = {"w": {"extent": ((("hidden", 1),), 0), "offsets": [
        ((("hidden", 2),), 0), ((), 0), ((("hidden", 1),), 0)]}}  # fmt: skip
    blocks = split_units({"w": w}, {"hidden": H}, columns, 2)
    assert [b["units"] for b in blocks] == [(0, 20), (20, 40)]  # 32 | 8 would be too uneven
    for b in blocks:
        e0, e1 = b["units"]
        want = np.concatenate(
            [w[:, 2 * H + e0 : 2 * H + e1], w[:, e0:e1], w[:, H + e0 : H + e1]], 1
        )
        assert b["w"].flags.c_contiguous and np.array_equal(b["w"], want)


def test_one_thread_takes_the_packed_weight_itself_when_its_slots_are_in_order():
    rng = np.random.default_rng(0)
    H, K = 40, 7
    w = rng.standard_normal((K, 3 * H)).astype(np.float32)
    in_order = {"w": {"extent": ((("hidden", 1),), 0), "offsets": [
        ((), 0), ((("hidden", 1),), 0), ((("hidden", 2),), 0)]}}  # fmt: skip
    (block,) = split_units({"w": w}, {"hidden": H}, in_order, 1)
    assert block["units"] == (0, H) and block["w"] is w  # no copy of the whole weight
    shuffled = {"w": {**in_order["w"], "offsets": in_order["w"]["offsets"][::-1]}}
    (block,) = split_units({"w": w}, {"hidden": H}, shuffled, 1)
    want = np.concatenate([w[:, 2 * H :], w[:, H : 2 * H], w[:, :H]], 1)
    assert block["w"] is not w and np.array_equal(block["w"], want)


def test_weights_in_panels_are_cut_as_row_major_and_packed_again():
    """A weight packed in panels (what kernel.pack makes of the products' weights) splits into
    the panels of the row-major blocks above; one thread's whole weight is not copied."""
    rng = np.random.default_rng(0)
    H, K = 40, 7
    w = rng.standard_normal((K, 3 * H)).astype(np.float32)
    columns = {"w": {"extent": ((("hidden", 1),), 0), "offsets": [
        ((("hidden", 2),), 0), ((), 0), ((("hidden", 1),), 0)]}}  # fmt: skip
    flat = split_units({"w": w}, {"hidden": H}, columns, 2)
    paneled = split_units({"w": to_panels(w)}, {"hidden": H}, columns, 2, {"w": 3 * H})
    for f, p in zip(flat, paneled):
        assert p["units"] == f["units"] and p["w"].ndim == 3
        assert np.array_equal(p["w"], to_panels(f["w"]))
    in_order = {"w": {"extent": ((("hidden", 1),), 0), "offsets": [
        ((), 0), ((("hidden", 1),), 0), ((("hidden", 2),), 0)]}}  # fmt: skip
    whole = to_panels(w)
    (block,) = split_units({"w": whole}, {"hidden": H}, in_order, 1, {"w": 3 * H})
    assert block["w"] is whole


def test_plan_prefers_units_for_large_steps_and_keeps_small_ones_serial(monkeypatch):
    """Which plan each size gets on two CPUs (the figures behind the thresholds are in
    lstmc_runtime.threads)."""
    monkeypatch.setattr(rt_threads, "cpu_count", lambda: 2)
    # A 2 MB L2 a core, as on the Xeon the thresholds were measured on (the host's own L2 may
    # be smaller: an EPYC's 512 KB gives the unit split to 288 KB of weights, as below)
    monkeypatch.setattr(rt_threads, "L2_BYTES", 2 * 1024 * 1024)

    def lstm(H: int) -> int:  # multiply-adds per row and step
        return 8 * H * H

    def plan(*args, **kw):
        p = rt_threads.plan_call(*args, **kw, chunks=True)
        return p.mode, p.threads

    assert plan(100, 1, lstm(32), None, 32) == ("serial", 1)
    assert plan(100, 1, lstm(64), None, 64) == ("serial", 1)  # 32K a step
    # Two threads once a call has _MIN_WORK_COLS multiply-adds (kernels with `_cols`, which
    # take part in the hand-shake) and a step _UNITS_MIN_STEP; below that, one thread
    # ("units x1": the chunked input projection of _cols)
    assert plan(100, 1, lstm(128), None, 128) == ("units", 2)  # 131K a step, 13M a call
    assert plan(50, 1, lstm(128), None, 128) == ("units", 1)  # 6.6M a call
    assert plan(100, 16, lstm(32), None, 32) == ("batch", 2)  # 13M a call
    assert plan(100, 8, lstm(16), None, 16) == ("serial", 1)  # 2M a call, 16K a step
    assert plan(100, 2, lstm(128), None, 128) == ("units", 2)  # 26M a call
    # kernels without `_cols` (no hand-shake) keep _MIN_WORK
    assert rt_threads.plan_call(100, 16, lstm(32), None, None).mode == "serial"  # 13M
    assert rt_threads.plan_call(100, 32, lstm(32), None, None).mode == "batch"  # 26M
    assert plan(100, 1, lstm(512), None, 512) == ("units", 2)
    assert plan(100, 6, lstm(128), None, 128) == ("units", 2)
    assert plan(100, 64, lstm(192), None, 192) == ("units", 2)
    # Weights of at most _BATCH_MAX_WEIGHT_BYTES (L2 holds them whole on each core): chunks of
    # at least _MIN_ROWS rows, no barrier; fewer rows than two chunks: by units
    assert plan(100, 64, lstm(32), None, 32) == ("batch", 2)  # 32 KB
    assert plan(100, 64, lstm(64), None, 64) == ("batch", 2)  # 128 KB
    assert plan(100, 16, lstm(96), None, 96) == ("batch", 2)  # 288 KB
    assert plan(100, 6, lstm(96), None, 96) == ("units", 2)  # 6 rows
    assert plan(100, 64, lstm(64), None, 64, itemsize=8) == ("batch", 2)  # 256 KB
    assert plan(100, 64, lstm(128), None, 128, itemsize=4) == ("batch", 2)  # 512 KB
    assert plan(100, 64, lstm(128), None, 128, itemsize=8) == ("units", 2)  # 1 MB
    # a module written before `_launch_chunks` (its batch split is `_rows`): by units
    assert rt_threads.plan_call(100, 64, lstm(32), None, 32).mode == "units"
    # half of a smaller L2 at most (here 512 KB: 256 KB)
    monkeypatch.setattr(rt_threads, "L2_BYTES", 512 * 1024)
    assert plan(100, 64, lstm(64), None, 64) == ("batch", 2)  # 128 KB
    assert plan(100, 64, lstm(96), None, 96) == ("units", 2)  # 288 KB
    monkeypatch.setattr(rt_threads, "L2_BYTES", 2 * 1024 * 1024)
    # cuts off the cache lines (24 units of float32: 96 bytes): not by units where several
    # rows would share lines between the threads; a single row may
    assert plan(100, 64, lstm(48), None, 48) == ("batch", 2)
    assert plan(100, 1, 400_000, None, 40) == ("units", 2)  # cut at 20 units, one row
    assert plan(100, 8, 50_000, None, 40) == ("batch", 2)  # the same cut, eight rows
    # fewer units than one SIMD vector a thread: never split by units
    assert plan(100, 64, lstm(16), None, 16) == ("batch", 2)  # 13M: by rows (1.35x)
    assert plan(50, 64, lstm(16), None, 16) == ("units", 1)  # 6.6M: one thread
    assert plan(1000, 64, lstm(16), None, 16) == ("batch", 2)  # 131M
    assert plan(1, 64, lstm(128), None, 128)[0] != "units"  # one step: small weights, by rows
    # one step with weights past L2 (a decode step): by units, each thread reading half
    assert plan(1, 64, lstm(256), None, 256) == ("units", 2)
    assert plan(1, 16, lstm(512), None, 512) == ("units", 2)
    assert plan(1, 1, lstm(256), None, 256) == ("serial", 1)  # one thread: nothing to chunk
    assert plan(100, 64, lstm(512), None, 512) == ("units", 2)
    # no unit split in the kernel: the batch split or one thread, as before
    assert rt_threads.plan_call(100, 64, lstm(128), None, None).mode in ("batch", "serial")
    assert rt_threads.plan_call(100, 64, lstm(128), None, 128, split="batch").mode != "units"
    forced = rt_threads.plan_call(3, 1, 8, 3, 2, split="units")
    assert (forced.mode, forced.threads) == ("units", 2)  # never more threads than units
    monkeypatch.setattr(rt_threads, "cpu_count", lambda: 1)
    assert rt_threads.plan_call(100, 64, lstm(1024), None, 1024).mode != "units"
    # One thread: "units x1" (the chunked input projection of _cols) for large steps while the
    # weights are small enough for chunks (_UNITS_ONE_THREAD_MAX_ROW); else serial.
    one = rt_threads.plan_call(100, 64, lstm(128), None, 128)
    assert (one.mode, one.threads) == ("units", 1)
    assert rt_threads.plan_call(100, 16, lstm(128), 1, 128).threads == 1
    assert rt_threads.plan_call(100, 16, lstm(128), 1, 128).mode == "units"
    assert rt_threads.plan_call(100, 1, lstm(32), 1, 32).mode == "serial"
    assert rt_threads.plan_call(100, 1, lstm(32), None, 32).mode == "serial"
    # float64 weights take twice the cache: H=512 (8 MB of float32 weights) stays units x1,
    # in float64 (16 MB) it does not
    assert rt_threads.plan_call(100, 64, lstm(256), None, 256, itemsize=8).mode == "units"
    assert rt_threads.plan_call(100, 64, lstm(512), None, 512, itemsize=4).mode == "units"
    assert rt_threads.plan_call(100, 64, lstm(512), None, 512, itemsize=8).mode == "serial"


def test_barrier_lets_no_thread_run_ahead():
    """Each thread writes step t into its slot of a shared row, then checks after the barrier
    that every slot holds t: a thread passing the barrier early would see t - 1."""
    n, steps = 2, 2000
    flags = new_flags(n)
    row, bad = np.zeros(n, np.int64), np.zeros(n, np.int64)

    from numba import njit

    @njit(nogil=True)
    def run(k, n, flags, row, bad, steps):
        for t in range(1, steps + 1):
            row[k] = t
            if not barrier(flags, k, n, 2 * t - 1):
                return
            for i in range(n):
                if row[i] != t:
                    bad[k] += 1
            barrier(flags, k, n, 2 * t)  # nobody writes t + 1 before all have checked t

    th = threading.Thread(target=run, args=(1, n, flags, row, bad, steps))
    th.start()
    run(0, n, flags, row, bad, steps)
    th.join()
    assert bad.sum() == 0 and row.tolist() == [steps] * n


def test_a_failing_thread_aborts_the_others_instead_of_hanging():
    def cols(k, n, flags):
        if k == 1:
            raise ValueError("thread 1 failed")
        assert not barrier(flags, k, n, 1)  # returns False once the abort flag is set

    done = []

    def call():
        with pytest.raises(ValueError, match="thread 1 failed"):
            rt_threads.run_units(cols, 2)
        done.append(True)

    th = threading.Thread(target=call, daemon=True)
    th.start()
    th.join(timeout=30)
    assert done == [True], "run_units hung after a thread raised"


def test_abort_flag_is_the_slot_after_the_threads():
    flags = new_flags(3)
    assert flags.shape == (4 * FLAG_STRIDE,) and flags.dtype == np.int64
    flags[3 * FLAG_STRIDE] = 1
    assert not barrier(flags, 0, 3, 1)  # the others never arrive, but the call is aborted


def test_a_failed_start_of_a_helper_aborts_the_ones_started(monkeypatch):
    """If handing a job to helper 2 fails, helper 1 (already waiting for thread 0) must
    return, and the call raises once it has."""
    from lstmc_runtime.workers import Worker

    real_post = Worker.post
    rung = []

    def post_once(self, job):  # what ring() and the hand-shake's ring_and_wait() start with
        if rung:
            raise RuntimeError("cannot start a thread")
        rung.append(self)
        real_post(self, job)

    rt_threads._get_pool(2)  # made before: a pool replaced rings its threads to stop them
    monkeypatch.setattr(Worker, "post", post_once)
    returned = []

    def cols(k, n, flags):
        returned.append((k, barrier(flags, k, n, 1)))

    with pytest.raises(RuntimeError, match="cannot start"):
        _in_a_thread(lambda: rt_threads.run_units(cols, 3))
    assert returned == [(1, False)]  # helper 1 returned, aborted; thread 0 never started
    assert rung[0].flags[FLAG_STRIDE] == rung[0].rung  # and its job is done


def _in_a_thread(fn, timeout=30):
    """Run fn() in a daemon thread; its error, or a hang, fails the test here."""
    result = []

    def run():
        try:
            fn()
            result.append(None)
        except BaseException as e:
            result.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout=timeout)
    assert result, "hung"
    if result[0] is not None:
        raise result[0]


@pytest.mark.parametrize("helper_time", [0.0, 0.05])
def test_hand_off_waits_for_every_helper(monkeypatch, helper_time):
    """The caller returns only after every helper is done, whether a helper finishes while
    the caller spins (0 s) or long after (50 ms: past the spin, it blocks on the future)."""
    import time

    monkeypatch.setattr(rt_threads, "_WAIT_SPINS", 1000)  # ~12 us of spinning
    finished = []

    def helper(i):
        time.sleep(helper_time * (i + 1))
        finished.append(i)

    pool = rt_threads._get_pool(3)
    _in_a_thread(
        lambda: rt_threads._hand_off(pool, [lambda i=i: helper(i) for i in range(3)], lambda: None)
    )
    assert sorted(finished) == [0, 1, 2]


def test_hand_off_raises_the_callers_error_first_and_runs_on_error():
    aborted = []

    def boom(msg):
        raise ValueError(msg)

    pool = rt_threads._get_pool(2)
    with pytest.raises(ValueError, match="helper"):
        _in_a_thread(
            lambda: rt_threads._hand_off(
                pool, [lambda: boom("helper")], lambda: None, lambda: aborted.append(1)
            )
        )
    assert aborted == [1]
    with pytest.raises(ValueError, match="caller"):
        _in_a_thread(
            lambda: rt_threads._hand_off(pool, [lambda: boom("helper")], lambda: boom("caller"))
        )


def test_split_calls_from_two_threads_at_once_give_each_its_own_result():
    """Two Python threads calling split kernels at once (one by units, one by batch rows)
    share the pool: each call waits for its own helpers only, and neither hangs."""
    cases = []
    for name, split in (("lstm", "units"), ("layernorm_lstm", "batch")):
        kernel = lstmc.compile(lstmc.builtin(name), dtype="float64")
        params = kernel.pack(kernel.init_params(input=6, hidden=32, seed=1))
        x = np.random.default_rng(2).standard_normal((7, 12, 6))
        kernel.threads = 1
        want = kernel(x, params)[0]
        kernel.threads, kernel.split = 2, split
        cases.append((kernel, params, x, want))

    errors = []

    def calls(kernel, params, x, want):
        try:
            for _ in range(20):
                np.testing.assert_array_equal(kernel(x, params)[0], want)
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=calls, args=c, daemon=True) for c in cases]
    for th in workers:
        th.start()
    for th in workers:
        th.join(timeout=60)
        assert not th.is_alive(), "hung"
    assert not errors, errors
    for kernel, *_ in cases:
        assert kernel.last_plan.threads == 2


def _blas_threads() -> list[int]:
    from threadpoolctl import ThreadpoolController

    return [i["num_threads"] for i in ThreadpoolController().info() if i["user_api"] == "blas"]


def _blas_threads_before() -> list[int]:
    """The BLAS libraries' thread counts, for a test that needs one with two threads or more."""
    before = _blas_threads()
    if not before or max(before) < 2:
        pytest.skip("no multi-threaded BLAS loaded")
    return before


def test_overlapping_holds_restore_the_blas_threads():
    """Two holds of the BLAS that overlap, the first in also the first out (two calls on two
    threads), leave it as it was. With one threadpoolctl limiter each, the second would have
    recorded the first's limit of one thread and restored that, for good."""
    before = _blas_threads_before()
    first, second = blas_hold.hold_blas(), blas_hold.hold_blas()
    first.__enter__()
    second.__enter__()
    assert set(_blas_threads()) == {1}
    first.__exit__(None, None, None)
    assert set(_blas_threads()) == {1}  # the second call still runs
    second.__exit__(None, None, None)
    assert _blas_threads() == before


def test_an_interrupted_wait_still_waits_for_the_helpers_before_the_pool_is_reused(monkeypatch):
    """Ctrl-C while the caller waits for a helper: the call raises KeyboardInterrupt, but only
    once the helper's job is done, so the next hand-off never rings a busy helper."""
    import time

    from lstmc_runtime.workers import Worker

    pool = rt_threads._get_pool(1)
    real_wait = Worker.wait
    interrupts = []

    def wait_interrupted_once(self, spins):
        if not interrupts:
            interrupts.append(1)
            raise KeyboardInterrupt
        real_wait(self, spins)

    monkeypatch.setattr(Worker, "wait", wait_interrupted_once)
    finished = []

    def helper():
        time.sleep(0.05)
        finished.append(1)

    with pytest.raises(KeyboardInterrupt):
        _in_a_thread(lambda: rt_threads._hand_off(pool, [helper], lambda: None))
    assert finished == [1]
    monkeypatch.undo()
    again = []
    _in_a_thread(lambda: rt_threads._hand_off(pool, [lambda: again.append(1)], lambda: None))
    assert again == [1]


def test_a_helper_keeps_nothing_of_the_last_call_alive():
    import gc
    import weakref

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    pool = rt_threads._get_pool(1)
    rt_threads._hand_off(pool, [lambda p=payload: p], lambda: None)
    del payload
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0", "oops", "1e300"])
def test_helper_spin_time_from_the_environment_is_always_sane(monkeypatch, value):
    from lstmc_runtime import workers

    monkeypatch.setenv("LSTMC_SPIN_US", value)
    spins = workers.spin_pauses()
    assert 0 <= spins < 10**9
    assert (spins == 0) == (value in ("-5", "0"))


def test_hand_shake_starts_awake_helpers_and_ends_without_a_wait_for_the_gil(monkeypatch):
    """A hand-off with `flags` (the hand-shake, lstmc_runtime.sync): an awake helper is rung and
    starts without the GIL (ring_and_wait returns True), and waits in compiled code until
    the caller waits for it (finish_and_wait returns True); every part's result arrives."""
    from lstmc_runtime import sync
    from numba import njit

    @njit(nogil=True)
    def part(flags, k, out):
        sync.started(flags, k)
        out[k] = k + 1
        sync.until_caller_waits(flags, k)

    seen = {"ring": [], "finish": []}
    ring, finish = rt_threads.ring_and_wait, rt_threads.finish_and_wait
    monkeypatch.setattr(
        rt_threads, "ring_and_wait", lambda *a: seen["ring"].append(ring(*a)) or seen["ring"][-1]
    )
    monkeypatch.setattr(
        rt_threads,
        "finish_and_wait",
        lambda *a: seen["finish"].append(finish(*a)) or seen["finish"][-1],
    )
    pool = rt_threads._get_pool(1)
    for _ in range(20):  # back to back: the helper spins between them (LSTMC_SPIN_US)
        flags, out = new_flags(2), np.zeros(2, np.int64)
        rt_threads._hand_off(
            pool,
            [lambda f=flags, o=out: part(f, 1, o)],
            lambda f=flags, o=out: part(f, 0, o),
            None,
            flags,
        )
        assert out.tolist() == [1, 2]
        assert flags[1 * FLAG_STRIDE + 1] == 1 and flags[2 * FLAG_STRIDE + 1] == 1
    # on a busy host a helper may be descheduled now and then: then the fallbacks ran
    assert any(seen["ring"]) and any(seen["finish"])


def test_hand_shake_with_helpers_that_never_start_falls_back_instead_of_hanging():
    """Jobs that do not take part in the hand-shake (plain Python) still run: the caller stops
    waiting for their start after _START_SPINS and waits for them as without it."""
    pool = rt_threads._get_pool(1)
    done = []
    flags = new_flags(2)
    rt_threads._hand_off(
        pool, [lambda: done.append("helper")], lambda: done.append("caller"), None, flags
    )
    assert sorted(done) == ["caller", "helper"]


@pytest.mark.parametrize("split", ["units", "batch"])
def test_split_calls_with_sleeping_helpers_give_the_serial_result(monkeypatch, split):
    """LSTMC_SPIN_US=0: the helpers sleep between calls, so the hand-shake wakes them the old
    way; results equal the one-thread call's, bit for bit."""

    def new_pool() -> None:  # the next split call makes a pool with the setting of now
        with rt_threads._pool_lock:
            if rt_threads._pool is not None:
                rt_threads._pool.shutdown()
            rt_threads._pool = None

    monkeypatch.setenv("LSTMC_SPIN_US", "0")
    new_pool()
    try:
        kernel = lstmc.compile(lstmc.builtin("lstm"))
        packed = kernel.pack(kernel.init_params(input=32, hidden=32))
        x = np.random.default_rng(0).standard_normal((5, 16, 32)).astype(np.float32)
        kernel.threads = 1
        want = kernel(x, packed)[0]
        kernel.threads, kernel.split = 2, split
        for _ in range(3):
            got = kernel(x, packed)[0]
            assert kernel.last_plan.mode == split and kernel.last_plan.threads == 2
            assert all(w.spins == 0 for w in rt_threads._pool.workers)
            np.testing.assert_array_equal(got, want)
    finally:
        monkeypatch.delenv("LSTMC_SPIN_US")
        new_pool()


@given(
    shapes=st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=3), max_size=6),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_aligned_arrays_are_aligned_disjoint_and_of_their_shapes(shapes, dtype):
    """The arrays a split call writes from several threads, cut from one allocation: each
    starts on ALIGN bytes (two threads on one 128-byte pair of lines made a step 10x slower),
    and none overlaps another."""
    from lstmc_runtime.kernel import ALIGN, aligned_arrays

    made = aligned_arrays([tuple(s) for s in shapes], dtype)
    assert [a.shape for a in made] == [tuple(s) for s in shapes]
    for i, a in enumerate(made):
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % ALIGN == 0
        a[...] = i
    for i, a in enumerate(made):
        assert (a == i).all()


@njit
def _aligned_index(work, i):
    return aligned_index(work, i)


@given(
    offset=st.integers(0, 300),
    start=st.integers(0, 200),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_aligned_index_is_the_first_index_on_align_bytes(offset, start, dtype):
    """aligned_index(work, i), which carves a prologue's hoisted buffers from its workspace:
    the first index j >= i whose element starts on ALIGN_BYTES, within ALIGN_SLACK of i."""
    work = np.empty(offset + start + 2 * ALIGN_SLACK + 8, dtype)[offset:]  # any alignment
    j = _aligned_index(work, start)
    assert start <= j < start + ALIGN_BYTES // work.itemsize <= start + ALIGN_SLACK
    assert work[j:].ctypes.data % ALIGN_BYTES == 0


# Three hoisted buffers of widths 24, 3 and 24 (W x and V x stacked, tanh of V x, P of that):
# each after the first is carved after another's end, at any alignment.
THREE_HOISTED = """\
cell: three_hoisted
sizes: [input, hidden, mid]
inputs: {x: [input]}
state: {h: [hidden]}
params: {W: [hidden, input], V: [mid, input], P: [hidden, mid], u: [hidden]}
equations:
  h_next: tanh(tanh(W @ x) + u * h + P @ tanh(V @ x))
update: {h: h_next}
outputs: [h_next]
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", ["layernorm_lstm", THREE_HOISTED], ids=["layernorm", "three"])
def test_hoisted_buffers_start_on_align_bytes_in_a_misaligned_workspace(monkeypatch, spec, dtype):
    """The batch split's threads fill their rows of the prologue's hoisted buffers side by
    side: each buffer starts on ALIGN_BYTES wherever the workspace starts, inside it, and
    the results are those of one thread."""
    cell = lstmc.builtin(spec) if "\n" not in spec else lstmc.loads(spec, "three.yaml")
    kernel = lstmc.compile(cell, dtype=dtype)
    module = kernel.module
    sizes = {"input": 8, "hidden": 24, "mid": 3}
    packed = kernel.pack(kernel.init_params(**{s: sizes[s] for s in kernel.signature.sizes}))
    x = np.random.default_rng(0).standard_normal((5, 16, 8)).astype(dtype)
    kernel.threads = 1
    want_y, want_state = kernel(x, packed)
    prologue, starts = module._prologue, []

    def misaligned(*args):
        *head, work, t0, t1, b0, b1 = args
        if work.size == 0:  # the first call: a workspace 4 bytes off any vector boundary
            work = np.empty(1 << 16, np.uint8)[4 : 4 + (1 << 15)].view(work.dtype)
        pro = prologue(*head, work, t0, t1, b0, b1)
        for a in pro[:-1]:
            if isinstance(a, np.ndarray) and a.size:
                assert np.shares_memory(a, pro[-1])  # carved from the workspace
                starts.append(a.ctypes.data % ALIGN_BYTES)
        return pro

    monkeypatch.setattr(module, "_prologue", misaligned)
    kernel.threads, kernel.split = 2, "batch"
    kernel.release_workspace()  # this thread's next call grows a new one, misaligned
    y, state = kernel(x, packed)
    assert kernel.last_plan.threads == 2 and starts and set(starts) == {0}
    np.testing.assert_array_equal(y, want_y)
    for key in want_state:
        np.testing.assert_array_equal(state[key], want_state[key])


@pytest.mark.parametrize(
    "name, split",
    [("lstm", "units"), ("lstm", "batch"), ("layernorm_lstm", "batch")],
    ids=["lstm-units", "lstm-batch", "layernorm_lstm-batch"],
)
def test_split_calls_return_aligned_outputs_and_state(name, split):
    """What the threads write side by side (outputs, the state the call returns) starts on
    ALIGN bytes, whichever of the two state buffers the last step wrote. layernorm_lstm has
    no unit split: its batch split runs through `_launch`, whose spare state np.empty_like
    made on malloc's 16 bytes (two threads then wrote the cache line where their rows meet)."""
    from lstmc_runtime.kernel import ALIGN

    kernel = lstmc.compile(lstmc.builtin(name))
    assert hasattr(kernel.module, "_launch_columns") == (name == "lstm")
    packed = kernel.pack(kernel.init_params(input=8, hidden=64))
    kernel.threads, kernel.split = 2, split
    for T in (3, 4):  # the final state is the spare one after an odd number of steps
        x = np.random.default_rng(T).standard_normal((T, 16, 8)).astype(np.float32)
        y, state = kernel(x, packed, {"h": np.ones((16, 64), np.float32)})
        assert kernel.last_plan.mode == split and kernel.last_plan.threads == 2
        for a in (y, *state.values()):
            assert a.ctypes.data % ALIGN == 0
        kernel.threads = 1
        want_y, want_state = kernel(x, packed, {"h": np.ones((16, 64), np.float32)})
        kernel.threads = 2
        np.testing.assert_array_equal(y, want_y)
        for key in want_state:
            np.testing.assert_array_equal(state[key], want_state[key])


def test_holds_overlapping_on_two_threads_restore_the_blas_and_let_go_of_it():
    """The first thread in leaves first and the other restores (two split calls on two
    threads). threadpoolctl lets only the first thread that limits a pthreads OpenBLAS set
    it while that thread lives: the restore from the second thread did nothing, so the BLAS
    stayed at one thread for good, and no other thread could change it afterwards."""
    import threading

    from threadpoolctl import threadpool_limits

    before = _blas_threads_before()
    first_in, second_in = threading.Event(), threading.Event()
    first_out, second_out = threading.Event(), threading.Event()

    def first():  # in first, out first, and alive until the second is out
        with blas_hold.hold_blas():
            first_in.set()
            second_in.wait(10)
        first_out.set()
        second_out.wait(10)

    def second():
        first_in.wait(10)
        with blas_hold.hold_blas():
            second_in.set()
            first_out.wait(10)
        second_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert _blas_threads() == before
    # a hold on this thread, then a user's own limit on another thread takes effect
    with blas_hold.hold_blas():
        pass
    seen = []

    def user():
        with threadpool_limits(limits=1, user_api="blas"):
            seen.extend(_blas_threads())

    th = threading.Thread(target=user)
    th.start()
    th.join(30)
    assert set(seen) == {1}
    assert _blas_threads() == before
