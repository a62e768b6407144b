"""CPU benchmark: lstmc's compiled kernels side by side with PyTorch, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cpu.py [--quick]

(a) lstm / gru against torch.nn.LSTM / nn.GRU inference, float32, T=100, over H x B;
(b) peephole_lstm, cifg_lstm, layernorm_lstm against the compiled plain LSTM and against the
    same cell written as an eager PyTorch loop;
(c) the machine's float32 GEMM throughput (torch and NumPy's BLAS) and the share of it the
    compiled LSTM reaches at H=512, B=64 (the LSTM and torch.mm timed in turns);
(d) cold compile and warm (cached) load time per cell, each in a fresh process: to a first
    call of tiny sizes, and to a call of all sizes 128, B=64 after it (the split path); and
    the same for a plain LSTM written with numba.njit(cache=True), Numba's own cost here;
(e) what each pass and thread plan bought; (f) float32 sigmoid/tanh per element and the cost
    of a one-step call, against torch's.
Both sides use the same number of threads. Results go to benchmarks/RESULTS.md, between the
CPU markers of this CPU's model (each model measured keeps its own tables: AVX-512 Xeons and
AVX2 EPYCs run different kernels), and to benchmarks/cpu_ratios_<model>.png.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from lstmc_runtime.threads import cpu_count
from threadpoolctl import threadpool_info

import lstmc

HERE = Path(__file__).parent
T = 100


def best_time(fn, repeat: int = 7, min_time: float = 0.2) -> float:
    """Best per-call time over `repeat` rounds, each long enough to be measurable."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    inner = max(1, int(min_time / once / repeat))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def best_times(fns, repeat: int = 7, min_time: float = 0.2, settle: float = 0.0) -> list[float]:
    """`best_time` of several functions measured in turns, round by round: a burst of load
    from elsewhere on the host then slows a round of each rather than all rounds of one, so
    the ratios of the results are steadier than those of separate measurements. `settle`:
    seconds of untimed calls (one at least) of each function before its timed ones in every
    round, which take what the previous function left behind (another library's threads
    still spinning, ours asleep)."""
    inners = []
    for fn in fns:
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-6)
        inners.append(max(1, int(min_time / once / repeat)))
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, (fn, inner) in enumerate(zip(fns, inners)):
            start = time.perf_counter()
            fn()
            while time.perf_counter() - start < settle:
                fn()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / inner)
    return best


def torch_params_lstm(m: torch.nn.LSTM, H: int) -> dict:
    W, U = m.weight_ih_l0.detach().numpy(), m.weight_hh_l0.detach().numpy()
    b = (m.bias_ih_l0 + m.bias_hh_l0).detach().numpy()
    out = {}
    for k, g in enumerate("ifgo"):
        rows = slice(k * H, (k + 1) * H)
        out |= {f"W_{g}": W[rows], f"U_{g}": U[rows], f"b_{g}": b[rows]}
    return out


def torch_params_gru(m: torch.nn.GRU, H: int) -> dict:
    W, U = m.weight_ih_l0.detach().numpy(), m.weight_hh_l0.detach().numpy()
    bi, bh = m.bias_ih_l0.detach().numpy(), m.bias_hh_l0.detach().numpy()
    out = {}
    for k, g in enumerate("rzn"):
        rows = slice(k * H, (k + 1) * H)
        out |= {f"W_i{g}": W[rows], f"W_h{g}": U[rows], f"b_i{g}": bi[rows], f"b_h{g}": bh[rows]}
    return out


