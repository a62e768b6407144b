"""The compiled CPU kernel against the reference interpreter, PyTorch and bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from strategies import cell_and_data, gated_cell_and_data

import lstmc
from lstmc import KernelArgumentError

# Tolerances, by dtype.
# float64: kernel and interpreter differ only by rounding (vmath is within 2 ulp of libm, BLAS
# sums in another order): ~1e-15 relative for O(1) values; a layer_norm of a nearly constant
# vector amplifies that by up to 1/sqrt(eps) = 316. 1e-10 leaves wide margin.
F64_TOL = 1e-10
# float32: eps32 = 1.2e-7. A dot product of length n <= 128 carries ~sqrt(n) ~ 11 ulp of
# rounding, a step chains ~10 ops, and over T <= 50 steps of a contracting recurrence the error
# grows like sqrt(T) ~ 7: 1.2e-7 * 11 * 10 * 7 ~ 1e-4 relative to the values' scale.
F32_TOL = 1e-4
# A layer_norm divides by sqrt(var + 1e-5): for nearly constant vectors it magnifies input
# error by up to 1/sqrt(1e-5) ~ 316.
LN_GAIN = 316.0


def tolerance(dtype: str, cell) -> float:
    tol = F64_TOL if dtype == "float64" else F32_TOL
    if "layer_norm" in cell.source:
        tol *= LN_GAIN
    return tol


def assert_close(got, want, tol):
    """|got - want| <= tol * max(1, |want|) element-wise; NaN where the reference has NaN."""
    got = np.asarray(got, dtype=np.float64)
    scale = np.maximum(1.0, np.abs(want))
    err = np.abs(got - want) / scale
    both_nan = np.isnan(got) & np.isnan(want)
    bad = ~both_nan & ~(err <= tol)
    assert not bad.any(), f"max scaled error {np.nanmax(np.where(both_nan, 0, err)):.3g} > {tol}"


def check_against_interpreter(cell, kernel, x, params, state, tol):
    y, final = kernel(x, params, state)
    y_ref, final_ref = lstmc.interpret(cell, x, params, state)
    if isinstance(y_ref, dict):
        for k in y_ref:
            assert_close(y[k], y_ref[k], tol)
    else:
        assert_close(y, y_ref, tol)
    for k in final_ref:
        assert_close(final[k], final_ref[k], tol)


def random_data(kernel, sizes, T, B, seed, dtype):
    rng = np.random.default_rng(seed)
    params = kernel.init_params(seed=seed, **sizes)
    x = rng.standard_normal((T, B, sizes["input"])).astype(dtype)
    state = {
        s.name: rng.standard_normal((B, s.concrete(sizes)[0])).astype(dtype)
        for s in kernel.signature.state
    }
    return x, params, state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstmc.cells.names())
def test_shipped_cells(name, dtype):
    cell = lstmc.builtin(name)
    kernel = lstmc.compile(cell, dtype=dtype)
    sig = kernel.signature
    sizes = {s: 5 + 3 * i for i, s in enumerate(sig.sizes)}
    if "proj" in sizes:
        sizes["proj"] = 4
    # Splitting a call across threads (by batch rows, or by the step's units where the cell
    # allows it: 3 threads over 8 units cuts 2/3/3) gives the same numbers. "by steps": as for
    # a weight larger than L2, the hoisted values made for all rows of ranges of steps first
    # by the batch split (else each thread makes its own rows'), and a one-thread call of a
    # kernel with a unit split made by `_prologue` and `_rows` (else by `_cols`).
    l2 = kernel.module._L2_BYTES
    try:
        for seed, (T, B, threads, split, by_steps) in enumerate(
            (
                (9, 3, 1, None, False),
                (9, 3, 1, None, True),
                (4, 9, 2, "batch", False),
                (4, 9, 2, "batch", True),
                (5, 2, 2, "units", False),
                (6, 1, 3, "units", False),
                (0, 2, 2, "units", False),
            )
        ):
            kernel.module._L2_BYTES = 0 if by_steps else l2
            kernel.threads, kernel.split = threads, split
            # new data each case: a case that failed to write the workspace would otherwise
            # find the values of the case before in it
            x, params, state = random_data(kernel, sizes, T, B, 7 + seed, dtype)
            check_against_interpreter(cell, kernel, x, params, state, tolerance(dtype, cell))
            check_against_interpreter(cell, kernel, x, params, None, tolerance(dtype, cell))
    finally:
        kernel.module._L2_BYTES = l2
        kernel.threads = kernel.split = None


@pytest.mark.parametrize("opt", [0, 1, 3])
@pytest.mark.parametrize("name", ["lstm", "gru_cho", "layernorm_lstm", "mgu"])
def test_opt_levels(name, opt):
    cell = lstmc.builtin(name)
    kernel = lstmc.compile(cell, dtype="float64", opt=opt)
    sizes = {s: 4 + i for i, s in enumerate(kernel.signature.sizes)}
    x, params, state = random_data(kernel, sizes, 7, 3, 1, "float64")
    check_against_interpreter(cell, kernel, x, params, state, F64_TOL)


# Each example compiles a kernel (seconds): no shrinking, which would compile hundreds.
@settings(max_examples=10, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    case=cell_and_data(),
    opt=st.sampled_from([0, 1, 2, 3]),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_random_cells(case, opt, dtype):
    cell = case.cell()
    kernel = lstmc.compile(cell, dtype=dtype, opt=opt)
    x = case.x().astype(dtype)
    state = {k: v.astype(dtype) for k, v in case.state().items()}
    check_against_interpreter(cell, kernel, x, case.params(), state, tolerance(dtype, cell))
    if kernel._launch_chunks is not None:
        # A one-thread call of a kernel with a unit split runs `_cols`; with weights larger
        # than L2 (here: an L2 of 0 bytes) it runs `_prologue` and `_rows` instead.
        l2 = kernel.module._L2_BYTES
        kernel.module._L2_BYTES = 0
        try:
            check_against_interpreter(cell, kernel, x, case.params(), state, tolerance(dtype, cell))
        finally:
            kernel.module._L2_BYTES = l2
    # Split by batch rows across 2 threads (each computes its rows' hoisted values, then runs
    # their time loop), on the batch repeated to at least 8 rows so that the split happens.
    reps = -(-8 // x.shape[1]) if x.shape[1] else 1
    kernel.threads, kernel.split = 2, "batch"
    check_against_interpreter(
        cell,
        kernel,
        np.concatenate([x] * reps, axis=1),
        case.params(),
        {k: np.concatenate([v] * reps, axis=0) for k, v in state.items()},
        tolerance(dtype, cell),
    )
    if kernel.columns is not None:  # the step's units split across 2 threads
        kernel.threads, kernel.split = 2, "units"
        check_against_interpreter(cell, kernel, x, case.params(), state, tolerance(dtype, cell))


# Random gated cells (products of the state, then one element-wise loop) run split by units
# across 2 and 3 threads, with hidden up to 40 so the 16-unit alignment and its fallback
# both occur, and B = 1 where the batch split has nothing to split.
@settings(max_examples=8, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(case=gated_cell_and_data(), dtype=st.sampled_from(["float32", "float64"]))
def test_random_gated_cells_split_by_units(case, dtype):
    cell = case.cell()
    kernel = lstmc.compile(cell, dtype=dtype)
    assert kernel.columns is not None, "a gated cell's step splits by units"
    x = case.x().astype(dtype)
    state = {k: v.astype(dtype) for k, v in case.state().items()}
    for threads in (2, 3):
        kernel.threads, kernel.split = threads, "units"
        check_against_interpreter(cell, kernel, x, case.params(), state, tolerance(dtype, cell))


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm"])
@pytest.mark.parametrize("unroll", [1, 3])
def test_input_projection_made_in_chunks_of_steps(name, unroll):
    """Under the unit split each thread makes the input projection a few steps at a time
    (lstmc_runtime.gemm.chunk_steps). At B=128, float64, a chunk holds 1-3 steps of T=11, so
    chunks start inside the unrolled loop and, on 2 and 3 threads, the last one is partial."""
    from lstmc_runtime.gemm import chunk_steps

    cell = lstmc.builtin(name)
    kernel = lstmc.compile(cell, dtype="float64", opt=3 if unroll > 1 else 2, unroll=unroll)
    sizes, T, B = {"input": 8, "hidden": 64}, 11, 128
    x, params, state = random_data(kernel, sizes, T, B, 0, "float64")
    for threads in (1, 2, 3):
        gates = len(kernel.columns["w_packed_x"]["offsets"])
        width = gates * 64 // threads
        steps = chunk_steps.py_func(T, B, width, sizes["input"] * width, 8)
        assert 1 <= steps < T, (threads, steps)
        kernel.threads, kernel.split = threads, "units"
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        assert kernel.last_plan.mode == "units" and kernel.last_plan.threads == threads


def test_float32_step_reading_a_scalar_of_the_prologue():
    """A scalar computed once from constants (exp(-k) + sigmoid(k) here) passes through the
    Python glue as a float64; the step converts it back, so a float32 step stays float32
    (its vmath calls took float64 arguments, which they refuse since they fuse multiply-adds)."""
    spec = textwrap.dedent("""\
        cell: scalar_offset
        sizes: [input, hidden]
        inputs: {x: [input]}
        state: {h: [hidden]}
        params: {W: [hidden, input], U: [hidden, hidden]}
        constants: {k: 2, alpha: 0.3}
        equations:
          h_next: tanh(alpha * (W @ x + U @ h) + exp(-k) + sigmoid(k))
        update: {h: h_next}
        outputs: [h_next]
        """)
    cell = lstmc.loads(spec)
    for opt in (2, 3):
        kernel = lstmc.compile(cell, dtype="float32", opt=opt)
        assert "_F(s_" in kernel.source  # the cast back, in _rows and _cols
        x, params, state = random_data(kernel, {"input": 3, "hidden": 20}, 5, 2, opt, "float32")
        for threads, split in ((None, None), (1, None), (2, "units"), (2, "batch")):
            kernel.threads, kernel.split = threads, split
            check_against_interpreter(cell, kernel, x, params, state, F32_TOL)
            assert kernel(x, params, state)[0].dtype == np.float32


def test_unit_split_of_a_cell_without_an_input_projection():
    """A cell whose step splits by units but has no product of the input to make per thread:
    the glue runs its prologue on the calling thread (it once named `run_chunks`, which the
    unit split's glue does not have)."""
    spec = textwrap.dedent("""\
        cell: no_projection
        sizes: [hidden]
        inputs: {x: [hidden]}
        state: {h: [hidden]}
        params: {U: [hidden, hidden]}
        equations:
          h_next: tanh(U @ h + x)
        update: {h: h_next}
        outputs: [h_next]
        """)
    cell = lstmc.loads(spec)
    kernel = lstmc.compile(cell, dtype="float64")
    params = kernel.init_params(hidden=512)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 512))
    state = {"h": rng.standard_normal((1, 512))}
    for threads in (1, 2):
        kernel.threads = threads
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        assert kernel.last_plan.mode == "units"


