"""Device functions of the CUDA run-time: the transcendental functions of one float type
(`device_math`) bound to the ops' `_vm_*` names, and `lane_sum`, the sum over a group of
adjacent lanes by a butterfly of warp shuffles (emulated with block barriers under the
simulator, which lacks the shuffle)."""

from __future__ import annotations

import math
import threading

import numpy as np
from lstmc_runtime.cuda_config import SIMULATOR
from numba import cuda

# -- device math -----------------------------------------------------------------------------


class DeviceMath:
    """Device functions for one float type: sigmoid, tanh, exp, log, softplus."""

    def __init__(self, dtype):
        F = np.dtype(dtype).type
        ZERO, ONE = F(0.0), F(1.0)
        INF, NAN = F(np.inf), F(np.nan)
        # exp(v) overflows above log(max float): return inf there without calling exp (the
        # simulator's math.exp would raise OverflowError; the GPU gives inf either way).
        EXP_MAX = F(math.log(np.finfo(F).max))
        dev = cuda.jit(device=True, inline="always")

        @dev
        def sigmoid(v):
            # exp of a non-positive argument only: exact limits 0 and 1, NaN stays NaN
            if v >= ZERO:
                return ONE / (ONE + F(math.exp(-v)))
            z = F(math.exp(v))
            return z / (ONE + z)

        @dev
        def tanh(v):
            return F(math.tanh(v))

        @dev
        def exp(v):
            if v > EXP_MAX:
                return INF
            return F(math.exp(v))

        @dev
        def log(v):
            if v < ZERO:
                return NAN
            if v == ZERO:
                return -INF
            return F(math.log(v))

        @dev
        def softplus(v):
            # max(v, 0) + log1p(exp(-|v|)): no overflow, softplus(-inf) = 0, NaN stays NaN
            if v != v:  # noqa: PLR0124
                return v
            m = v if v > ZERO else ZERO  # noqa: FURB136
            return m + F(math.log1p(F(math.exp(-abs(v)))))

        self.sigmoid, self.tanh, self.exp, self.log, self.softplus = (
            sigmoid,
            tanh,
            exp,
            log,
            softplus,
        )


_MATH: dict = {}


def device_math(dtype) -> DeviceMath:
    key = np.dtype(dtype)
    if key not in _MATH:
        _MATH[key] = DeviceMath(key)
    return _MATH[key]


# -- lane reductions -------------------------------------------------------------------------

if SIMULATOR:

    def _shfl_xor_sim(value, offset):
        """The value of lane `tid ^ offset`: an emulation of `shfl_xor_sync` for the
        simulator, through a per-block mailbox and two block barriers. Callers keep the
        shuffle block-uniform (every thread of the block reaches it), as the barrier needs."""
        th = threading.current_thread()
        box = th._manager.__dict__.setdefault("_lstmc_lanes", {})
        box[th.thread_id] = value
        th.syncthreads()
        other = box[th.thread_id ^ offset]
        th.syncthreads()
        return other

    shfl_xor = cuda.jit(device=True)(_shfl_xor_sim)
else:

    @cuda.jit(device=True, inline="always")
    def shfl_xor(value, offset):
        return cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)


@cuda.jit(device=True, inline="always")
def lane_sum(v, lanes):
    """Sum of v over the aligned group of `lanes` lanes (a power of two up to 32); every lane
    of the group gets the sum. Every lane of the warp must call it."""
    off = lanes >> 1
    while off > 0:
        v += shfl_xor(v, off)
        off >>= 1
    return v