def grid(hs, bs, threads: int | None = None, steps: int = T) -> list[dict]:
    """lstm and gru against nn.LSTM / nn.GRU over H x B, x of `steps` steps; `threads` fixes
    lstmc's thread count (the caller sets torch's)."""
    rows = []
    kernels = {name: lstmc.compile(lstmc.builtin(name)) for name in ("lstm", "gru")}
    for kernel in kernels.values():
        kernel.threads = threads
    for name, module_cls, convert in (
        ("lstm", torch.nn.LSTM, torch_params_lstm),
        ("gru", torch.nn.GRU, torch_params_gru),
    ):
        for H in hs:
            for B in bs:
                torch.manual_seed(0)
                m = module_cls(H, H).eval()
                x = torch.randn(steps, B, H)
                packed = kernels[name].pack(convert(m, H))
                xn = x.numpy()
                # In turns, round by round (a burst of load elsewhere on the host slows a
                # round of each side, not all of one: lstm H=512, B=16 took 38-49 ms from
                # run to run measured apart, on an EPYC). Each round first makes 20 ms of
                # untimed calls, which take what the other side left: oneDNN's OpenMP
                # threads spin on after each call and took a core from the calls after it
                # (lstm H=32, B=64: 1.77 ms against 1.22 measured apart without a settle;
                # on the EPYC 1.48-2.96 after one untimed call, 1.30-1.33 after five).
                with torch.inference_mode():
                    t_torch, t_ours = best_times(
                        [lambda: m(x), lambda: kernels[name](xn, packed)], settle=0.02
                    )
                    y_torch = m(x)[0].numpy()
                y_ours = kernels[name](xn, packed)[0]
                plan = kernels[name].last_plan
                rows.append(
                    dict(
                        cell=name,
                        H=H,
                        B=B,
                        torch_ms=t_torch * 1e3,
                        lstmc_ms=t_ours * 1e3,
                        speedup=t_torch / t_ours,
                        max_abs_diff=float(np.abs(y_ours - y_torch).max()),
                        plan=f"{plan.mode} x{plan.threads}" if plan.mode != "serial" else "serial",
                    )
                )
                print(
                    f"{name:5s} T={steps:3d} H={H:4d} B={B:3d}  torch {t_torch * 1e3:9.3f} ms  "
                    f"lstmc {t_ours * 1e3:9.3f} ms  speedup {t_torch / t_ours:5.2f}x  "
                    f"|diff| {rows[-1]['max_abs_diff']:.1e}  ({rows[-1]['plan']})",
                    flush=True,
                )
    return rows


# -- (b) variants --------------------------------------------------------------------------------


