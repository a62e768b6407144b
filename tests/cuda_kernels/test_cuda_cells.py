"""Every shipped cell, on both CUDA variants and both dtypes, against the interpreter."""

import numpy as np
import pytest
from cuda_helpers import (
    DTYPES,
    SIMULATOR,
    VARIANTS,
    B,
    T,
    check,
    compiled,
    data,
    reference,
    sizes_of,
)

import lstmc

CELLS = lstmc.cells.names()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CELLS)
def test_shipped_cell_matches_the_interpreter(name, dtype):
    cell = lstmc.builtin(name)
    kernel = compiled(name, dtype)
    sizes = sizes_of(cell)
    x, params, state = data(kernel, sizes, T, B, seed=3)
    y_ref, s_ref = reference(cell, x, params, state)
    packed = kernel.pack(params)
    for variant in VARIANTS:
        y, s = kernel(x, packed, state, variant=variant)
        assert kernel.last_variant == variant
        assert isinstance(y, np.ndarray) and y.dtype == kernel.dtype
        check(y, s, y_ref, s_ref, dtype, f"{name} {variant}")
    # auto: the persistent kernel, since these weights fit in shared memory
    y, s = kernel(x, packed, state)
    assert kernel.last_variant == "persistent"
    check(y, s, y_ref, s_ref, dtype, f"{name} auto")


@pytest.mark.parametrize("name", ["lstm", "gru_cho", "layernorm_lstm", "lstmp"])
def test_zero_state_and_other_opt_levels(name):
    """From the zero state, at -O0 (nothing hoisted or fused: products of x inside the step,
    every product its own launch), -O1 and -O3."""
    cell = lstmc.builtin(name)
    for opt in (0, 1, 3):
        kernel = compiled(name, "float64", opt=opt)
        x, params, _ = data(kernel, sizes_of(cell), T, B, seed=opt, zero_state=True)
        y_ref, s_ref = reference(cell, x, params)
        for variant in VARIANTS:
            y, s = kernel(x, params, variant=variant)
            check(y, s, y_ref, s_ref, "float64", f"{name} -O{opt} {variant}")


@pytest.mark.parametrize("name", ["lstm", "gru_cho"])
def test_stepwise_tiles_and_batch_edges(name):
    """Sizes that are not multiples of the tiles: several blocks in both directions of the
    stepwise kernel and of the hoisted product, with partial tiles at the edges."""
    cell = lstmc.builtin(name)
    kernel = compiled(name, "float32")
    sizes = sizes_of(cell, hidden=6, input=5) if SIMULATOR else sizes_of(cell, hidden=200)
    b = 5 if SIMULATOR else 67
    x, params, state = data(kernel, sizes, 2, b, seed=11)
    y_ref, s_ref = reference(cell, x, params, state)
    for variant in VARIANTS:
        y, s = kernel(x, params, state, variant=variant)
        check(y, s, y_ref, s_ref, "float32", f"{name} {variant}")
