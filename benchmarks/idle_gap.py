"""Calls that come after an idle gap, lstmc side by side with torch.nn.LSTM, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/idle_gap.py [--passive]

The grid in cpu.py times calls back to back, with every core awake. A model that calls an
RNN now and then (between data loading, other layers, logging) meets cores that have gone
idle. This script sleeps `gap` before each call and reports the median call time, for torch
and for lstmc planned three ways (as planned, the batch split, one thread), float32, T=100.
With --passive it re-runs itself with OMP_WAIT_POLICY=PASSIVE set before torch is imported
(libgomp's threads then sleep at once after each parallel region instead of spinning).
Prints a markdown table; benchmarks/RESULTS.md keeps the last one.
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
from cpu import torch_params_lstm  # noqa: E402  (the benchmark folder is not a package)

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


def measure() -> list[dict]:
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    rows = []
    for H, B in SIZES:
        torch.manual_seed(0)
        module = torch.nn.LSTM(H, H).eval()
        x = torch.randn(T, B, H)
        xn = x.numpy()
        packed = kernel.pack(torch_params_lstm(module, H))
        for gap in GAPS_MS:
            row = {"H": H, "B": B, "gap_ms": gap}
            with torch.inference_mode():
                row["torch"] = median_after_gap(lambda: module(x), gap / 1e3)
            for name, split, threads in (
                ("lstmc", None, None),
                ("lstmc batch", "batch", None),
                ("lstmc 1 thread", None, 1),
            ):
                kernel.split, kernel.threads = split, threads
                row[name] = median_after_gap(lambda: kernel(xn, packed), gap / 1e3)
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
        "| H | B | gap (ms) | torch (ms) | lstmc (ms) | plan | batch split | one thread |"
        " torch / lstmc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['H']} | {r['B']} | {r['gap_ms']} | {r['torch']:.2f} | {r['lstmc']:.2f} |"
            f" {r['plan']} | {r['lstmc batch']:.2f} | {r['lstmc 1 thread']:.2f} |"
            f" {r['torch'] / r['lstmc']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passive", action="store_true", help="also with OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        table(
            measure(),
            f"Median call time after sleeping `gap` before each call (lstm, float32, T={T},"
            f" {torch.get_num_threads()} threads each side, OMP_WAIT_POLICY={policy})",
        ),
        flush=True,
    )
    if args.passive and not args.child:
        print()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        subprocess.run([sys.executable, __file__, "--child"], env=env, check=True)


if __name__ == "__main__":
    main()
