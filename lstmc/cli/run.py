"""`lstmc run`: the kernel against the reference interpreter on random data."""

from __future__ import annotations

import math

import click

from lstmc.cli.common import TOLERANCE, compile_kernel, load_cell
from lstmc.cli.data import data_sizes, random_inputs
from lstmc.cli.options import data_options, example, verbosity
from lstmc.cli.output import progress, say


def _compare(got, ref) -> tuple[float, float, int, int]:
    """(max |got - ref| and max |ref| over the places where both are finite, the number of
    places where both hold the same NaN or infinity, the number where only one is finite or
    they are different non-finite values). NaN in, NaN out is agreement, not an error."""
    import numpy as np

    finite = np.isfinite(got) & np.isfinite(ref)
    alike = (np.isnan(got) & np.isnan(ref)) | (np.isinf(ref) & (got == ref))
    err = float(np.max(np.abs(got[finite] - ref[finite]))) if finite.any() else 0.0
    biggest = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
    return err, biggest, int(alike.sum()), int((~finite & ~alike).sum())


def _as_dict(y, names) -> dict:
    return dict(y) if isinstance(y, dict) else {names[0]: y}


@click.command(
    "run",
    epilog=example(
        "lstmc run lstm.yaml --target cpu --T 50 --B 4 --size input=16 --size hidden=32",
        "lstmc run gru --dtype float64 -O0 --seed 3",
    ),
)
@data_options(
    T=50,
    B=4,
    size_help="A size of the random data, e.g. --size hidden=32 (repeatable; unset sizes are 16).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=None,
    help="Tolerance relative to max(1, max |y|) [float32: 1e-4, float64: 1e-10].",
)
@verbosity
def run_cmd(spec, target, T, B, sizes, dtype, opt, unroll, constants, seed, tol):
    """Run SPEC's kernel and the reference interpreter on the same random data.

    Prints the max abs error of every output and final state. Exits 1 when an error exceeds
    the tolerance: TOL * max(1, max |reference|) per array, with TOL 1e-4 for float32 (eps is
    1.2e-7; long or expanding sequences accumulate more) and 1e-10 for float64. The start
    state is random, not zero, so the state inputs are checked too.
    """
    import numpy as np

    import lstmc

    cell = load_cell(spec)
    sizes = data_sizes(cell, sizes, 16)
    if tol is not None and math.isnan(tol):  # (FloatRange lets NaN through: no order)
        raise click.BadParameter("must be a number >= 0, not NaN", param_hint="'--tol'")
    tol = TOLERANCE[dtype] if tol is None else tol
    kernel = compile_kernel(cell, target, dtype, opt, unroll, constants)
    x, params, state = random_inputs(kernel, sizes, T, B, seed, dtype)
    with progress(f"compiling {cell.name} ({target}, {dtype}) with Numba"):
        y, final = kernel(x, params, state)
    f64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    s64 = {k: np.asarray(v, np.float64) for k, v in state.items()}
    y_ref, final_ref = lstmc.interpret(cell, np.asarray(x, np.float64), f64, s64, constants)

    dims = " ".join(f"{k}={v}" for k, v in sizes.items())
    say(f"{cell.name}: {target}, {dtype}, -O{opt}; T={T} B={B} {dims}; seed {seed}")
    rows = [
        ("output", k, v, _as_dict(y_ref, kernel.output_names)[k])
        for k, v in _as_dict(y, kernel.output_names).items()
    ]
    rows += [("state", k, np.asarray(final[k]), final_ref[k]) for k in final_ref]
    worst = 0.0
    width = max(len(k) for _, k, _, _ in rows)
    for kind, name, got, ref in rows:
        got = np.asarray(got, np.float64)
        err, biggest, same, apart = _compare(got, ref)
        rel = err / max(1.0, biggest) if not apart else math.inf  # NaN/inf on one side: failed
        worst = max(worst, rel)
        note = f"; NaN or inf at the same {same} place(s) in both" if same else ""
        if apart:
            note += f"; NaN or inf on one side only at {apart} place(s)"
        say(f"  {kind:<7}{name:<{width}}  max |err| {err:.3g}  (max |ref| {biggest:.3g}){note}")
    if worst <= tol:
        say(f"ok: every error within {tol:g} x max(1, max |ref|)")
        return
    click.echo(
        f"FAILED: an error of {worst:.3g} x max(1, max |ref|) exceeds the {dtype} "
        f"tolerance {tol:g}",
        err=True,
    )
    raise click.exceptions.Exit(1)
