"""A first look at the CUDA target on a real GPU, before the test suite and the benchmark.

    python benchmarks/gpu_smoke.py

For a few shipped cells, both dtypes and both variants at a moderate size: the largest error
against the float64 interpreter (as max |kernel - ref| / (1 + |ref|), the tests' measure), the
persistent kernel's grid (blocks, threads, shared bytes) and the time of a warm call. Each case
runs on its own, so one that fails still lets the others report. Exits 1 if any case failed or
missed the tests' tolerance (float32 1e-3, float64 1e-10: tests/cuda_kernels/cuda_helpers.py).
"""

from __future__ import annotations

import sys
import time
import traceback

import numpy as np

TOL = {"float32": 1e-3, "float64": 1e-10}
# one cell of each kind of step: one launch (lstm, gru), two launches (gru_cho, lstmp), a
# layer norm (layernorm_lstm); the test suite covers every cell
CASES = (
    ("lstm", "float32"),
    ("lstm", "float64"),
    ("gru", "float32"),
    ("gru_cho", "float32"),
    ("lstmp", "float32"),
    ("layernorm_lstm", "float64"),
)


def _error(got, ref) -> float:
    got = np.asarray(got.copy_to_host() if hasattr(got, "copy_to_host") else got, np.float64)
    ref = np.asarray(ref, np.float64)
    same_nan = np.isnan(got) & np.isnan(ref)
    diff = np.where(same_nan, 0.0, np.abs(got - ref) / (1.0 + np.abs(ref)))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0


def _worst(y, s, y_ref, s_ref) -> float:
    ys = y if isinstance(y, dict) else {"y": y}
    refs = y_ref if isinstance(y_ref, dict) else {"y": y_ref}
    errs = [_error(ys[k], refs[k]) for k in refs] + [_error(s[k], s_ref[k]) for k in s_ref]
    return max(errs)


def case(name: str, dtype: str, sizes: dict, T: int, B: int) -> bool:
    import lstmc

    cell = lstmc.builtin(name)
    t0 = time.perf_counter()
    kernel = lstmc.compile(cell, target="cuda", dtype=dtype)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    params = kernel.init_params(seed=0, **{s: sizes[s] for s in cell.sizes})
    packed = kernel.pack(params)
    n_in = kernel.signature.input.concrete(packed.sizes)[0]
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    state = {
        s.name: rng.standard_normal((B, s.concrete(packed.sizes)[0])).astype(dtype)
        for s in kernel.signature.state
    }
    wide = {k: v.astype(np.float64) for k, v in params.items()}
    y_ref, s_ref = lstmc.interpret(
        cell, x.astype(np.float64), wide, {k: v.astype(np.float64) for k, v in state.items()}
    )
    ok = True
    for variant in ("stepwise", "persistent"):
        label = f"{name:15} {dtype} T={T} B={B} {variant:10}"
        try:
            t1 = time.perf_counter()
            y, s = kernel(x, packed, state, variant=variant)
            first_s = time.perf_counter() - t1
            err = _worst(y, s, y_ref, s_ref)
            t1 = time.perf_counter()
            for _ in range(3):
                kernel(x, packed, state, variant=variant)
            warm_ms = (time.perf_counter() - t1) / 3 * 1e3
            extra = f"  grid {kernel.last_grid}" if variant == "persistent" else ""
            good = err <= TOL[dtype]
            ok &= good
            print(
                f"{label} err {err:.2e} {'ok' if good else 'BAD'}  compile {compile_s:5.1f} s  "
                f"first call {first_s:5.2f} s  warm {warm_ms:8.3f} ms (host copies in)"
                f"{extra}",
                flush=True,
            )
        except Exception:  # noqa: BLE001 - report and go on
            ok = False
            print(f"{label} FAILED\n{traceback.format_exc()}", flush=True)
    return ok


def main() -> int:
    from lstmc_runtime.cuda_launch import device_limits

    print(device_limits(), flush=True)
    ok = True
    for name, dtype in CASES:
        try:
            ok &= case(name, dtype, {"input": 96, "hidden": 256, "proj": 128}, 20, 8)
        except Exception:  # noqa: BLE001
            ok = False
            print(f"{name} {dtype}: FAILED\n{traceback.format_exc()}", flush=True)
    # a batch too large for one block's rows, and a hidden size whose weights need many SMs
    try:
        ok &= case("lstm", "float32", {"input": 1024, "hidden": 1024}, 10, 64)
    except Exception:  # noqa: BLE001
        ok = False
        print(f"lstm H=1024: FAILED\n{traceback.format_exc()}", flush=True)
    print("smoke:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
