"""A cell written from scratch, compiled with the `lstmc` command line, used from its artifact.

    python examples/custom_cell/main.py [BUILD_DIR]

1. `lstmc check` validates clipped_cifg.yaml (beside this file).
2. `lstmc compile` writes BUILD_DIR/clipped_cifg.py, a module that imports only numpy, numba
   and lstmc_runtime, with the constant cell_clip overridden to 1.0 at compile time.
3. This script imports that module like any other, runs it on inputs large enough for the clip
   to matter, and compares it with the reference interpreter (same constant override).

Without BUILD_DIR the module goes to a temporary directory, removed at the end.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import lstmc

HERE = Path(__file__).resolve().parent
SPEC = HERE / "clipped_cifg.yaml"
CELL_CLIP = 1.0
TOL = 1e-4  # float32 kernel against the float64 interpreter, relative to max(1, max |ref|)


def lstmc_cli(*args: str) -> None:
    """Run `lstmc ARGS` as a user would from a shell (`python -m lstmc` is the same program)."""
    print("$ lstmc", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "lstmc", *args], check=True)


def main(build: Path) -> int:
    lstmc_cli("check", str(SPEC))
    lstmc_cli("compile", str(SPEC), "-o", str(build), "--const", f"cell_clip={CELL_CLIP}")

    sys.path.insert(0, str(build))
    artifact = importlib.import_module("clipped_cifg")  # the written module, nothing else
    kernel = artifact.kernel
    print(f"\nimported {artifact.__file__}: {kernel!r}")

    rng = np.random.default_rng(0)
    params = kernel.init_params(input=8, hidden=16, seed=1)
    x = (3.0 * rng.standard_normal((40, 4, 8))).astype(np.float32)  # big inputs: c hits the clip
    y, state = artifact.clipped_cifg(x, params)  # y is a dict: the cell lists two outputs

    cell = lstmc.load(SPEC)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    y_ref, state_ref = lstmc.interpret(
        cell, x.astype(np.float64), params64, constants={"cell_clip": CELL_CLIP}
    )

    worst = 0.0
    pairs = [(f"y[{k!r}]", y[k], y_ref[k]) for k in y_ref]
    pairs += [(f"state[{k!r}]", state[k], state_ref[k]) for k in state_ref]
    for name, got, ref in pairs:
        err = float(np.max(np.abs(got - ref)))
        worst = max(worst, err / max(1.0, float(np.max(np.abs(ref)))))
        print(f"  {name:<16} max |kernel - interpreter| = {err:.2e}")
    # h = tanh(c), so |h| = tanh(cell_clip) wherever the clip was active.
    clipped = np.isclose(np.abs(y["h_next"]), np.tanh(CELL_CLIP), rtol=0, atol=1e-6)
    print(f"  the clip held c at +-{CELL_CLIP} in {clipped.mean():.0%} of all (t, b, unit)")
    print(f"  mean forget gate {np.mean(y['f']):.3f}")
    if not worst <= TOL:
        print(f"FAILED: error {worst:.2e} above {TOL}")
        return 1
    print(f"ok: the artifact matches the interpreter (within {TOL} relative)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(Path(sys.argv[1])))
    tmp = Path(tempfile.mkdtemp(prefix="lstmc-custom-cell-"))
    try:
        sys.exit(main(tmp / "build"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
