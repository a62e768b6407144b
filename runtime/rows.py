"""Row reductions that generated kernels call instead of inlining: one compiled copy per
dtype, cached on disk with the runtime, shared by every layer_norm of every kernel.

Inlining the statistics into each kernel cost compile time for every layer norm of a cell
(layernorm_lstm has nine: 8 s cold instead of 3 s).
"""

from __future__ import annotations

import numpy as np
from lstmc_runtime.vmath import wide_vectors
from numba import njit

__all__ = ["mean_inv_std", "rows_mean_inv_std"]


_U = np.uint64  # unsigned indices: no negative-index wrap, so the loops vectorize

# `reassoc` lets LLVM split each sum into SIMD lanes of partial sums (mean_inv_std says why
# that is safe here); `contract` lets it fuse d * d + s2 into one FMA, one rounding fewer.
# No other fast-math flag: NaN and inf keep their IEEE meaning. Division by n is a product
# with 1/n, made once a call: two float64 divisions a row were ~2.5 ns of its ~15 (H=64).
# Together, a row of 64 in a [16, 256] step buffer: 14.7 -> 11.6 ns; of 256: 39 -> 31.5 ns.
_FLAGS = {"reassoc", "contract"}


# The sums themselves and the statistics from them, inlined (at Numba IR level) into both
# entry points below; generated kernels call those, compiled once here, and never inline them.
# The sums run in the row's own type, like torch's layer_norm (float32 rows: float32 sums, in
# 8 SIMD lanes on AVX2 and no conversion an element); the statistics from them in float64.
# A float32 row of 64 in a [16, 256] step buffer costs 9.6 ns with float32 sums (the check of
# _refined included) against 11.4 with float64 sums; a row of 256 24 ns against 34 (AMD EPYC).
# Their rounding is bounded in mean_inv_std's docstring. (Float32 sums overflow where a row's
# values lie ~1e19 apart, as torch's do: the norm then gives beta.)
@njit(nogil=True, error_model="numpy", fastmath=_FLAGS, inline="always")
def _shifted_sums(row, start, n, shift):
    s1 = row.dtype.type(0)
    s2 = row.dtype.type(0)
    for k in range(_U(n)):
        d = row[_U(start) + k] - shift
        s1 += d
        s2 += d * d
    return s1, s2


@njit(nogil=True, error_model="numpy", fastmath=_FLAGS, inline="always")
def _sums(row, start, n):
    """The row's sums shifted by its first value: (shift, S1, S2)."""
    shift = row[start] if n > 0 else row.dtype.type(0)
    s1, s2 = _shifted_sums(row, start, n, shift)
    return shift, s1, s2


@njit(nogil=True, error_model="numpy", fastmath=_FLAGS, inline="always")
def _refined(row, start, n, inv_n, shift, s1, s2):
    """The sums again, shifted by the mean they give, if their shift lies more than two
    standard deviations from it (m1^2 > 4 var, with n var = s2 - s1 m1): beyond that the
    shift would amplify their rounding more than 9 times (mean_inv_std). ~5% of Gaussian
    rows. A loop of its own after the sums of all rows (rows_mean_inv_std): inside theirs,
    the branch made a row of 64 cost 10.9 ns, not 9.7 (8.4 with no check at all)."""
    m1 = s1 * inv_n
    if m1 * m1 * n > 4.0 * (s2 - s1 * m1):
        shift = row.dtype.type(shift + m1)
        s1, s2 = _shifted_sums(row, start, n, shift)
    return shift, s1, s2


@njit(nogil=True, error_model="numpy", fastmath=_FLAGS, inline="always")
def _from_sums(shift, s1, s2, inv_n, eps):
    m1 = s1 * inv_n
    var = (s2 - s1 * m1) * inv_n
    return shift + m1, 1.0 / np.sqrt(var + eps)


# The entry points run without reference counts (`_nrt=False`), like lstmc_runtime.gemm:
# called every step, they paid an atomic increment and decrement a call for each array.
@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS, _nrt=False)
def mean_inv_std(row, start, n, eps):
    """(mean, 1 / sqrt(var + eps)) of row[start:start + n], as float64.

    One pass over the row, shifted by its first element K: with S1 = sum(x - K) and
    S2 = sum((x - K)^2), mean = K + S1/n and var = (S2 - S1^2/n)/n. The shift is what makes
    one pass safe. The sums' rounding is at most (n + 3) u (S2 + S1^2/n) (u: the unit
    roundoff of the row's type; Higham 4.3, and the rounding of each x - K), and
    S2 + S1^2/n = n (var + 2 (mean - K)^2): relative to var, an amplification of
    1 + 2 (mean - K)^2 / var. A row whose first value lies more than two standard deviations
    from the mean is summed again, shifted by that mean (_sums), so the amplification stays
    under ~9 and the variance keeps ~9 (n + 3) u of relative accuracy, rows with a large mean
    or an outlier first value included. (Shifted by an outlier 100 standard deviations out,
    float32 rows of 256 had 2e-5 of relative error in 1/std; see tests/test_rows.py.)

    The sums are in the row's type (float32 for float32 rows, as torch's); K + S1/n and the
    rest in float64, so that a row with a large mean and a small spread (c = 100 +- 0.01)
    keeps its mean to the spread's accuracy: x - K is exact for such rows (Sterbenz), and a
    float32 two-pass mean there was 1e-3 of a standard deviation off.

    `reassoc` (with `contract`, and no other fast-math flag: see _FLAGS) lets LLVM split each
    sum into SIMD lanes of partial sums, combined in the order its vectorizer fixes at compile
    time, so results are the same from call to call. A running sum instead chains
    every add on the one before: the two-pass version with 8 partial sums took 0.74-1.1 ns an
    element, n = 64..512.
    """
    wide_vectors()  # the sums in 512-bit vectors on AVX-512 (16 float32 or 8 float64 lanes)
    inv_n = 1.0 / n
    shift, s1, s2 = _sums(row, start, n)
    shift, s1, s2 = _refined(row, start, n, inv_n, shift, s1, s2)
    return _from_sums(shift, s1, s2, inv_n, eps)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS, _nrt=False)
def rows_mean_inv_std(rows, start, n, eps, out):
    """For every row r of the 2-D `rows`, (out[0, r], out[1, r]) = (mean, 1 / sqrt(var + eps))
    of rows[r, start:start + n], as mean_inv_std computes them; `out` is float64 [3, rows],
    its last row scratch.

    A step's layer norms call this once for all of their rows. Called a row at a time, the
    statistics cost ~28 ns a row in the kernel (layernorm_lstm H=64, B=16: 144 calls a step);
    here a float32 row of 64 costs ~9.6 ns (AMD EPYC): the sums, the check of _refined, then
    the chain after them (reduce, divide, sqrt, divide), each a loop over all rows. `out`
    holds a statistic a row, not a row a statistic, so that the last loop runs in SIMD lanes
    across rows: with float64 sums, out as [rows, 3] made a row of 64 cost 14.2 ns, not 11.4.
    """
    wide_vectors()
    nr = rows.shape[0]
    inv_n = 1.0 / n
    for r in range(nr):
        out[0, r], out[1, r], out[2, r] = _sums(rows[r], start, n)
    for r in range(nr):
        out[0, r], out[1, r], out[2, r] = _refined(
            rows[r], start, n, inv_n, out[0, r], out[1, r], out[2, r]
        )
    for r in range(nr):
        out[0, r], out[1, r] = _from_sums(out[0, r], out[1, r], out[2, r], inv_n, eps)
