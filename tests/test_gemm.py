"""Tests for lstmc_runtime.gemm, the step products' register-blocked kernel: every tile and
tail path against an exact (float64 / long double) product, over random shapes, strided and
unaligned operands, both dtypes, special values, and the generated kernels' use; each case
with the weight row-major (matmul_into) and packed in panels (to_panels, matmul_panels)."""

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lstmc_runtime.gemm import (
    PANEL_BYTES,
    from_panels,
    matmul_into,
    matmul_panels,
    to_panels,
)
from lstmc_runtime.step_products import matmul_step
from numba import njit

import lstmc

DTYPES = [np.float32, np.float64]


def exact_product(a, w):
    return a.astype(np.longdouble) @ w.astype(np.longdouble)


def error_bound(a, w):
    """The standard bound for a K-term dot product computed in any order, with or without
    fused multiply-adds: |fl(a @ w) - a @ w| <= K * u * (|a| @ |w|) (Higham, Accuracy and
    Stability, 3.1), u = eps / 2, plus the final rounding to the dtype (another u relative)."""
    u = np.finfo(a.dtype).eps / 2
    k = a.shape[1]
    mag = np.abs(a).astype(np.longdouble) @ np.abs(w).astype(np.longdouble)
    return (k + 1) * u * mag


@njit
def step_product(a, w, out):
    """matmul_step as a kernel calls it: from compiled code, through its C entry point."""
    matmul_step(a, w, out)


def check(a, w, out=None, extra=()):
    """Both layouts of w give the product within the bound, and the same bits (the same
    tiles, in the same order of k); so does the kernels' way in, matmul_step, and each of
    `extra`, products that take w in panels."""
    results = []
    for product, weight in (
        (matmul_into, w),
        (matmul_panels, to_panels(w)),
        (step_product, to_panels(w)),
        *((p, to_panels(w)) for p in extra),
    ):
        dest = np.full((a.shape[0], w.shape[1]), np.nan, a.dtype) if out is None else out
        product(a, weight, dest)
        err = np.abs(dest.astype(np.longdouble) - exact_product(a, w))
        assert (err <= error_bound(a, w)).all(), (product.__name__, float(err.max()))
        results.append(dest.copy())
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


# Sizes cross every path: rows 0-19 take the 6-row tile up to three times plus each of the
# 4/2/1 tails; columns reach past two groups of every tile width (4, 2 and 1 vectors) and leave
# a tail shorter than a vector (16 float32 or 8 float64 elements).
@given(
    m=st.integers(0, 19),
    k=st.integers(0, 40),
    n=st.integers(0, 300),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_exact_product(m, k, n, dtype, seed):
    rng = np.random.default_rng(seed)
    check(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 64])
