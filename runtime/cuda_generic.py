"""Generic kernels of the CUDA run-time: the register-tiled matrix product of the hoisted
input projection over all T*B rows (`C = A @ W.T`, specialized per dtype), and device copies
and fills of 2- and 3-D arrays of any layout, with their host wrappers."""

from __future__ import annotations

import numpy as np
from lstmc_runtime.cuda_config import GEMM_TILE, POINT_THREADS, SIMULATOR, numba_type
from numba import cuda

# -- generic kernels -------------------------------------------------------------------------


def _make_gemm(dtype):
    """C[m, n] = sum_k A[m, k] * W[n, k], register-tiled through shared memory.

    A is [M, K] in any layout (the input, or a column block of a hoisted value), W the packed
    weight [N, K] (rows = output units), C [M, N]. Grid: (ceil(M/BM), ceil(N/BN)), block
    (BN/TN, BM/TM). Each thread keeps a TM x TN tile of C in registers.
    """
    F = np.dtype(dtype).type
    NT = numba_type(dtype)
    ZERO = F(0.0)
    BM, BN, BK, TM, TN = GEMM_TILE

    @cuda.jit
    def gemm_nt(A, W, C):
        M = A.shape[0]
        K = A.shape[1]
        N = W.shape[0]
        # Dynamic shared memory only: the simulator hands static shared arrays out racily.
        sh = cuda.shared.array(0, NT)  # A tile [BK, BM], then W tile [BK, BN]
        acc = cuda.local.array((TM, TN), NT)
        fa = cuda.local.array(TM, NT)
        fw = cuda.local.array(TN, NT)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nthr = cuda.blockDim.x * cuda.blockDim.y
        tid = ty * cuda.blockDim.x + tx
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        for p in range(TM):
            for q in range(TN):
                acc[p, q] = ZERO
        for k0 in range(0, K, BK):
            for e in range(tid, BM * BK, nthr):
                r = e // BK
                c = e - r * BK
                m = m0 + r
                k = k0 + c
                sh[c * BM + r] = A[m, k] if (m < M and k < K) else ZERO
            for e in range(tid, BN * BK, nthr):
                r = e // BK
                c = e - r * BK
                n = n0 + r
                k = k0 + c
                sh[BK * BM + c * BN + r] = W[n, k] if (n < N and k < K) else ZERO
            cuda.syncthreads()
            for c in range(BK):
                for p in range(TM):
                    fa[p] = sh[c * BM + ty * TM + p]
                for q in range(TN):
                    fw[q] = sh[BK * BM + c * BN + tx * TN + q]
                for p in range(TM):
                    for q in range(TN):
                        acc[p, q] += fa[p] * fw[q]
            cuda.syncthreads()
        for p in range(TM):
            m = m0 + ty * TM + p
            for q in range(TN):
                n = n0 + tx * TN + q
                if m < M and n < N:
                    C[m, n] = acc[p, q]

    return gemm_nt


@cuda.jit
def copy_2d(src, dst):
    """dst[...] = src[...] for 2-D arrays of any layout (device copies, strided inputs)."""
    n1 = dst.shape[1]
    for idx in range(cuda.grid(1), dst.shape[0] * n1, cuda.gridsize(1)):
        r = idx // n1
        dst[r, idx - r * n1] = src[r, idx - r * n1]


@cuda.jit
def fill_2d(dst, value):
    n1 = dst.shape[1]
    for idx in range(cuda.grid(1), dst.shape[0] * n1, cuda.gridsize(1)):
        r = idx // n1
        dst[r, idx - r * n1] = value


_GEMM: dict = {}


def gemm_kernel(dtype):
    key = np.dtype(dtype)
    if key not in _GEMM:
        _GEMM[key] = _make_gemm(key)
    return _GEMM[key]


def _launch_config_copy(n: int) -> tuple:
    threads = min(POINT_THREADS, max(1, n)) if SIMULATOR else POINT_THREADS
    return max(1, min(-(-n // threads), 65535)), threads


def _as_2d(a):
    """A C-contiguous array as [rows, last dimension] (the simulator's shapes take no -1)."""
    shape = tuple(a.shape)
    return a.reshape(int(np.prod(shape[:-1], dtype=np.int64)), shape[len(shape) - 1])


def device_copy(src, dst, stream) -> None:
    """dst[...] = src[...] on the device, for 2- or 3-D arrays of the same shape."""
    if dst.size == 0:
        return
    if src.is_c_contiguous():
        s = _as_2d(src)
    elif src.ndim == 3:  # strided 3-D: one 2-D copy per leading index
        for i in range(src.shape[0]):
            device_copy(src[i], dst[i], stream)
        return
    else:
        s = src
    d = _as_2d(dst)
    grid, threads = _launch_config_copy(d.size)
    copy_2d[grid, threads, stream or 0](s, d)


def device_fill(dst, value, stream) -> None:
    if dst.size == 0:
        return
    d = _as_2d(dst)
    grid, threads = _launch_config_copy(d.size)
    fill_2d[grid, threads, stream or 0](d, dst.dtype.type(value))