def eager_step(name: str, p: dict):
    """The cell as researchers write it today: a Python loop of torch ops per step."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()}
    ln = torch.nn.functional.layer_norm

    def lstm_like(x, h, c):
        if name == "peephole_lstm":
            i = torch.sigmoid(x @ t["W_i"].T + h @ t["U_i"].T + t["p_i"] * c + t["b_i"])
            f = torch.sigmoid(x @ t["W_f"].T + h @ t["U_f"].T + t["p_f"] * c + t["b_f"])
            g = torch.tanh(x @ t["W_g"].T + h @ t["U_g"].T + t["b_g"])
            c2 = f * c + i * g
            o = torch.sigmoid(x @ t["W_o"].T + h @ t["U_o"].T + t["p_o"] * c2 + t["b_o"])
            return o * torch.tanh(c2), c2
        raise KeyError(name)

    if name == "peephole_lstm":
        return lstm_like
    if name == "cifg_lstm":

        def cifg(x, h, c):
            hx = torch.cat([h, x], dim=1)
            f = torch.sigmoid(hx @ t["W_f"].T + t["b_f"])
            g = torch.tanh(hx @ t["W_g"].T + t["b_g"])
            o = torch.sigmoid(hx @ t["W_o"].T + t["b_o"])
            c2 = f * c + (1 - f) * g
            return o * torch.tanh(c2), c2

        return cifg
    if name == "layernorm_lstm":

        def lnlstm(x, h, c):
            gates = []
            for g in "ifgo":
                n = t[f"W_{g}"].shape[0]
                a = ln(x @ t[f"W_{g}"].T, (n,), t[f"gamma_x{g}"], t[f"beta_x{g}"])
                a = a + ln(h @ t[f"U_{g}"].T, (n,), t[f"gamma_h{g}"], t[f"beta_h{g}"])
                gates.append(a + t[f"b_{g}"])
            i, f, o = (torch.sigmoid(gates[k]) for k in (0, 1, 3))
            c2 = f * c + i * torch.tanh(gates[2])
            n = c2.shape[1]
            return o * torch.tanh(ln(c2, (n,), t["gamma_c"], t["beta_c"])), c2

        return lnlstm
    raise KeyError(name)


def variants(hs, B: int) -> list[dict]:
    rows = []
    plain = lstmc.compile(lstmc.builtin("lstm"))
    for name in ("peephole_lstm", "cifg_lstm", "layernorm_lstm"):
        kernel = lstmc.compile(lstmc.builtin(name))
        for H in hs:
            params = kernel.init_params(input=H, hidden=H, seed=0)
            _check_param_names(name, kernel)
            x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
            packed = kernel.pack(params)
            pk_plain = plain.pack(plain.init_params(input=H, hidden=H, seed=0))
            t_ours, t_plain = best_times([lambda: kernel(x, packed), lambda: plain(x, pk_plain)])
            step = eager_step(name, params)
            xt = torch.from_numpy(x)

            def eager(step=step, xt=xt):
                h = torch.zeros(B, H, dtype=xt.dtype)
                c = torch.zeros(B, H, dtype=xt.dtype)
                ys = []
                for s in range(T):
                    h, c = step(xt[s], h, c)
                    ys.append(h)
                return torch.stack(ys)

            # The float64 eager loop is the truth both float32 results are measured against:
            # a cell whose steps amplify rounding (layernorm_lstm's normalized gates) drifts
            # over T=100 steps in either float32 implementation, by about the same amount.
            params64 = {k: v.astype(np.float64) for k, v in params.items()}
            with torch.inference_mode():
                t_eager = best_time(eager, repeat=3)
                y_eager = eager().numpy()
                y_truth = eager(eager_step(name, params64), xt.double()).numpy()
            y_ours = kernel(x, packed)[0]
            rows.append(
                dict(
                    cell=name,
                    H=H,
                    B=B,
                    lstmc_ms=t_ours * 1e3,
                    plain_lstm_ms=t_plain * 1e3,
                    eager_ms=t_eager * 1e3,
                    vs_plain=t_ours / t_plain,
                    vs_eager=t_eager / t_ours,
                    max_abs_diff=float(np.abs(y_ours - y_eager).max()),
                    lstmc_err=float(np.abs(y_ours - y_truth).max()),
                    eager_err=float(np.abs(y_eager - y_truth).max()),
                )
            )
            print(
                f"{name:15s} H={H:4d} B={B:3d}  lstmc {t_ours * 1e3:8.3f} ms  plain lstm "
                f"{t_plain * 1e3:8.3f} ms ({t_ours / t_plain:4.2f}x)  eager torch "
                f"{t_eager * 1e3:8.2f} ms ({t_eager / t_ours:5.1f}x faster)  "
                f"|diff| {rows[-1]['max_abs_diff']:.1e}  |err vs float64| lstmc "
                f"{rows[-1]['lstmc_err']:.1e} eager {rows[-1]['eager_err']:.1e}",
                flush=True,
            )
    return rows


def _check_param_names(name, kernel):
    names = {p.name for p in kernel.signature.params}
    assert names, name


# -- (e) what each step bought ------------------------------------------------------------------


def ablation(H: int = 256, B: int = 16) -> list[dict]:
    """The LSTM at one size under each optimization level and each way to use the threads,
    measured in turns (one after the other, -O3 once read 11.9 ms against -O2's 10.5 on a
    host whose speed moved; in turns the two are within a few percent)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    n = cpu_count()
    configs = []
    for label, opt, threads, split in (
        ("-O0 one thread (naive: a product per gate, a loop per op)", 0, 1, None),
        ("-O1 one thread (+ fold, simplify, CSE, DCE)", 1, 1, None),
        ("-O2 one thread (+ gate fusion, hoisting, loop fusion)", 2, 1, None),
        (f"-O2, batch rows split across {n} threads", 2, n, "batch"),
        (f"-O2, step units split across {n} threads", 2, n, "units"),
        ("-O2 as planned by default", 2, None, None),
        ("-O3 (+ time loop unrolled x2)", 3, None, None),
    ):
        kernel = lstmc.compile(lstmc.builtin("lstm"), opt=opt)  # a kernel object of its own
        kernel.threads, kernel.split = threads, split
        packed = kernel.pack(kernel.init_params(input=H, hidden=H))
        configs.append((label, kernel, functools.partial(kernel, x, packed)))
    times = best_times([call for _, _, call in configs], repeat=5, settle=0.02)
    rows = []
    for (label, kernel, _), t in zip(configs, times):
        mode = kernel.last_plan.mode
        rows.append(dict(step=label, H=H, B=B, ms=t * 1e3, mode=mode))
        print(f"{label:55s} H={H} B={B}: {t * 1e3:8.3f} ms ({mode})", flush=True)
    return rows


# -- (c) GEMM throughput ---------------------------------------------------------------------------


def gemm_throughput() -> dict:
    out = {}
    for n in (1024, 2048):
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        t = best_time(lambda: torch.mm(a, b), repeat=5)
        out[f"torch_mm_{n}"] = 2 * n**3 / t / 1e9
        an, bn = a.numpy(), b.numpy()
        t = best_time(lambda: an @ bn, repeat=5)
        out[f"numpy_mm_{n}"] = 2 * n**3 / t / 1e9
    return out


def lstm_flops(T: int, B: int, I: int, H: int) -> float:
    return 2.0 * T * B * 4 * H * (I + H)