def test_every_row_tail_at_step_shapes(m, dtype):
    rng = np.random.default_rng(m)
    check(
        rng.standard_normal((m, 128)).astype(dtype),
        rng.standard_normal((128, 512 + 48)).astype(dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [7, 8, 21])
def test_weights_larger_than_l2_prefetch_the_next_panel(m, dtype):
    """A weight of at least _PREFETCH_MIN_BYTES (the L2 size) takes the prefetching 8-row
    tile (_streamed_rows_into) once there are 8 rows, on CPUs where prefetching pays (called
    here directly too, so that every host checks it): the same bits as the row-major tile,
    the last panel partial, rows past the 8-row blocks; 7 rows take the 6-row tiles."""
    from lstmc_runtime import gemm

    @njit
    def streamed(a, w, out):
        gemm._streamed_rows_into(a, w, out, True)

    n = 16 * PANEL_BYTES // np.dtype(dtype).itemsize + 5  # 16 panels, the last one partial
    k = -(-gemm._PREFETCH_MIN_BYTES // (n * np.dtype(dtype).itemsize)) + 3
    assert k * to_panels(np.zeros((1, n), dtype)).shape[0] * PANEL_BYTES >= (
        gemm._PREFETCH_MIN_BYTES
    )
    rng = np.random.default_rng(m)
    a, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    check(a, w, extra=(streamed,) if m >= gemm.STREAM_ROWS else ())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [32, 35, 38, 40, 64])
@pytest.mark.parametrize("extra", [5, 16 + 3])
def test_many_rows_on_weights_larger_than_l2_go_in_strips(m, extra, dtype):
    """From STRIP_MIN_ROWS rows on, a weight larger than L2 goes by in strips of the main
    tile's width (_strips_into, where prefetching pays; called directly too): every tail of
    rows after the 6-row blocks (4, 2, 1 and their sums), and columns after the last whole
    strip (a vector and a partial one, or a few)."""
    from lstmc_runtime import gemm

    assert m >= gemm.STRIP_MIN_ROWS
    n = 16 * PANEL_BYTES // np.dtype(dtype).itemsize + extra  # 8 strips of 2 panels, and more
    k = -(-gemm._PREFETCH_MIN_BYTES // (n * np.dtype(dtype).itemsize)) + 3
    rng = np.random.default_rng(m + extra)
    a, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    check(a, w, extra=(gemm._strips_into,))


@pytest.mark.parametrize(
    "cpu, avx512, expected",
    [
        ("skylake-avx512", True, True),
        ("sapphirerapids", True, True),
        ("znver3", False, False),  # an EPYC: the prefetching tiles ran at half the rate
        ("znver4", True, False),
        ("haswell", False, False),  # never measured: the plain tiles
    ],
)
def test_prefetching_tiles_only_where_they_were_measured_to_pay(cpu, avx512, expected):
    from lstmc_runtime import gemm
    from lstmc_runtime.layout import _AVX512, CPU_NAME, software_prefetch

    assert software_prefetch(cpu, avx512) is expected
    assert gemm.SOFTWARE_PREFETCH is software_prefetch(CPU_NAME, _AVX512)


@pytest.mark.parametrize("blocks", [1, 2, 3, 8, 32])
@pytest.mark.parametrize("k_total", [1, 7, 512])
def test_prefetch_shares_stay_in_the_next_panel_and_cover_it(blocks, k_total):
    """The lines the blocks of a panel ask for (gemm._prefetch_share, two a k) lie inside the
    next panel (the last panel for itself), and cover its every line when `blocks` divides
    a panel row's bytes; else all but its last (row bytes mod blocks) * k_total bytes."""
    from lstmc_runtime.gemm import _prefetch_share

    panel_bytes, panels = k_total * PANEL_BYTES, 4
    for p in range(panels):
        lines = set()
        target = min(p + 1, panels - 1) * panel_bytes
        for b in range(blocks):
            start, step = _prefetch_share(panel_bytes, panels, k_total, p, b, blocks)
            for k in range(k_total):
                for at in (start + k * step, start + k * step + step // 2):
                    assert target <= at < target + panel_bytes, (p, b, k)
                    lines.add((at - target) // 64)
        missing = set(range(panel_bytes // 64)) - lines
        uncovered = (PANEL_BYTES % blocks) * k_total  # bytes at the end of the panel
        assert missing == set(range((panel_bytes - uncovered + 63) // 64, panel_bytes // 64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_unaligned_operands(dtype):
    """Row slices of bigger arrays (the batch chunks and the weight blocks a thread gets), an
    offset of one element (no vector alignment), and an output that is a view."""
    rng = np.random.default_rng(1)
    big_a = rng.standard_normal((13, 70)).astype(dtype)
    big_w = rng.standard_normal((70, 211)).astype(dtype)
    a, w = big_a[2:11, 1:38], big_w[1:38, 3:200]
    out_big = np.full((20, 260), np.nan, dtype)
    out = out_big[3:12, 5:202]
    check(a, w, out)
    assert np.isnan(out_big[:3]).all() and np.isnan(out_big[:, :5]).all()  # nothing outside
    assert np.isnan(out_big[12:]).all() and np.isnan(out_big[:, 202:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_strided_operands_take_the_plain_loop(dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 40)).astype(dtype)[:, ::2]
    w = rng.standard_normal((20, 90)).astype(dtype)[:, ::3]
    check(a, w)
    # rows in reverse (a negative stride) and a column-strided result: matmul_step's entry
    # point rebuilds both from their strides
    out_big = np.full((6, 60), np.nan, dtype)
    check(a[::-1], w, out_big[:, ::2])
    assert np.isnan(out_big[:, 1::2]).all()  # nothing between the result's columns


def run_in_fresh_process(code: str, cache, **env) -> None:
    """Run `code` in a new Python with these Numba settings (read once, at its import) and
    its own Numba cache; it must exit 0 having printed "ok"."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), **env}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_plain_loop_of_panels_stays_inside_each_panel(tmp_path):
    """The panels' plain loop (operands whose rows are not contiguous) reads each panel's own
    columns only: checked with Numba's bounds checks on, in a fresh process."""
    code = textwrap.dedent("""\
        import numpy as np
        from lstmc_runtime.gemm import matmul_panels, to_panels
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            a = np.asfortranarray(rng.standard_normal((8, 64)).astype(dtype))
            w = rng.standard_normal((64, 70)).astype(dtype)
            out = np.full((8, 70), np.nan, dtype)
            matmul_panels(a, to_panels(w), out)
            assert np.allclose(out, a @ w, rtol=1e-4, atol=1e-4), dtype
        print("ok")
        """)
    run_in_fresh_process(code, tmp_path, NUMBA_BOUNDSCHECK="1")


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(dtype):
    a = np.ones((9, 20), dtype)
    w = np.ones((20, 40), dtype)
    a[3, 5] = np.nan
    w[7, 33] = np.inf
    out = np.empty((9, 40), dtype)
    matmul_into(a, w, out)
    assert np.isnan(out[3]).all()
    assert np.isposinf(np.delete(out, 3, axis=0)[:, 33]).all()
    finite = np.delete(np.delete(out, 3, axis=0), 33, axis=1)
    assert (finite == 20).all()


def test_shape_mismatch_raises():
    a = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        matmul_into(a, np.ones((6, 8), np.float32), np.empty((4, 8), np.float32))
    with pytest.raises(ValueError, match="shapes"):
        matmul_into(a, np.ones((5, 8), np.float32), np.empty((4, 9), np.float32))
    panels = to_panels(np.ones((5, 40), np.float32))  # 2 panels of 32 on AVX-512
    with pytest.raises(ValueError, match="shapes"):
        matmul_panels(np.ones((4, 6), np.float32), panels, np.empty((4, 40), np.float32))
    with pytest.raises(ValueError, match="shapes"):  # more columns than the panels hold
        wide = panels.shape[0] * panels.shape[2] + 1
        matmul_panels(a, panels, np.empty((4, wide), np.float32))
    with pytest.raises(ValueError, match="whole vectors"):
        matmul_panels(a, panels[:, :, :3], np.empty((4, 3), np.float32))


@given(
    k=st.integers(0, 9),
    n=st.integers(0, 200),
    dtype=st.sampled_from(DTYPES),
)
def test_panels_layout_round_trips(k, n, dtype):
    w = np.arange(k * n, dtype=dtype).reshape(k, n) + 1
    panels = to_panels(w)
    width = PANEL_BYTES // np.dtype(dtype).itemsize
    assert panels.shape == (-(-n // width), k, width)
    assert panels.ctypes.data % 128 == 0 or panels.size == 0
    for p in range(panels.shape[0]):  # panel p holds columns [p * width, (p + 1) * width)
        cols = w[:, p * width : (p + 1) * width]
        np.testing.assert_array_equal(panels[p, :, : cols.shape[1]], cols)
        assert (panels[p, :, cols.shape[1] :] == 0).all()  # zero past column n
    np.testing.assert_array_equal(from_panels(panels, n), w)


def test_kernels_call_the_products_by_name_without_linking_their_code():
    """A compiled caller of matmul_step declares the C entry point and calls it; none of the
    products' code is in its module (which LLVM would optimize again in every kernel
    function: ~0.8 s of each one's compile)."""

    @njit
    def caller(a, w, out):
        matmul_step(a, w, out)

    a, w = np.ones((3, 4), np.float32), to_panels(np.ones((4, 40), np.float32))
    out = np.zeros((3, 40), np.float32)
    caller(a, w, out)
    np.testing.assert_array_equal(out, 4.0)
    # the function's module with what it links (where matmul_panels brought its tiles)
    ir = caller.overloads[caller.signatures[0]].library.get_llvm_str()
    assert "declare i32 @lstmc_matmul_panels_strided_float32(ptr" in ir
    assert "call i32 @lstmc_matmul_panels_strided_float32(" in ir
    assert "_rows_into" not in ir and "_strips_into" not in ir
    assert "_columns_tail" not in ir and "_plain_panels" not in ir  # the plain loop neither
    source = lstmc.compile(lstmc.builtin("gru"), dtype="float64").source
    assert "from lstmc_runtime.step_products import matmul_step as _matmul" in source
    assert source.index("load_step_products(_F)") < source.index("@njit")


def test_matmul_step_is_for_compiled_code():
    with pytest.raises(TypeError, match="from Python call matmul_panels"):
        matmul_step(np.ones((1, 1)), to_panels(np.ones((1, 1))), np.ones((1, 1)))


def test_generated_kernels_use_it_for_every_product():
    """The step's products and the input projection over all steps (in ranges of steps, and
    per thread under the unit split) go through the kernel; no BLAS call is left in the
    module of a shipped cell (np.dot stays for products of constants at -O0/-O1)."""
    source = lstmc.compile(lstmc.builtin("lstm")).source
    assert "_matmul(st_h, w_packed_h, v_packed_h)" in source
    assert "_matmul(x[t0:t1].reshape((t1 - t0) * B, n_input), w_packed_x" in source
    assert "_matmul(x[t : t + tn].reshape(tn * B, n_input), w_packed_x" in source  # _cols
    assert "np.dot" not in source
    # the weights the products read are packed in panels, and only those
    assert "PANELS = ['w_packed_h', 'w_packed_x']" in source
    kernel = lstmc.compile(lstmc.builtin("lstm"))
    packed = kernel.pack(kernel.init_params(input=20, hidden=24))
    assert packed.arrays["w_packed_h"].ndim == 3 and packed.arrays["b_i"].ndim == 1
    assert packed.widths == {"w_packed_h": 96, "w_packed_x": 96}


_HASWELL = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+popcnt,"
    "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f,-avx512vl,-avx512bw,-avx512dq"
)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_avx2_tiles(tmp_path):
    """Where Numba targets AVX2 (16 vector registers) the kernel takes its AVX2 tiles; they
    are checked here by compiling for Haswell's features in a fresh process. The prefetching
    paths, which no AVX2 CPU takes now (layout.SOFTWARE_PREFETCH), are called directly for the
    weights larger than L2, so that their AVX2 tiles stay right too."""
    code = textwrap.dedent("""\
        import numpy as np
        from numba import njit
        from lstmc_runtime import gemm
        geometry = (gemm.MAIN_ROWS, gemm.MAIN_VECS, gemm.STREAM_ROWS, gemm.VECTOR_BYTES)
        assert geometry == (6, 2, 6, 32), geometry
        assert not gemm.SOFTWARE_PREFETCH

        @njit
        def streamed(a, w, out):
            gemm._streamed_rows_into(a, w, out, True)

        rng = np.random.default_rng(0)
        big = gemm._PREFETCH_MIN_BYTES // 4 // 520 + 1  # k of a [k, 520] weight >= L2 (float32)
        for dtype in (np.float32, np.float64):
            for m, k, n in [(0, 3, 5), (1, 9, 70), (5, 17, 33), (6, 8, 64), (13, 31, 101),
                            (20, 5, 8), (13, big, 520), (40, big, 520)]:
                a = rng.standard_normal((m, k)).astype(dtype)
                w = rng.standard_normal((k, n)).astype(dtype)
                exact = a.astype(np.longdouble) @ w.astype(np.longdouble)
                mag = np.abs(a).astype(np.longdouble) @ np.abs(w).astype(np.longdouble)
                bound = (k + 1) * np.finfo(dtype).eps / 2 * mag
                products = [(gemm.matmul_into, w), (gemm.matmul_panels, gemm.to_panels(w))]
                if k == big:
                    products += [(streamed, gemm.to_panels(w))]
                if k == big and m >= gemm.STRIP_MIN_ROWS:
                    products += [(gemm._strips_into, gemm.to_panels(w))]
                for product, weight in products:
                    out = np.full((m, n), np.nan, dtype)
                    product(a, weight, out)
                    assert (np.abs(out - exact) <= bound).all(), (product, dtype, m, k, n)
        print("ok")
        """)
    run_in_fresh_process(code, tmp_path, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=_HASWELL)


def test_a_weight_is_read_in_one_layout(monkeypatch):
    """Packed weights have one layout: panels for the products' kernel, row-major for np.dot.
    No shipped cell reads a weight both ways; if code generation ever did, it is an error at
    compile time, not a wrong layout at run time."""
    from lstmc.codegen.cpu import CpuEmitter
    from lstmc.compiler import generate_source
    from lstmc.errors import CodegenError

    emit = CpuEmitter.emit_sequence

    def emit_and_read_by_dot(self, L):
        emit(self, L)
        self.dot_weights.add("w_packed_h")

    monkeypatch.setattr(CpuEmitter, "emit_sequence", emit_and_read_by_dot)
    with pytest.raises(CodegenError, match="w_packed_h"):
        generate_source(lstmc.builtin("lstm"), target="cpu", dtype="float32")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_a_fraction_of_an_element_apart_take_the_plain_loop(dtype):
    """Rows whose stride is not a whole number of elements (a view of raw bytes): the entry
    point counts strides in elements, so such rows must not reach it."""
    item = np.dtype(dtype).itemsize
    m, k, n = 5, 12, 40
    stride = (k + 1) * item + 2
    raw = np.zeros(m * stride + item, np.uint8)
    a = np.ndarray((m, k), dtype, raw, 0, (stride, item))
    a[...] = np.random.default_rng(0).standard_normal((m, k))
    w = np.random.default_rng(1).standard_normal((k, n)).astype(dtype)
    for product, weight in ((matmul_panels, to_panels(w)), (step_product, to_panels(w))):
        out = np.full((m, n), np.nan, dtype)
        product(a, weight, out)  # within the bound (the plain loop sums in its own order)
        err = np.abs(out.astype(np.longdouble) - exact_product(a, w))
        assert (err <= error_bound(a, w)).all(), (product.__name__, float(err.max()))
