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
@njit(nogil=True, error_model="numpy", fastmath=_FLAGS, inline="always")
def _sums(row, start, n):
    shift = row[start] if n > 0 else 0.0
    s1 = 0.0
    s2 = 0.0
    for k in range(_U(n)):
        d = row[_U(start) + k] - shift
        s1 += d
        s2 += d * d
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
    """(mean, 1 / sqrt(var + eps)) of row[start:start + n], in float64 as the reference.

    One pass over the row, shifted by its first element K: with S1 = sum(x - K) and
    S2 = sum((x - K)^2), mean = K + S1/n and var = (S2 - S1^2/n)/n. The shift is what makes
    one pass safe: the cancellation in S2 - S1^2/n is at most (mean - K)^2 / var <= n times
    the rounding of the sums (K is one of the values), so the variance keeps ~(n + 3) ulp of
    relative accuracy even for rows with a large mean, like the two-pass formula.

    `reassoc` (with `contract`, and no other fast-math flag: see _FLAGS) lets LLVM split each
    sum into SIMD lanes of partial sums, combined in the order its vectorizer fixes at compile
    time, so results are the same from call to call. A running sum instead chains
    every add on the one before: the two-pass version with 8 partial sums took 0.74-1.1 ns an
    element, n = 64..512.
    """
    wide_vectors()  # the sums in 512-bit vectors on AVX-512 (8 float64 lanes, not 4)
    shift, s1, s2 = _sums(row, start, n)
    return _from_sums(shift, s1, s2, 1.0 / n, eps)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS, _nrt=False)
def rows_mean_inv_std(rows, start, n, eps, out):
    """For every row r of the 2-D `rows`, (out[0, r], out[1, r]) = (mean, 1 / sqrt(var + eps))
    of rows[r, start:start + n], as mean_inv_std computes them; `out` is float64 [3, rows],
    its last row scratch.

    A step's layer norms call this once for all of their rows. Called a row at a time, the
    statistics cost ~28 ns a row in the kernel (layernorm_lstm H=64, B=16: 144 calls a step);
    here a float32 row of 64 costs ~11.4 ns (AMD EPYC): the sums, then the chain after them
    (reduce, divide, sqrt, divide), which the second loop runs for all rows after the sums.
    `out` holds a statistic a row, not a row a statistic, so that the second loop runs in SIMD
    lanes across rows: with out as [rows, 3], a row of 64 cost 14.2 ns.

    Float32 sums for float32 rows (as torch's layer_norm) were tried: 9.6 ns a row of 64, with
    a second pass for rows whose first value is an outlier (without it, 2e-5 of 1/std was
    lost at 100 standard deviations out, n = 256). layernorm_lstm H=64, B=16 was no faster
    measurably (1.24x the plain LSTM on two threads, 1.16x on one, against 1.23x and 1.18x),
    and its median error against float64 over T=100 grew (2.7e-4 against 2.2e-4 at H=64,
    7.6e-4 against 3.7e-4 at H=128; torch's eager float32 loop 2.0e-4 and 5.8e-4).
    """
    wide_vectors()
    nr = rows.shape[0]
    for r in range(nr):
        out[0, r], out[1, r], out[2, r] = _sums(rows[r], start, n)
    inv_n = 1.0 / n
    for r in range(nr):
        out[0, r], out[1, r] = _from_sums(out[0, r], out[1, r], out[2, r], inv_n, eps)