def test_fixed_sizes_and_unrolling():
    cell = lstmc.builtin("lstm")
    kernel = lstmc.compile(cell, dtype="float64", opt=3, unroll=3, sizes={"input": 3, "hidden": 5})
    assert "n_hidden = 5  # fixed at compile time" in kernel.source
    assert "unrolled x3" in kernel.source
    for T in (0, 1, 3, 7):
        x, params, state = random_data(kernel, {"input": 3, "hidden": 5}, T, 2, T, "float64")
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        kernel.threads, kernel.split = 2, "units"  # the unrolled column-split loop
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        kernel.threads = kernel.split = None
    # params of another size (made by a kernel without fixed sizes: this one's init_params
    # refuses hidden=6 itself)
    unfixed = lstmc.compile(cell, dtype="float64")
    x, params, state = random_data(unfixed, {"input": 3, "hidden": 6}, 2, 2, 0, "float64")
    with pytest.raises(KernelArgumentError, match="hidden"):
        kernel(x, params)
    with pytest.raises(KernelArgumentError, match="fixed at 5 when compiling"):
        kernel.init_params(input=3, hidden=6)


def test_matches_pytorch_lstm_and_gru_in_float32():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, B, I, H = 20, 4, 6, 8
    x = torch.randn(T, B, I)
    lstm = torch.nn.LSTM(I, H)
    W, U = lstm.weight_ih_l0.detach().numpy(), lstm.weight_hh_l0.detach().numpy()
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy()
    params = {}
    for k, g in enumerate("ifgo"):
        rows = slice(k * H, (k + 1) * H)
        params |= {f"W_{g}": W[rows], f"U_{g}": U[rows], f"b_{g}": b[rows]}
    y, state = lstmc.compile(lstmc.builtin("lstm"))(x.numpy(), params)
    with torch.no_grad():
        y_t, (h_t, c_t) = lstm(x)
    # float32 on both sides; tolerance as F32_TOL (both round differently, neither is exact)
    assert np.abs(y - y_t.numpy()).max() < F32_TOL
    assert np.abs(state["c"] - c_t[0].numpy()).max() < F32_TOL

    gru = torch.nn.GRU(I, H)
    Wg, Ug = gru.weight_ih_l0.detach().numpy(), gru.weight_hh_l0.detach().numpy()
    bi, bh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()
    kernel = lstmc.compile(lstmc.builtin("gru"))
    names = [p.name for p in kernel.signature.params]
    params = {}
    for k, g in enumerate("rzn"):
        rows = slice(k * H, (k + 1) * H)
        params |= {
            f"W_i{g}": Wg[rows],
            f"W_h{g}": Ug[rows],
            f"b_i{g}": bi[rows],
            f"b_h{g}": bh[rows],
        }
    assert set(params) == set(names)
    y, _ = kernel(x.numpy(), params)
    with torch.no_grad():
        y_t, _ = gru(x)
    assert np.abs(y - y_t.numpy()).max() < F32_TOL


