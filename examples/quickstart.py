"""Quickstart: compile a shipped cell, run it, and check it against the reference interpreter.

    python examples/quickstart.py

The same from a shell: `lstmc run lstm --T 20 --B 3 --size input=8 --size hidden=16`.
"""

from __future__ import annotations

import numpy as np

import lstmc


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)))


def main() -> int:
    cell = lstmc.builtin("lstm")  # or lstmc.load("my_cell.yaml")
    print(f"{cell.name}: {cell.summary()}")

    # Compile for the CPU (float32 like PyTorch; -O2 by default). The first compile of a spec
    # takes a few seconds (Numba); later processes load the kernel from the on-disk cache.
    kernel = lstmc.compile(cell, target="cpu", dtype="float32")
    params = kernel.init_params(input=8, hidden=16, seed=0)  # {name: array}, PyTorch's init
    x = np.random.default_rng(0).standard_normal((20, 3, 8)).astype(np.float32)  # [T, B, input]

    y, state = kernel(x, params)  # y: [T, B, hidden]; state: {"h": [B, hidden], "c": ...}
    print(f"y {y.shape}, state {{{', '.join(f'{k}: {v.shape}' for k, v in state.items())}}}")

    # The interpreter runs the same IR in float64: the oracle every kernel is tested against.
    y_ref, state_ref = lstmc.interpret(cell, x.astype(np.float64), params)
    errors = {"y": max_err(y, y_ref)} | {k: max_err(state[k], state_ref[k]) for k in state}
    for name, err in errors.items():
        print(f"  max |kernel - interpreter| {name:<2} {err:.2e}")

    # Sequences can be run in pieces: pass the state on. Pack the params once to reuse them.
    packed = kernel.pack(params)
    y1, s1 = kernel(x[:12], packed)
    y2, s2 = kernel(x[12:], packed, state=s1)
    split = max(max_err(np.concatenate([y1, y2]), y), *(max_err(s2[k], state[k]) for k in s2))
    print(f"  in two pieces vs in one: {split:.2e}")

    worst = max(*errors.values(), split)
    if worst > 1e-4:  # float32: eps 1.2e-7, accumulated over 20 steps
        print(f"FAILED: error {worst:.2e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