def gemm_share(H: int, B: int) -> dict:
    """The compiled LSTM's rate at H x B against the machine's best float32 GEMM rate
    (torch.mm of 1024 and 2048, all threads), measured in turns round by round with
    `best_times`, with nn.LSTM's rate beside them. Measured apart, minutes from each
    other, the share moved 79-90% between runs of the same code as the host's speed
    drifted (torch_mm_2048 352-372 GFLOP/s)."""
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    torch.manual_seed(0)
    m = torch.nn.LSTM(H, H).eval()
    x = torch.randn(T, B, H)
    packed, xn = kernel.pack(torch_params_lstm(m, H)), x.numpy()
    mats = {n: (torch.randn(n, n), torch.randn(n, n)) for n in (1024, 2048)}

    def torch_lstm():
        with torch.inference_mode():
            m(x)

    fns = [lambda: kernel(xn, packed), torch_lstm]
    fns += [lambda a=a, b=b: torch.mm(a, b) for a, b in mats.values()]
    t_ours, t_torch, *t_mm = best_times(fns, repeat=7)
    flops = lstm_flops(T, B, H, H)
    mm_rates = {f"torch_mm_{n} (in turns)": 2 * n**3 / t / 1e9 for n, t in zip(mats, t_mm)}
    return {
        **mm_rates,
        f"lstmc LSTM H={H} B={B} gflops": flops / t_ours / 1e9,
        f"torch LSTM H={H} B={B} gflops": flops / t_torch / 1e9,
        "lstmc share of the best GEMM rate": flops / t_ours / 1e9 / max(mm_rates.values()),
    }


def step_gemm() -> list[dict]:
    """The step's product alone, one thread: lstmc_runtime.gemm with the weight in panels (as
    packed weights are) and row-major, against OpenBLAS's sgemm through NumPy's np.dot."""
    from lstmc_runtime.gemm import matmul_into, matmul_panels, to_panels
    from threadpoolctl import threadpool_limits

    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for m, k in ((1, 128), (16, 128), (64, 128), (1, 512), (16, 512), (64, 512)):
            n = 4 * k
            a = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((k, n)).astype(np.float32)
            panels = to_panels(w)
            out = np.empty((m, n), np.float32)
            flops = 2.0 * m * k * n
            ours = best_time(lambda: matmul_panels(a, panels, out), min_time=0.1)
            flat = best_time(lambda: matmul_into(a, w, out), min_time=0.1)
            blas = best_time(lambda: np.dot(a, w, out), min_time=0.1)
            rows.append(
                dict(
                    shape=f"[{m}, {k}] x [{k}, {n}]",
                    ours=flops / ours / 1e9,
                    flat=flops / flat / 1e9,
                    blas=flops / blas / 1e9,
                )
            )
            print(
                f"step product {rows[-1]['shape']:22s} lstmc {rows[-1]['ours']:6.1f} GFLOP/s"
                f" (row-major w {rows[-1]['flat']:6.1f})   np.dot {rows[-1]['blas']:6.1f} GFLOP/s",
                flush=True,
            )
    return rows


def elementwise_and_overhead() -> list[dict]:
    """(f) The pieces below the grid, one thread each: ns per element of float32 sigmoid and
    tanh (lstmc_runtime.vmath in an njit loop with 512-bit vectors where the CPU has them, as
    in the generated kernels; torch.sigmoid/tanh with out=; 4096 values in L1), and the time
    of a whole call with one step of one row (T=1, B=1, H=32): mostly each side's Python and
    dispatch work."""
    from lstmc_runtime import vmath
    from numba import njit

    def loop(f):
        @njit(error_model="numpy")
        def run(a, out, reps):
            vmath.wide_vectors()
            for _ in range(reps):
                for i in range(a.size):
                    out[i] = f(a[i])

        return run

    rows = []
    n, reps = 4096, 500
    a = (np.random.default_rng(0).standard_normal(n) * 4).astype(np.float32)
    out = np.empty_like(a)
    at, ot = torch.from_numpy(a), torch.from_numpy(out)
    torch.set_num_threads(1)
    try:
        for name, ours, theirs in (
            ("sigmoid", vmath.sigmoid_f32, torch.sigmoid),
            ("tanh", vmath.tanh_f32, torch.tanh),
        ):
            run = loop(ours)
            t_ours = best_time(lambda run=run: run(a, out, reps)) / reps / n
            t_torch = best_time(lambda theirs=theirs: theirs(at, out=ot)) / n
            rows.append(
                {"what": f"{name}, ns per element", "lstmc": t_ours * 1e9, "torch": t_torch * 1e9}
            )
        kernel = lstmc.compile(lstmc.builtin("lstm"))
        kernel.threads = 1
        m = torch.nn.LSTM(32, 32).eval()
        x = torch.randn(1, 1, 32)
        packed = kernel.pack(torch_params_lstm(m, 32))
        xn = x.numpy()
        with torch.inference_mode():
            t_torch = best_time(lambda: m(x))
        t_ours = best_time(lambda: kernel(xn, packed))
        rows.append(
            {"what": "lstm call, T=1 B=1 H=32, us", "lstmc": t_ours * 1e6, "torch": t_torch * 1e6}
        )
    finally:
        torch.set_num_threads(cpu_count())
    for r in rows:
        print(f"{r['what']:32s} lstmc {r['lstmc']:7.3f}   torch {r['torch']:7.3f}", flush=True)
    return rows