def test_state_continues_a_sequence_and_inputs_are_not_modified():
    kernel = lstmc.compile(lstmc.builtin("gru"), dtype="float64")
    x, params, state = random_data(kernel, {"input": 3, "hidden": 4}, 10, 2, 3, "float64")
    kept = {k: v.copy() for k, v in state.items()}
    x_kept = x.copy()
    y_all, s_all = kernel(x, params, state)
    y1, s1 = kernel(x[:6], params, state)
    y2, s2 = kernel(x[6:], params, s1)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y_all, rtol=0, atol=1e-14)
    np.testing.assert_allclose(s2["h"], s_all["h"], rtol=0, atol=1e-14)
    for k in state:
        np.testing.assert_array_equal(state[k], kept[k])
    np.testing.assert_array_equal(x, x_kept)


def test_packed_params_give_the_same_result():
    kernel = lstmc.compile(lstmc.builtin("lstm"), dtype="float64")
    x, params, state = random_data(kernel, {"input": 3, "hidden": 4}, 5, 2, 0, "float64")
    packed = kernel.pack(params)
    np.testing.assert_array_equal(kernel(x, packed, state)[0], kernel(x, params, state)[0])
    other = lstmc.compile(lstmc.builtin("gru"), dtype="float64")
    with pytest.raises(KernelArgumentError, match="packed by another kernel"):
        other(x, packed)


