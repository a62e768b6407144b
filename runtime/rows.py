"""Row reductions that generated kernels call instead of inlining: one compiled copy per
dtype, cached on disk with the runtime, shared by every layer_norm of every kernel.

Inlining the statistics into each kernel cost compile time for every layer norm of a cell
(layernorm_lstm has nine: 8 s cold instead of 3 s).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["mean_inv_std"]


@njit(inline="always")
def _sq(d):
    return d * d


@njit(cache=True, nogil=True, error_model="numpy")
def mean_inv_std(row, start, n, eps):
    """(mean, 1 / sqrt(var + eps)) of row[start:start + n], in float64 as the reference.

    Eight interleaved partial sums combined in a fixed order (deterministic): a single
    running sum chains every add on the one before (4 cycles each), and without fastmath
    LLVM may not reorder it. The variance is the two-pass one, accurate for rows with a
    large mean.
    """
    n8 = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for k in range(start, start + n8, 8):
        s0 += row[k]
        s1 += row[k + 1]
        s2 += row[k + 2]
        s3 += row[k + 3]
        s4 += row[k + 4]
        s5 += row[k + 5]
        s6 += row[k + 6]
        s7 += row[k + 7]
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for k in range(start + n8, start + n):
        total += row[k]
    mean = total / n
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for k in range(start, start + n8, 8):
        s0 += _sq(row[k] - mean)
        s1 += _sq(row[k + 1] - mean)
        s2 += _sq(row[k + 2] - mean)
        s3 += _sq(row[k + 3] - mean)
        s4 += _sq(row[k + 4] - mean)
        s5 += _sq(row[k + 5] - mean)
        s6 += _sq(row[k + 6] - mean)
        s7 += _sq(row[k + 7] - mean)
    var = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for k in range(start + n8, start + n):
        var += _sq(row[k] - mean)
    return mean, 1.0 / np.sqrt(var / n + eps)
