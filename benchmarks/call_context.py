"""Calls in the context a model gives them, lstmc side by side with torch.nn.LSTM, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/call_context.py \
        [--env NAME=VALUE ...]

The grid in cpu.py times calls back to back, every core awake and nothing else running. In a
model, calls come (1) after idle gaps (data loading, logging) and (2) right after torch ops,
whose OpenMP threads keep spinning for a while after each one (libgomp's default). Table 1
sleeps `gap` before each call and reports the median call time, for torch and for lstmc
planned three ways (as planned, the batch split, one thread); table 2 times each side alone
and lstmc right after an nn.LSTM call. lstm, float32, T=100. Each --env re-runs the script in a
fresh process with that variable set before torch is imported (e.g. GOMP_SPINCOUNT=10000,
OMP_WAIT_POLICY=PASSIVE). Prints markdown tables; benchmarks/RESULTS.md keeps the last ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

import lstmc

sys.path.insert(0, os.path.dirname(__file__))
from cpu import torch_params_lstm  # the benchmark folder is not a package

T = 100
SIZES = ((32, 64), (128, 16), (128, 64))
GAPS_MS = (0, 2, 10, 100)


def median_after_gap(fn, gap_s: float, calls: int = 11) -> float:
    """Median time of `fn` in ms, each call after sleeping gap_s (one call first, untimed)."""
    fn()
    times = []
    for _ in range(calls):
        time.sleep(gap_s)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def cases():
    """(H, B, kernel, nn.LSTM, x as a tensor, x as an array, the packed params) per size."""
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    for H, B in SIZES:
        torch.manual_seed(0)
        module = torch.nn.LSTM(H, H).eval()
        x = torch.randn(T, B, H)
        yield H, B, kernel, module, x, x.numpy(), kernel.pack(torch_params_lstm(module, H))


def measure() -> list[dict]:
    rows = []
    for H, B, kernel, module, x, xn, packed in cases():
        for gap in GAPS_MS:
            row = {"H": H, "B": B, "gap_ms": gap}
            with torch.inference_mode():
                row["torch"] = median_after_gap(lambda m=module, a=x: m(a), gap / 1e3)
            for name, split, threads in (
                ("lstmc", None, None),
                ("lstmc batch", "batch", None),
                ("lstmc 1 thread", None, 1),
            ):
                kernel.split, kernel.threads = split, threads
                row[name] = median_after_gap(lambda k=kernel, a=xn, p=packed: k(a, p), gap / 1e3)
                if split is None and threads is None:
                    row["plan"] = f"{kernel.last_plan.mode} x{kernel.last_plan.threads}"
            kernel.split, kernel.threads = None, None
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], title: str) -> str:
    lines = [
        title,
        "",
        (
            "| H | B | gap (ms) | torch (ms) | lstmc (ms) | plan | batch split | one thread |"
            " torch / lstmc |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['H']} | {r['B']} | {r['gap_ms']} | {r['torch']:.2f} | {r['lstmc']:.2f} |"
            f" {r['plan']} | {r['lstmc batch']:.2f} | {r['lstmc 1 thread']:.2f} |"
            f" {r['torch'] / r['lstmc']:.2f}x |"
        )
    return "\n".join(lines)


def after_torch() -> list[dict]:
    """Each side alone, back to back, and lstmc right after an nn.LSTM call (median ms)."""
    rows = []
    for H, B, kernel, module, x, xn, packed in cases():
        with torch.inference_mode():
            row = {"H": H, "B": B, "torch": median_after_gap(lambda m=module, a=x: m(a), 0.0)}
            row["lstmc"] = median_after_gap(lambda k=kernel, a=xn, p=packed: k(a, p), 0.0)
            times = []
            for _ in range(11):
                module(x)
                start = time.perf_counter()
                kernel(xn, packed)
                times.append(time.perf_counter() - start)
            row["after"] = float(np.median(times)) * 1e3
        rows.append(row)
    return rows


def after_torch_table(rows: list[dict], title: str) -> str:
    lines = [
        title,
        "",
        "| H | B | torch (ms) | lstmc (ms) | lstmc right after nn.LSTM (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['H']} | {r['B']} | {r['torch']:.2f} | {r['lstmc']:.2f} | {r['after']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also run in a fresh process with this environment variable (repeatable)",
    )
    args = ap.parse_args()
    setting = ", ".join(
        f"{name}={os.environ.get(name, 'unset')}"
        for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LSTMC_SPIN_US")
    )
    where = f"lstm, float32, T={T}, {torch.get_num_threads()} threads each side, {setting}"
    print(table(measure(), f"Median call time after sleeping `gap` before each call ({where})"))
    print()
    print(after_torch_table(after_torch(), f"Calls right after a torch op ({where})"), flush=True)
    for assignment in args.env:
        name, _, value = assignment.partition("=")
        print()
        subprocess.run([sys.executable, __file__], env={**os.environ, name: value}, check=True)


if __name__ == "__main__":
    main()
