"""Tests for lstmc_runtime.rows.mean_inv_std and rows_mean_inv_std, the statistics of every
compiled layer_norm:
against long-double two-pass statistics, with a dtype-justified bound, NaN propagation and
run-to-run determinism."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lstmc_runtime.rows import mean_inv_std, rows_mean_inv_std

LD = np.longdouble
U64 = np.finfo(np.float64).eps / 2


@given(
    n=st.integers(1, 300),
    start=st.integers(0, 17),
    shift=st.sampled_from([0.0, 3.0, 1e4]),
    outlier=st.sampled_from([0.0, 10.0, 100.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize("batched", [False, True], ids=["one_row", "rows"])
def test_matches_long_double_statistics(n, start, shift, outlier, dtype, seed, batched):
    rng = np.random.default_rng(seed)
    row = rng.standard_normal(start + n + 5) + shift
    row[start] += outlier  # the sums' shift, this many standard deviations out
    row = row.astype(dtype)
    if batched:  # the row among others (5: out's two axes differ), which must not change
        # its statistics
        rows = (rng.standard_normal((5, row.size)) + shift).astype(dtype)
        rows[1] = row
        out = np.full((3, 5), np.nan)
        rows_mean_inv_std(rows, start, n, 1e-5, out)
        mean, inv = out[0, 1], out[1, 1]
    else:
        mean, inv = mean_inv_std(row, start, n, 1e-5)
    seg = row[start : start + n].astype(LD)
    ref_mean = seg.mean()
    ref_var = ((seg - ref_mean) ** 2).mean()
    # Float64 sums of n terms in any order: error <= n * u * sum|term| (Higham 4.3). The sums
    # are of d = x - K (K = the first value); the variance S2/n - (S1/n)^2 then carries the
    # rounding of S2 and of S1^2/n, both at most (n + 3) * u * (S2 + S1^2/n) / n.
    d = seg - seg[0]
    s1, s2 = d.sum(), (d * d).sum()
    assert abs(mean - ref_mean) <= (n + 2) * U64 * (abs(seg[0]) + np.abs(d).sum() / n)
    var_err = (n + 3) * U64 * (s2 + s1 * s1 / n) / n
    ref_inv = 1 / np.sqrt(ref_var + LD(1e-5))
    # 1/sqrt(v) has relative error var_err / (2 v), plus the rounding of sqrt and the division.
    assert abs(inv - ref_inv) <= (var_err / (2 * (ref_var + LD(1e-5))) + 3 * U64) * ref_inv


def test_outlier_first_value_keeps_the_variance_accurate():
    """The shift is the row's first value; when that value is an outlier the bound above still
    holds, since (mean - K)^2 <= n * var."""
    row = np.zeros(100, np.float64)
    row[0] = 1e8
    row[1:] = np.random.default_rng(3).standard_normal(99)
    _, inv = mean_inv_std(row, 0, 100, 1e-5)
    seg = row.astype(LD)
    ref_inv = 1 / np.sqrt(((seg - seg.mean()) ** 2).mean() + LD(1e-5))
    assert abs(inv - ref_inv) <= 1e-13 * ref_inv


def test_nan_propagates_and_results_repeat():
    row = np.random.default_rng(0).standard_normal(200).astype(np.float32)
    first = mean_inv_std(row, 3, 150, 1e-5)
    assert mean_inv_std(row, 3, 150, 1e-5) == first
    row[100] = np.nan
    mean, inv = mean_inv_std(row, 3, 150, 1e-5)
    assert np.isnan(mean) and np.isnan(inv)
    mean, inv = mean_inv_std(row, 101, 50, 1e-5)  # the NaN is outside this segment
    assert np.isfinite(mean) and np.isfinite(inv)
    row[3] = np.inf  # the shift itself: inf - inf is NaN, so NaN out, never a crash
    mean, inv = mean_inv_std(row, 3, 10, 1e-5)
    assert np.isnan(inv)


def test_rows_nan_stays_in_its_row():
    rows = np.random.default_rng(1).standard_normal((4, 70)).astype(np.float32)
    rows[2, 40] = np.nan
    out = np.empty((3, 4))
    rows_mean_inv_std(rows, 5, 64, 1e-5, out)
    assert np.isnan(out[:2, 2]).all()
    for r in (0, 1, 3):
        assert (out[0, r], out[1, r]) == pytest.approx(mean_inv_std(rows[r], 5, 64, 1e-5), 1e-14)
