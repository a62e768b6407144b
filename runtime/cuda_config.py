"""What the CUDA run-time decides once per process: whether Numba's CUDA simulator runs
(NUMBA_ENABLE_CUDASIM=1), the tile and block shapes of every kernel (the simulator gets the
smallest that still exercise every index path), the kernel variants, and the Numba float types
of shared and local arrays."""

from __future__ import annotations

import numpy as np
from lstmc_runtime.errors import KernelArgumentError
from numba.core import types as nbtypes


def _simulator_enabled() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # older layouts keep it in numba's own config
        from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


SIMULATOR = _simulator_enabled()

# -- tile shapes -----------------------------------------------------------------------------
# The stepwise fused kernel is a register-tiled product [B, in] x [in, K*E] with the step's
# element-wise code as its epilogue: a block covers BM batch rows x BN units, each thread TM x TN
# of them, and the reduction runs through shared memory in chunks of BK. The persistent kernel
# gives every group of L lanes one unit and NB batch rows. The simulator runs a thread per
# Python thread, so it gets the smallest shapes that still exercise every index path.
if SIMULATOR:
    STEP_TILE = (4, 4, 2, 2, 2)  # BM, BN, BK, TM, TN
    GEMM_TILE = (4, 4, 2, 2, 2)
    PERSIST_NB = 2
    PERSIST_LANES = 4
    PERSIST_THREADS = 8
    POINT_THREADS = 8
    NORM_THREADS = 4
else:
    STEP_TILE = (32, 32, 16, 2, 2)
    GEMM_TILE = (64, 64, 16, 4, 4)
    PERSIST_NB = 4
    PERSIST_LANES = 32
    PERSIST_THREADS = 256
    POINT_THREADS = 256
    NORM_THREADS = 128

VARIANTS = ("auto", "stepwise", "persistent")


def check_variant(variant) -> str:
    if variant not in VARIANTS:
        raise KernelArgumentError(
            f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        )
    return variant


def check_blocks(blocks) -> int:
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
        raise KernelArgumentError(f"blocks must be a positive integer, got {blocks!r}")
    return int(blocks)


def numba_type(dtype):
    """The Numba scalar type of a NumPy float type (for shared and local arrays)."""
    return nbtypes.float32 if np.dtype(dtype) == np.float32 else nbtypes.float64


F64 = nbtypes.float64