def test_nan_in_nan_out_and_large_inputs_saturate():
    for dtype in ("float32", "float64"):
        kernel = lstmc.compile(lstmc.builtin("lstm"), dtype=dtype)
        x, params, _ = random_data(kernel, {"input": 3, "hidden": 4}, 4, 3, 0, dtype)
        x[1, 0, 0] = np.nan
        y, state = kernel(x, params)
        assert np.isnan(y[1:, 0]).all() and not np.isnan(y[:, 1:]).any()
        assert not np.isnan(y[0]).any()
        big = np.full_like(x, 1e30)  # pre-activations near ±1e30: every gate saturates
        y, _ = kernel(big, params)
        assert np.isfinite(y).all() and (np.abs(y) <= 1).all()


def _args_error(kernel, x, params, state=None) -> str:
    with pytest.raises(KernelArgumentError) as info:
        kernel(x, params, state)
    return str(info.value)


def test_argument_errors_name_argument_and_shapes():
    kernel = lstmc.compile(lstmc.builtin("lstm"), dtype="float32")
    x, params, state = random_data(kernel, {"input": 3, "hidden": 4}, 5, 2, 0, "float32")
    assert "x must be [T, B, input]" in _args_error(kernel, x[0], params)
    msg = _args_error(kernel, x.astype(np.float64), params)
    assert "float64" in msg and "float32" in msg
    assert "missing param `U_o`" in _args_error(
        kernel, x, {k: v for k, v in params.items() if k != "U_o"}
    )
    assert "unexpected param `W_z`" in _args_error(kernel, x, {**params, "W_z": params["W_i"]})
    msg = _args_error(kernel, x, {**params, "U_i": np.zeros((4, 5), np.float32)})
    assert "U_i" in msg and "(4, 5)" in msg and "[hidden, hidden]" in msg
    msg = _args_error(kernel, x[:, :, :2], params)
    assert "x" in msg and "input" in msg
    msg = _args_error(kernel, x, params, {"h": np.zeros((3, 4), np.float32)})
    assert "state `h`" in msg and "(3, 4)" in msg and "B=2" in msg
    assert "unexpected state `q`" in _args_error(kernel, x, params, {"q": state["h"]})
    assert "`x` must be a NumPy array, got list" in _args_error(kernel, [[1.0]], params)
    with pytest.raises(KernelArgumentError, match="init_params needs every size: missing hidden"):
        kernel.init_params(input=3)
    with pytest.raises(KernelArgumentError, match="unknown size"):
        kernel.init_params(input=3, hidden=4, hiden=4)
    assert "float array" in _args_error(kernel, x.astype(np.int32), params)


def test_the_docstring_has_the_equations_of_a_spec_written_in_flow_style():
    """`equations: {z: ...}` on one line (and one over two) reads as a block would."""
    from lstmc.compiler import equations_text

    spec = textwrap.dedent("""\
        cell: flow
        sizes: [n]
        inputs: {x: [n]}
        state: {h: [n]}
        params: {W: [n, n]}
        equations: {z: tanh(W @ x
           + h), y: z}   # two equations
        update: {h: z}
        outputs: [y]
        """)
    text = equations_text(lstmc.loads(spec))
    assert text == "equations:\n  z: tanh(W @ x + h)\n  y: z\nupdate:\n  h: z"


def test_generated_source_is_readable_and_carries_the_ir():
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    src = kernel.source
    assert src.startswith("# Generated by lstmc")
    assert "# %packed_h = packed_matvec %h, %U_i, %U_f, %U_g, %U_o : [4*hidden]" in src
    assert "i: sigmoid(W_i @ x + U_i @ h + b_i)" in src  # the equations in the docstring
    compile(src, "<generated>", "exec")  # valid Python
    import ast

    imported = {
        a.name.split(".")[0]
        for node in ast.walk(ast.parse(src))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for a in (node.names if isinstance(node, ast.Import) else [node])
        for a in ([a] if isinstance(node, ast.Import) else [type("M", (), {"name": node.module})])
    }
    assert imported <= {"numpy", "numba", "lstmc_runtime"}