def two_core_scaling() -> float:
    """How much of a second core this run had: the time of one thread's product loop over
    the time of two threads each running the same loop at once (1.0: both cores free; 0.5:
    the host gave us one). A VM's host can take a vCPU away; the figure says how far to
    trust the threaded rows of a run."""
    import threading

    from lstmc_runtime.gemm import matmul_into

    rng = np.random.default_rng(0)

    def work():
        a = rng.standard_normal((16, 512)).astype(np.float32)
        w = rng.standard_normal((512, 1024)).astype(np.float32)
        out = np.empty((16, 1024), np.float32)
        return lambda: [matmul_into(a, w, out) for _ in range(100)]

    one, other = work(), work()
    one()
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        one()
        alone = time.perf_counter() - start
        helper = threading.Thread(target=other)
        start = time.perf_counter()
        helper.start()
        one()
        helper.join()
        best = max(best, alone / (time.perf_counter() - start))
    return best


def one_step(hs, bs) -> list[dict]:
    """(a) for calls of one step (T=1), as a decoder makes them: the whole call is one step's
    products, so how the cores share a step's weights decides (threads.plan_call)."""
    return grid(hs, bs, steps=1)


def grid_one_thread(hs, bs) -> list[dict]:
    """(a) again with one thread on each side: the per-core comparison, which a busy host
    (a vCPU taken away) does not distort."""
    torch.set_num_threads(1)
    try:
        return grid(hs, bs, threads=1)
    finally:
        torch.set_num_threads(cpu_count())


# -- (d) compile and load times ------------------------------------------------------------------

# A first call of tiny sizes, then one with every size 128, B=64, T=100: the tiny one runs on
# one thread, the large one splits the step's units (or the batch), through other compiled
# functions. The second time is the total, the large call's params and run (~30 ms) included.
_TIMING_CODE = textwrap.dedent("""\
    import json, sys, time
    import numpy as np
    import lstmc
    name = sys.argv[1]
    start = time.perf_counter()
    kernel = lstmc.compile(lstmc.builtin(name))
    sizes = {s: 8 for s in kernel.signature.sizes}
    params = kernel.init_params(**sizes)
    kernel(np.zeros((2, 1, sizes["input"]), np.float32), params)
    tiny = time.perf_counter() - start
    sizes = {s: 128 for s in kernel.signature.sizes}
    params = kernel.init_params(**sizes)
    kernel(np.zeros((100, 64, sizes["input"]), np.float32), params)
    print(json.dumps([tiny, time.perf_counter() - start]))
    """)


# The baseline the issue names: a plain LSTM written by hand with numba.njit(cache=True) (the
# input product hoisted, one np.dot a step, a scalar element-wise loop), timed the same way
# (the clock starts before Numba is imported, as it does before lstmc.compile imports it).
# Numba's own import, its BLAS check (scipy.linalg) and its registries are in both figures.
_PLAIN_NJIT_LSTM = textwrap.dedent("""\
    import numpy as np
    from numba import njit

    @njit(cache=True)
    def lstm(x, w_x, w_h, bias, h, c):
        T, B, _ = x.shape
        H = h.shape[1]
        y = np.empty((T, B, H), x.dtype)
        gates_x = np.dot(x.reshape(T * B, x.shape[2]), w_x).reshape(T, B, 4 * H)
        for t in range(T):
            gates = gates_x[t] + np.dot(h, w_h) + bias
            for b in range(B):
                for j in range(H):
                    i = 1 / (1 + np.exp(-gates[b, j]))
                    f = 1 / (1 + np.exp(-gates[b, H + j]))
                    g = np.tanh(gates[b, 2 * H + j])
                    o = 1 / (1 + np.exp(-gates[b, 3 * H + j]))
                    c[b, j] = f * c[b, j] + i * g
                    h[b, j] = o * np.tanh(c[b, j])
            y[t] = h
        return y
    """)

