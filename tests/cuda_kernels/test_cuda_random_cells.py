"""Random cells (tests/strategies.py) on both CUDA variants, both dtypes and every opt level,
against the interpreter: several state variables, outputs of every phase, products of gated
values, concat, layer_norm, constants, names that look like the generator's own."""

import os

from cuda_helpers import DTYPES, SIMULATOR, VARIANTS, check, compiled, reference
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import cell_and_data

CASES = (
    cell_and_data(max_size=4, max_T=3, max_B=2)
    if SIMULATOR
    else cell_and_data(max_size=40, max_T=6, max_B=9)
)


# On a GPU each example compiles a module of its own (seconds): LSTMC_CUDA_EXAMPLES bounds it
# where device time is short.
@settings(max_examples=40 if SIMULATOR else int(os.environ.get("LSTMC_CUDA_EXAMPLES", "60")))
@given(case=CASES, dtype=st.sampled_from(DTYPES), opt=st.sampled_from([0, 1, 2, 3]))
def test_random_cells_match_the_interpreter(case, dtype, opt):
    cell = case.cell()
    x, params, state = case.x(), case.params(), case.state()
    y_ref, s_ref = reference(cell, x, params, state)
    kernel = compiled(cell, dtype, opt=opt)
    xd = x.astype(dtype)
    pd = {k: v.astype(dtype) for k, v in params.items()}
    sd = {k: v.astype(dtype) for k, v in state.items()}
    if dtype == "float32":  # the reference sees the same rounded inputs
        y_ref, s_ref = reference(cell, xd, pd, sd)
    packed = kernel.pack(pd)
    for variant in VARIANTS:
        y, s = kernel(xd, packed, sd, variant=variant)
        check(y, s, y_ref, s_ref, dtype, f"-O{opt} {variant}")