def test_names_that_shadow_python_and_generated_code_are_harmless():
    spec = textwrap.dedent("""\
        cell: np
        sizes: [input, hidden]
        inputs: {x: [input]}
        state: {T: [hidden], range: [hidden]}
        params: {W: [hidden, input], B: [hidden]}
        equations:
          b: tanh(W @ x + B)
          t: b * T + range
          kernel: sigmoid(t)
        update: {T: kernel, range: b}
        outputs: [kernel, t]
        """)
    cell = lstmc.loads(spec, "np.yaml")
    kernel = lstmc.compile(cell, dtype="float64")
    x, params, state = random_data(kernel, {"input": 2, "hidden": 3}, 4, 2, 0, "float64")
    check_against_interpreter(cell, kernel, x, params, state, F64_TOL)


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_second_process_loads_from_the_cache(tmp_path):
    env = {**os.environ, "LSTMC_CACHE_DIR": str(tmp_path)}
    code = textwrap.dedent("""\
        import numpy as np, lstmc
        k = lstmc.compile(lstmc.builtin("rnn_tanh"), dtype="float64")
        p = k.init_params(input=2, hidden=3)
        k(np.zeros((2, 1, 2)), p)
        m = k.module
        # the module's compiled functions (which of them a call runs depends on its plan)
        fns = [f for f in vars(m).values() if hasattr(f, "stats") and hasattr(f, "py_func")]
        print(sum(sum(f.stats.cache_hits.values()) for f in fns),
              sum(sum(f.stats.cache_misses.values()) for f in fns))
        """)
    first = _run_python(code, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[1] != "0", f"nothing compiled in the first process: {first.stdout}"
    second = _run_python(code, env)
    assert second.returncode == 0, second.stderr
    hits, misses = map(int, second.stdout.split())
    assert hits > 0, f"no cache hit in the second process: {second.stdout}"
    assert misses == 0, f"the second process compiled again: {second.stdout}"


def test_two_processes_compiling_at_once_both_succeed(tmp_path):
    env = {**os.environ, "LSTMC_CACHE_DIR": str(tmp_path)}
    code = textwrap.dedent("""\
        import numpy as np, lstmc
        k = lstmc.compile(lstmc.builtin("gru"), dtype="float64")
        y, _ = k(np.ones((3, 2, 4)), k.init_params(input=4, hidden=5, seed=1))
        print(float(y.sum()))
        """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    leftovers = [p for p in tmp_path.rglob(".tmp-*")]
    assert not leftovers


def test_a_changed_runtime_is_a_new_cache_entry(monkeypatch):
    """Kernels hold a copy of the runtime functions they call, so a change to lstmc_runtime's
    sources must not be answered from a module compiled against the old ones."""
    from lstmc.codegen import cache

    assert len(cache.runtime_digest.__wrapped__()) == 64  # a sha256 of the real sources
    key = cache.cache_key({"source": "s", "options": {}})
    assert cache.cache_key({"source": "s", "options": {}}) == key
    monkeypatch.setattr(cache, "runtime_digest", lambda: "another runtime")
    assert cache.cache_key({"source": "s", "options": {}}) != key


@pytest.mark.parametrize("opt", [0, 2])
def test_float32_layer_norm_of_rows_with_a_large_mean(opt):
    """x - mean cancels when a row's mean dwarfs its spread. The float32 kernel subtracts the
    float64 mean as hi + lo, so the deviations stay accurate: with the mean rounded to float32
    once (ulp(1e4) / 2 ~ 5e-4) against a spread of 0.1, the error here would be up to 5e-3. At -O2 the
    layer norm of x is hoisted, at -O0 it runs in the step."""
    spec = textwrap.dedent("""\
        cell: ln_shifted
        sizes: [input]
        inputs: {x: [input]}
        state: {h: [input]}
        params: {U: [input, input], gamma: [input], beta: [input]}
        equations:
          h_next: layer_norm(x, gamma, beta) + 0.5 * tanh(U @ h)
        update: {h: h_next}
        outputs: [h_next]
        """)
    cell = lstmc.loads(spec, "ln_shifted.yaml")
    kernel = lstmc.compile(cell, dtype="float32", opt=opt)
    x, params, state = random_data(kernel, {"input": 40}, 3, 2, 0, "float32")
    x = (np.float32(0.1) * x + np.float32(1e4)).astype(np.float32)  # exact for both sides
    params["gamma"] = np.ones_like(params["gamma"])
    check_against_interpreter(cell, kernel, x, params, state, F32_TOL)


def test_layer_norms_are_computed_in_the_group_that_reads_them():
    """A layer norm whose only readers are one element-wise group (of the step, or hoisted
    and read in the step) gets no buffer: the group normalizes where it reads, from row
    statistics computed for all rows of the chunk first. One that a sink (an output) also
    reads keeps its buffer. Both give the interpreter's numbers."""
    kernel = lstmc.compile(lstmc.builtin("layernorm_lstm"))
    assert not re.search(r"\bv_layer_norm", kernel.source)  # no buffer named after one
    assert kernel.source.count("_rows_mean_inv_std(") == 9  # 4 of x, 4 of h, 1 of c
    spec = textwrap.dedent("""\
        cell: ln_kept
        sizes: [input]
        inputs: {x: [input]}
        state: {h: [input]}
        params: {U: [input, input], gamma: [input], beta: [input]}
        equations:
          n: layer_norm(U @ h, gamma, beta)
          h_next: tanh(n) * sigmoid(x)
        update: {h: h_next}
        outputs: [h_next, n]
        """)
    cell = lstmc.loads(spec, "ln_kept.yaml")
    kernel = lstmc.compile(cell, dtype="float64")
    assert "v_n = np.empty" in kernel.source and "_rows_mean_inv_std(" not in kernel.source
    x, params, state = random_data(kernel, {"input": 9}, 4, 3, 0, "float64")
    check_against_interpreter(cell, kernel, x, params, state, F64_TOL)


# A layer norm of a param's vector (in the step at -O0 and -O1: not folded, it has no row per
# batch row), and hoisted layer norms that a hoisted group computes (folded in the prologue,
# whose loops run over a thread's rows in the batch split).
_NORM_CELLS = {
    "of_a_param": """\
        cell: ln_param
        sizes: [input]
        inputs: {x: [input]}
        state: {h: [input]}
        params: {U: [input, input], c: [input], gamma: [input], beta: [input]}
        equations:
          h_next: tanh(U @ h + x) * layer_norm(c, gamma, beta) + x
        update: {h: h_next}
        outputs: [h_next]
        """,
    "in_the_prologue": """\
        cell: ln_hoisted
        sizes: [input]
        inputs: {x: [input]}
        state: {h: [input]}
        params: {U: [input, input], V: [input, input], gamma: [input], beta: [input]}
        equations:
          a: layer_norm(x * 2.0, gamma, beta) + sigmoid(layer_norm(x * 3.0, gamma, beta) + x)
          h_next: tanh(U @ h + a) * sigmoid(V @ h)
        update: {h: h_next}
        outputs: [h_next]
        """,
}


@pytest.mark.parametrize("opt", [0, 1, 2, 3])
@pytest.mark.parametrize("which", sorted(_NORM_CELLS))
def test_layer_norms_of_params_and_in_the_prologue(which, opt):
    cell = lstmc.loads(textwrap.dedent(_NORM_CELLS[which]), f"{which}.yaml")
    kernel = lstmc.compile(cell, dtype="float64", opt=opt)
    plans = [(1, "batch", 3), (2, "batch", 9)]
    if kernel.columns is not None:  # the hoisted norms stay folded in a column split's prologue
        plans.append((2, "units", 3))
    for threads, split, B in plans:
        kernel.threads, kernel.split = threads, split
        x, params, state = random_data(kernel, {"input": 7}, 5, B, opt, "float64")
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        assert kernel.last_plan.mode == ("serial" if threads == 1 else split)
    if which == "in_the_prologue" and opt >= 2:
        assert "v_layer_norm" not in kernel.source.replace("inv_layer_norm", "")


def test_workspace_is_reused_per_thread_and_never_leaks_into_results():
    """The prologue's hoisted buffers live in a per-thread workspace kept between calls: it
    grows for a bigger call, is reused for a smaller one, results never alias it, and calls
    on two threads at once each get their own."""
    import threading

    cell = lstmc.builtin("layernorm_lstm")
    kernel = lstmc.compile(cell, dtype="float64")
    sizes = {"input": 5, "hidden": 6}
    cases = [
        random_data(kernel, sizes, T, B, seed, "float64")
        for T, B, seed in [(4, 2, 0), (7, 3, 1), (2, 1, 2)]
    ]
    first_y, _ = kernel(cases[0][0], cases[0][1], cases[0][2])
    kept = first_y.copy()
    for x, params, state in cases:
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
    assert np.array_equal(first_y, kept)  # later calls did not write into an earlier result
    space = kernel.workspace()["prologue"]
    # grown to the largest call: [T, B, 4H] of the hoisted product (its layer norms are
    # computed in the step's loop, cpu_ops.fold_layer_norms, with no buffer of their own)
    assert space.size >= 7 * 3 * 4 * 6
    kernel(cases[2][0], cases[2][1], cases[2][2])
    assert kernel.workspace()["prologue"] is space  # a smaller call reuses it

    errors, spaces = [], {}

    def worker(i):
        try:
            for _ in range(5):
                x, params, state = cases[i]
                check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
            spaces[i] = kernel.workspace()["prologue"]
        except AssertionError as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert spaces[0] is not spaces[1] and spaces[0] is not space  # one per thread
    other = lstmc.compile(cell, dtype="float64")  # another copy of the same module's kernel
    assert other.workspace() == {}
    kernel.release_workspace()
    assert kernel.workspace() == {}


def test_unit_split_threads_keep_their_projection_buffers():
    """Under the unit split each thread's input-projection buffer (a chunk, or all T steps when
    the weight is too big for chunks) is kept in the caller's workspace, one per thread, and
    reused by the next call; results stay right and never alias it."""
    cell = lstmc.builtin("lstm")
    kernel = lstmc.compile(cell, dtype="float64")
    kernel.threads, kernel.split = 2, "units"
    sizes = {"input": 5, "hidden": 32}
    x, params, state = random_data(kernel, sizes, 6, 3, 0, "float64")
    first_y, _ = kernel(x, params, state)
    kept = first_y.copy()
    bufs = {k: kernel.workspace()[("cols", k)] for k in (0, 1)}
    assert bufs[0] is not bufs[1]
    assert all(b.size >= 6 * 3 * 4 * 16 for b in bufs.values())  # all T steps: one chunk
    x2, params2, state2 = random_data(kernel, sizes, 4, 2, 1, "float64")
    check_against_interpreter(cell, kernel, x2, params2, state2, F64_TOL)
    assert all(kernel.workspace()[("cols", k)] is bufs[k] for k in (0, 1))  # reused
    check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
    assert np.array_equal(first_y, kept)


def test_a_huge_call_does_not_keep_its_workspace(monkeypatch):
    from lstmc_runtime import kernel as rt_kernel

    kernel = lstmc.compile(lstmc.builtin("lstm"), dtype="float64")
    x, params, state = random_data(kernel, {"input": 3, "hidden": 4}, 5, 2, 0, "float64")
    kernel(x, params, state)
    assert sum(a.nbytes for a in kernel.workspace().values()) >= 5 * 2 * 16 * 8
    kept = {key: id(a) for key, a in kernel.workspace().items()}
    kernel(x, params, state)  # the same call again reuses it, whichever glue the plan ran
    assert {key: id(a) for key, a in kernel.workspace().items()} == kept
    monkeypatch.setattr(rt_kernel, "WORKSPACE_KEEP_BYTES", 64)
    kernel(x, params, state)
    assert kernel.workspace() == {}


def test_modules_written_before_the_workspace_still_run():
    """An artifact whose `_launch` has no `work` argument (lstmc 0.1.0 before the workspace)
    runs with the current runtime."""
    cell = lstmc.builtin("rnn_tanh")
    kernel = lstmc.compile(cell, dtype="float64")
    module = kernel.module
    x, params, state = random_data(kernel, {"input": 3, "hidden": 4}, 3, 2, 0, "float64")

    def old_launch(x, state, arrays, outputs, sizes, run_chunks):
        return module._launch(x, state, arrays, outputs, sizes, run_chunks, {})

    old = type(kernel)(
        kernel.signature,
        kernel.weights,
        kernel.vector_params,
        old_launch,
        np.float64,
        panels=kernel.panels,  # today's module under the old calling convention
    )
    y, final = old(x, params, state)
    y_ref, final_ref = lstmc.interpret(cell, x, params, state)
    assert_close(y, y_ref, F64_TOL)


_CHAIN_CELL = """\
    cell: chained
    sizes: [input]
    inputs: {x: [input]}
    state: {h: [input], c: [input]}
    params: {U: [input, input], W: [input, input], b: [input]}
    equations:
      a: sigmoid(U @ h + x)
      c_next: a * c + tanh(W @ h + b)
      d: exp(-abs(tanh(c_next) * a))
      h_next: a * tanh(d + c_next) - d
    update: {h: h_next, c: c_next}
    outputs: [h_next, d]
    """


def test_step_loops_are_cut_between_chained_transcendentals():
    """The time loop's element-wise group runs a row in one loop per link of its longest
    chain of transcendental functions (common.chain_stages): an LSTM's gates and c_next,
    then tanh(c_next) and h_next. Values that a later loop reads pass through a row of
    scratch; sinks are written in the loop that computes them. Every plan gives the
    interpreter's numbers."""
    from lstmc.codegen.common import chain_stages
    from lstmc.codegen.schedule import schedule

    lstm = lstmc.compile(lstmc.builtin("lstm"))
    for fn in ("_rows", "_cols"):
        body = lstm.source.split(f"def {fn}(")[1].split("\n\n\n")[0]
        assert body.count("# loop 1 of 2 over the row") == 1, fn
        assert body.count("# loop 2 of 2 over the row") == 1, fn
        assert re.search(r"s_tanh = _tanh\(sg_c_next\[jj?\]\)", body), fn
    (step_group,) = [i for i in schedule(lstm.graph).items["step"] if i.kind == "group"]
    stage = chain_stages(step_group.nodes, "cpu")
    assert {stage[n] for n in ("i", "f", "g", "o", "c_next")} == {0}
    assert stage["tanh"] == stage["h_next"] == 1
    # A cell without a chain keeps one loop.
    assert "# loop 1 of" not in lstmc.compile(lstmc.builtin("rnn_tanh")).source

    cell = lstmc.loads(textwrap.dedent(_CHAIN_CELL), "chained.yaml")
    for dtype in ("float64", "float32"):
        kernel = lstmc.compile(cell, dtype=dtype)
        assert "# loop 4 of 4 over the row" in kernel.source
        tol = F64_TOL if dtype == "float64" else F32_TOL
        x, params, state = random_data(kernel, {"input": 40}, 6, 8, 1, dtype)
        for threads, split in ((1, None), (2, "batch"), (2, "units"), (3, "units")):
            kernel.threads, kernel.split = threads, split
            check_against_interpreter(cell, kernel, x, params, state, tol)


_NORM_TREES_CELL = """\
    cell: ln_trees
    sizes: [input]
    inputs: {x: [input]}
    state: {h: [input], c: [input]}
    params: {U: [input, input], V: [input, input], g1: [input], b1: [input], g2: [input],
             b2: [input], k: [input]}
    equations:
      s: layer_norm(U @ h, g1, b1) * k
      a: sigmoid(s + layer_norm(V @ h, g2, b2))
      z: tanh(s - c + layer_norm(x, g2, b1))
      c_next: a * c + z
      h_next: sigmoid(layer_norm(c_next, g1, b2)) * c_next
    update: {h: h_next, c: c_next}
    outputs: [h_next, s]
    """


def test_arithmetic_on_layer_norms_gets_a_loop_per_tree():
    """In a step group with layer norms, each tree of arithmetic on them (no transcendental:
    a gate's pre-activation) runs in a loop of its own before the group's other loops, its
    root passed on through row scratch (cpu_ops.norm_stages). layernorm_lstm: a loop per gate
    pre-activation, two norms in each, then the gates as in the plain LSTM. A value shared by
    two trees goes in the first tree's loop. Every plan gives the interpreter's numbers."""
    from lstmc.codegen.cpu_ops import norm_stages
    from lstmc.codegen.schedule import schedule

    ln = lstmc.compile(lstmc.builtin("layernorm_lstm"))
    body = ln.source.split("def _rows(")[1].split("\n\n\n")[0]
    loops = re.split(r"# loop \d of 5 over the row \(cpu_ops.norm_stages\)", body)
    assert len(loops) == 6
    for k, gate in enumerate("ifgo"):  # norms of x and h, and the bias, in loop k + 1
        assert loops[k + 1].count("_layer_norm") == 2 * 3, gate
        assert re.search(rf"\bp_b_{gate}\[j\]", loops[k + 1]), gate
    gates = loops[5].split("# element-wise group")[0]
    assert "_layer_norm" not in gates and gates.count("sg_add_") == 4

    cell = lstmc.loads(textwrap.dedent(_NORM_TREES_CELL), "ln_trees.yaml")
    kernel = lstmc.compile(cell, dtype="float64")
    sched = schedule(kernel.graph)
    gates, last = [i for i in sched.items["step"] if i.kind == "group"]
    norms = {n.name for n in kernel.graph.find("layer_norm")}
    stage = norm_stages(gates.nodes, {n.name: 0 for n in gates.nodes}, norms, "cpu")
    by_name = {n.name: n for n in gates.nodes}
    a_pre = by_name["a"].operands[0].name
    z_pre = by_name["z"].operands[0].name
    assert {stage[a_pre], stage[z_pre]} == {0, 1}
    assert stage["s"] == 0  # in the first tree's loop (s is scheduled with z's tree)
    assert stage["a"] == stage["z"] == stage["c_next"] == 2
    assert "sg_s[j] = s_s" in kernel.source  # read again by the second tree's loop
    # sigmoid(layer_norm(c_next)) is no tree of arithmetic: that group keeps its stages.
    plain = {n.name: 0 for n in last.nodes}
    assert norm_stages(last.nodes, plain, norms, "cpu") == plain
    for dtype in ("float64", "float32"):
        kernel = lstmc.compile(cell, dtype=dtype)
        x, params, state = random_data(kernel, {"input": 24}, 5, 7, 2, dtype)
        for threads, split in ((1, None), (2, "batch"), (2, "units")):
            kernel.threads, kernel.split = threads, split
            check_against_interpreter(cell, kernel, x, params, state, tolerance(dtype, cell))


def test_batch_split_of_a_unit_kernel_runs_its_column_function_on_chunks_of_rows():
    """A kernel that can split by units runs a batch split through `_cols` too: each chunk of
    rows computes every unit on its thread, with its own input-projection buffer kept in the
    workspace under its first row. Odd T (the final state in the spare buffer), chunks of
    unequal size, a state to continue from; the buffers of another split are dropped."""
    cell = lstmc.builtin("lstm")
    kernel = lstmc.compile(cell, dtype="float64")
    assert "def _launch_chunks(" in kernel.source
    x, params, state = random_data(kernel, {"input": 5, "hidden": 16}, 7, 14, 3, "float64")
    for threads, starts in ((2, {0, 7}), (3, {0, 4, 9})):
        kernel.threads, kernel.split = threads, "batch"
        check_against_interpreter(cell, kernel, x, params, state, F64_TOL)
        assert kernel.last_plan.mode == "batch" and kernel.last_plan.threads == threads
        chunks = {k[1] for k in kernel.workspace() if isinstance(k, tuple)}
        assert chunks == starts