_PLAIN_TIMING_CODE = textwrap.dedent("""\
    import json, time
    import numpy as np
    start = time.perf_counter()
    from plain_njit_lstm import lstm

    def call(T, B, n):
        z = lambda *shape: np.zeros(shape, np.float32)
        lstm(z(T, B, n), z(n, 4 * n), z(n, 4 * n), z(4 * n), z(B, n), z(B, n))

    call(2, 1, 8)
    tiny = time.perf_counter() - start
    call(100, 64, 128)
    print(json.dumps([tiny, time.perf_counter() - start]))
    """)

PLAIN_NJIT_ROW = "plain njit lstm (Numba alone)"


def _cold_then_warm(args, env, cwd=None) -> list:
    times = []
    for _ in range(2):  # cold (empty cache), then warm (cached)
        out = subprocess.run(
            [sys.executable, "-c", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return times


def compile_times(names) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LSTMC_CACHE_DIR": cache}
        plain = Path(cache) / "plain"
        plain.mkdir()
        (plain / "plain_njit_lstm.py").write_text(_PLAIN_NJIT_LSTM)
        jobs = [(name, [_TIMING_CODE, name], env, None) for name in names]
        # lstmc's runs keep Numba's cache where it is: there lstmc_runtime's own functions
        # are cached already (by the runs before (d)), and "cold" means lstmc's cache empty
        plain_env = {**env, "NUMBA_CACHE_DIR": str(plain / "cache")}
        jobs.append((PLAIN_NJIT_ROW, [_PLAIN_TIMING_CODE], plain_env, plain))
        for name, args, job_env, cwd in jobs:
            times = _cold_then_warm(args, job_env, cwd)
            (cold, cold_all), (warm, warm_all) = times
            rows.append(
                dict(cell=name, cold_s=cold, warm_s=warm, cold_all_s=cold_all, warm_all_s=warm_all)
            )
            print(
                f"{name:29s} cold compile {cold:6.2f} s   warm load {warm:5.2f} s   "
                f"with a large call: cold {cold_all:6.2f} s, warm {warm_all:5.2f} s",
                flush=True,
            )
    return rows


# -- report ----------------------------------------------------------------------------------------


def blas_report() -> str:
    lines = []
    for info in threadpool_info():
        lines.append(
            f"{info['internal_api']} {info.get('version', '')} "
            f"{info.get('architecture', '')} threads={info['num_threads']} "
            f"({Path(info['filepath']).name})"
            + (
                "  <- SciPy's: what Numba's np.dot calls"
                if "scipy.libs" in info["filepath"]
                else ""
            )
        )
    cfg = torch.__config__.show()
    keys = ("CPU capability usage", "BLAS_INFO", "USE_MKLDNN")
    found = [m.group(0) for k in keys for m in [re.search(rf"{k}[=:]\s*[\w.]+", cfg)] if m]
    lines.append("torch: " + ", ".join(found) + " (nn.LSTM inference runs oneDNN's fused LSTM)")
    from lstmc_runtime.layout import VECTOR_BYTES

    isa = "AVX-512" if VECTOR_BYTES == 64 else "AVX2"
    lines.append(
        f"lstmc: every product in lstmc_runtime.gemm (register-blocked {isa} kernel, LLVM IR); "
        "OpenBLAS only in the 'np.dot' column of the step-product table"
    )
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo and the one LLVM compiles for: "AMD EPYC,
    znver3". A VM's model name can be as vague as "AMD EPYC" for a Zen 3 and a Zen 4, whose
    kernels differ (AVX2 against AVX-512); LLVM's name tells them apart."""
    from lstmc_runtime.layout import CPU_NAME

    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {CPU_NAME}"


def cpu_slug(model: str) -> str:
    """A file-name form of a CPU model: "AMD EPYC" -> "amd-epyc"."""
    words = re.sub(r"\(r\)|\(tm\)", "", model.lower())
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "cpu"


def _with_block(text: str, section: str, model: str, chart: str) -> str:
    """RESULTS.md's `text` with `section` in place of this CPU model's block (its chart, if
    under another name, deleted), else after the last other CPU's block, else at the end."""
    name = model.rsplit(", ", 1)[0]  # blocks written before the LLVM name was in the key
    for start, end in (
        (f"<!-- CPU results ({model})", f"<!-- end CPU results ({model}) -->"),
        (f"<!-- CPU results ({name})", f"<!-- end CPU results ({name}) -->"),
        ("<!-- CPU results: ", "<!-- end CPU results -->"),  # one block for every CPU, once
    ):
        if start in text and end in text:
            i = text.index(start)
            j = text.index(end) + len(end)
            for stale in re.findall(r"\]\((cpu_ratios[\w.-]*\.png)\)", text[i:j]):
                if stale != chart:
                    (HERE / stale).unlink(missing_ok=True)
            return text[:i] + section + text[j:]
    if "<!-- end CPU results" in text:  # another CPU's tables: this one's after them
        i = text.index("-->", text.rindex("<!-- end CPU results")) + 3
        return text[:i] + "\n\n" + section + text[i:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def write_results(
    grid_rows,
    var_rows,
    gemm,
    util,
    compile_rows,
    blas: str,
    threads: int,
    ablation_rows=(),
    one_thread_rows=(),
    step_rows=(),
    scaling=(),
    small_rows=(),
    one_step_rows=(),
) -> Path:
    """Write this CPU's block of RESULTS.md and its chart; return the chart's path."""
    date = datetime.date.today().isoformat()
    model = cpu_model()
    slug = cpu_slug(model)
    chart = f"cpu_ratios_{slug}.png"
    md = [
        f"<!-- CPU results ({model}): written by benchmarks/cpu.py on {date} -->",
        f"## CPU ({date}, {model}, {threads} threads, T={T}, float32)",
        "",
        "Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cpu.py`",
        "",
        "GEMM libraries each side ran:",
        "",
        "```",
        blas,
        "```",
        "",
        "Two-core scaling at the start and the end of the run (1.00: both cores were ours; "
        "0.5: the host gave one away): " + " / ".join(f"{v:.2f}" for v in scaling),
        "",
        "### (a) lstmc vs torch.nn.LSTM / nn.GRU (speedup = torch time / lstmc time)",
        "",
        "| cell | H | B | torch ms | lstmc ms | speedup | max abs diff | lstmc threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in grid_rows:
        md.append(
            f"| {r['cell']} | {r['H']} | {r['B']} | {r['torch_ms']:.3f} | "
            f"{r['lstmc_ms']:.3f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | "
            f"{r['plan']} |"
        )
    if one_thread_rows:
        md += [
            "",
            "### (a1) the same, one thread on each side",
            "",
            "| cell | H | B | torch ms | lstmc ms | speedup |",
            "|---|---|---|---|---|---|",
        ]
        for r in one_thread_rows:
            md.append(
                f"| {r['cell']} | {r['H']} | {r['B']} | {r['torch_ms']:.3f} | "
                f"{r['lstmc_ms']:.3f} | {r['speedup']:.2f}x |"
            )
    if one_step_rows:
        md += [
            "",
            "### (a2) one step a call (T=1, a decoder's calls), both sides on all threads",
            "",
            "| cell | H | B | torch ms | lstmc ms | speedup | lstmc threads |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in one_step_rows:
            md.append(
                f"| {r['cell']} | {r['H']} | {r['B']} | {r['torch_ms']:.3f} | "
                f"{r['lstmc_ms']:.3f} | {r['speedup']:.2f}x | {r['plan']} |"
            )
    md += [
        "",
        "### (b) variants vs the compiled plain LSTM and an eager PyTorch loop",
        "",
        "Max abs error of y over the T=100 steps against the same eager loop in float64, for",
        "lstmc (float32) and for the eager loop itself (float32):",
        "",
        "| cell | H | B | lstmc ms | plain LSTM ms | time vs plain | eager torch ms | "
        "speedup vs eager | lstmc error | eager error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in var_rows:
        md.append(
            f"| {r['cell']} | {r['H']} | {r['B']} | {r['lstmc_ms']:.3f} | "
            f"{r['plain_lstm_ms']:.3f} | {r['vs_plain']:.2f}x | {r['eager_ms']:.2f} | "
            f"{r['vs_eager']:.1f}x | {r['lstmc_err']:.1e} | {r['eager_err']:.1e} |"
        )
    md += [
        "",
        "### (c) GEMM throughput (GFLOP/s, float32)",
        "",
        "The share: the compiled LSTM's rate over the best torch.mm rate, the two timed in "
        "turns, round by round (`gemm_share`).",
        "",
        "| measure | GFLOP/s |",
        "|---|---|",
    ]
    for k, v in gemm.items():
        md.append(f"| {k} | {v:.1f} |")
    for k, v in util.items():
        md.append(f"| {k} | {v:.0%} |" if "share" in k else f"| {k} | {v:.1f} |")
    if step_rows:
        md += [
            "",
            "Step products alone, one thread (GFLOP/s): lstmc_runtime.gemm with w in panels "
            "(as `kernel.pack` lays it out) and row-major, against OpenBLAS `np.dot`",
            "",
            "| a x w | lstmc (panels) | lstmc (row-major w) | np.dot |",
            "|---|---|---|---|",
        ]
        for r in step_rows:
            md.append(f"| {r['shape']} | {r['ours']:.1f} | {r['flat']:.1f} | {r['blas']:.1f} |")
    md += [
        "",
        "### (d) compile time (fresh process, empty cache) and warm load (cached)",
        "",
        "Each in a fresh process: import, `lstmc.compile` and a first call of tiny sizes (T=2,",
        "B=1, every size 8: one thread); then, in the same process, a call with every size 128,",
        "B=64, T=100, which splits the work across threads through other compiled functions",
        "(+ large: the total of both, the large call's own ~30 ms included). The last row is",
        "the issue's baseline, a plain LSTM written with `numba.njit(cache=True)` and timed the",
        "same way: what Numba alone costs on this machine.",
        "",
        "| cell | cold s | warm s | cold s, + large | warm s, + large |",
        "|---|---|---|---|---|",
    ]
    for r in compile_rows:
        md.append(
            f"| {r['cell']} | {r['cold_s']:.2f} | {r['warm_s']:.2f} "
            f"| {r['cold_all_s']:.2f} | {r['warm_all_s']:.2f} |"
        )
    if ablation_rows:
        md += [
            "",
            "### (e) what each step bought (lstm, float32)",
            "",
            "| configuration | H | B | ms | threads used |",
            "|---|---|---|---|---|",
        ]
        for r in ablation_rows:
            md.append(f"| {r['step']} | {r['H']} | {r['B']} | {r['ms']:.3f} | {r['mode']} |")
    if small_rows:
        md += [
            "",
            "### (f) element-wise functions and the cost of a call (one thread each)",
            "",
            "| measure | lstmc | torch |",
            "|---|---|---|",
        ]
        for r in small_rows:
            md.append(f"| {r['what']} | {r['lstmc']:.3f} | {r['torch']:.3f} |")
    md += ["", f"![speedup per size]({chart})", "", f"<!-- end CPU results ({model}) -->"]
    section = "\n".join(md)
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    path.write_text(_with_block(old, section, model, chart))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, cell in zip(axes, ("lstm", "gru")):
            rows = [r for r in grid_rows if r["cell"] == cell]
            hs = sorted({r["H"] for r in rows})
            bs = sorted({r["B"] for r in rows})
            width = 0.8 / len(bs)
            for k, B in enumerate(bs):
                vals = [next(r["speedup"] for r in rows if r["H"] == H and r["B"] == B) for H in hs]
                ax.bar(np.arange(len(hs)) + k * width, vals, width, label=f"B={B}")
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(hs)) + width * (len(bs) - 1) / 2, [f"H={h}" for h in hs])
            ax.set_title(f"{cell}: torch time / lstmc time (T={T}, float32)")
            ax.legend()
        axes[0].set_ylabel("speedup over PyTorch (>1: lstmc faster)")
        fig.tight_layout()
        fig.savefig(HERE / chart, dpi=100)
    except ImportError:
        print("matplotlib missing: no chart written")
    return HERE / chart


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller grid, for a smoke run")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    threads = cpu_count()
    torch.set_num_threads(threads)
    hs, bs = ((32, 128), (1, 16)) if args.quick else ((32, 128, 512), (1, 16, 64))
    # Load the BLAS that Numba's np.dot calls (SciPy's OpenBLAS) before listing the libraries.
    warm = lstmc.compile(lstmc.builtin("lstm"))
    warm(np.zeros((2, 1, 8), np.float32), warm.init_params(input=8, hidden=8))
    blas = blas_report()
    print(blas, flush=True)
    scaling = [two_core_scaling()]
    print(f"two-core scaling: {scaling[0]:.2f}", flush=True)
    grid_rows = grid(hs, bs)
    one_thread_rows = grid_one_thread(hs, bs)
    one_step_rows = one_step((128, 512), (1, 64))
    var_rows = variants((64, 128) if args.quick else (64, 128, 256), B=16)
    gemm = gemm_throughput()
    step_rows = step_gemm()
    util = gemm_share(max(hs), max(bs))
    for k, v in util.items():
        print(f"{k}: {v:.2f}", flush=True)
    ablation_rows = ablation(128 if args.quick else 256, 16)
    small_rows = elementwise_and_overhead()
    compile_rows = compile_times(lstmc.cells.names())
    scaling.append(two_core_scaling())
    print(f"two-core scaling at the end: {scaling[1]:.2f}", flush=True)
    if not args.no_write:
        chart = write_results(
            grid_rows,
            var_rows,
            gemm,
            util,
            compile_rows,
            blas,
            threads,
            ablation_rows,
            one_thread_rows,
            step_rows,
            scaling,
            small_rows,
            one_step_rows,
        )
        print(f"wrote {HERE / 'RESULTS.md'} and {chart}")


if __name__ == "__main__":
    main()
