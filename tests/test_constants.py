"""Constants that are, or fold to, inf or NaN: the generated module writes them as np.inf and
np.nan (they have no Python literal), and the kernel gives the interpreter's result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lstmc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_both(cell, opt, constants=None):
    kernel = lstmc.compile(cell, opt=opt, dtype="float64", constants=constants)
    rng = np.random.default_rng(0)
    params = kernel.init_params(input=3, hidden=5, seed=1)
    x = rng.standard_normal((4, 2, 3)) * 20  # large enough that a finite clip would bite
    y, _ = kernel(x, params)
    y_ref, _ = lstmc.interpret(cell, x, params, constants=constants)
    if isinstance(y_ref, dict):  # several outputs: all of them
        return (np.concatenate([d[k] for k in sorted(d)], axis=-1) for d in (y, y_ref))
    return y, y_ref


@pytest.mark.parametrize("opt", [0, 2])
@pytest.mark.parametrize("value", [float("inf"), "1e400"])
def test_an_infinite_clip_turns_the_clip_off(opt, value):
    cell = lstmc.load(EXAMPLES / "custom_cell" / "clipped_cifg.yaml")
    y, y_ref = _run_both(cell, opt, {"cell_clip": value})
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    clipped, _ = _run_both(cell, opt, {"cell_clip": 0.5})
    assert np.abs(y - clipped).max() > 1e-3  # the clip did bite at 0.5, and not at inf


# -O1 folds as -O2 does; each case compiles a kernel (seconds), so not every pair is run
@pytest.mark.parametrize("opt", [0, 2])
@pytest.mark.parametrize("term", ["log(0) * 0", "-exp(1000) * 1", "exp(1000) - exp(1000)"])
def test_constants_that_fold_to_inf_or_nan(opt, term):
    """NaN in, NaN out: a constant term that folds to NaN or -inf makes every element NaN or
    -inf, in the kernel as in the interpreter, at every opt level."""
    text = lstmc.builtin("lstm").source.replace(
        "c_next: f * c + i * g", f"c_next: f * c + i * g + {term}"
    )
    cell = lstmc.loads(text)
    y, y_ref = _run_both(cell, opt)
    assert not np.isfinite(y_ref).any() or term == "-exp(1000) * 1"
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_allclose(y[~np.isnan(y)], y_ref[~np.isnan(y_ref)], rtol=1e-12)
