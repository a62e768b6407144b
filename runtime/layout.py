"""The machine's sizes that the product kernel (lstmc_runtime.gemm) is built around, and the
weight layout and input-projection chunks that follow from them.

- Vectors: 64 bytes where Numba compiles for AVX-512, else 32; a panel of a packed weight is
  two vectors wide (the main tile reads two panels at once on AVX-512, one on AVX2).
- L2: the first core's L2 size, which decides when a product prefetches the next panel
  (gemm, on CPUs where that pays: SOFTWARE_PREFETCH) and when the batch split makes the
  hoisted values for all rows first (cpu_glue).
- `to_panels` / `from_panels`: a row-major [K, N] weight as [P, K, PANEL] panels and back.
- `chunk_steps`: how many steps of the input projection a unit-split call makes at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _has_avx512() -> bool:
    """Whether Numba compiles for AVX-512 here (its target: NUMBA_CPU_FEATURES, else the host)."""
    from llvmlite import binding as llvm
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features


def _cpu_name() -> str:
    """The CPU Numba compiles for (NUMBA_CPU_NAME, else the host's: "skylake-avx512", "znver3")."""
    from llvmlite import binding as llvm
    from numba.core import config

    return config.CPU_NAME or llvm.get_host_cpu_name()


# Vector registers of 64 bytes on AVX-512, else 32 (AVX2); a panel is two vectors wide.
_AVX512 = _has_avx512()
VECTOR_BYTES = 64 if _AVX512 else 32
PANEL_BYTES = 2 * VECTOR_BYTES  # a panel of a packed weight: two vectors
CPU_NAME = _cpu_name()


# Whether products of weights larger than L2 ask for the next panel ahead (gemm's prefetching
# tiles). Measured to pay on Intel's AVX-512 Xeons only (one core, [64, 512] x [512, 2048]:
# 137 -> 146 GFLOP/s, 2 MB L2). On an AMD EPYC (Zen 3: 512 KB L2, 32 MB L3, AVX2) the same
# tiles ran at half the plain ones' rate ([64, 512] x [512, 2048]: 38-43 GFLOP/s against
# 94-96; [16, 256] x [256, 1024]: 43 against 83-93), which its hardware prefetchers feed from
# L3 on their own; lstm H=512, B=64 ran at 0.26x nn.LSTM's speed there.
def software_prefetch(cpu_name: str, avx512: bool) -> bool:
    """Whether gemm's prefetching tiles pay on this CPU (see SOFTWARE_PREFETCH)."""
    return avx512 and not cpu_name.startswith("znver")


SOFTWARE_PREFETCH = software_prefetch(CPU_NAME, _AVX512)


def _l2_bytes(default: int = 1 << 20) -> int:
    """The first core's L2 size from sysfs (Linux), else `default`."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return default


L2_BYTES = _l2_bytes()


def to_panels(w, dtype=None):
    """A row-major [K, N] weight as panels [P, K, PANEL] (PANEL = PANEL_BYTES / itemsize,
    P = ceil(N / PANEL)), zero past column N, 128-byte aligned: what matmul_panels reads."""
    import numpy as np
    from lstmc_runtime.kernel import aligned_empty

    w = np.asarray(w, dtype=dtype)
    k, n = w.shape
    panel = PANEL_BYTES // w.dtype.itemsize
    count = -(-n // panel)
    padded = np.zeros((k, count * panel), w.dtype)
    padded[:, :n] = w
    out = aligned_empty((count, k, panel), w.dtype)
    out[...] = padded.reshape(k, count, panel).transpose(1, 0, 2)
    return out


def from_panels(w, n: int):
    """The row-major [K, n] weight that `to_panels` packed (a copy)."""
    count, k, panel = w.shape
    return w.transpose(1, 0, 2).reshape(k, count * panel)[:, :n].copy()


# The input projection of a unit-split call is made a few steps at a time, just before the
# steps read it, instead of for all T steps up front: [T, B, 4H] of it (13 MB at H=128, B=64)
# went out to memory and came back for each step's element-wise loop. A chunk of CHUNK_BYTES
# stays in the core's L2 next to the step's weights. Each chunk reads the input weight again,
# so chunks are made only while that weight is at most CHUNK_MAX_WEIGHT_BYTES. Measured on
# one thread against all steps at once: lstm H=128, B=64 (256 KB) 1.07-1.09x faster, H=256
# (1 MB) 1.03-1.06x. With the weight in panels (read as sequential streams) chunks pay up to
# 4 MB too: two threads, 2 MB each, lstm H=512, B=64 1.01-1.05x, gru H=512, B=64 1.05x (the
# limit was 1 MB before panels, where H=512 measured 0.83-0.94x); lstm H=1024 (8 MB) ties.
CHUNK_BYTES = 256 << 10
CHUNK_MAX_WEIGHT_BYTES = 4 << 20


@njit(cache=True, nogil=True)
def chunk_steps(T, B, width, weight_elements, itemsize):
    """Steps of a [steps, B, width] chunk of the hoisted projections, whose weights have
    `weight_elements` elements: all T when the weights are bigger than CHUNK_MAX_WEIGHT_BYTES,
    else as many as CHUNK_BYTES hold (at least 1, at most T)."""
    per_step = B * width * itemsize
    if per_step == 0 or weight_elements * itemsize > CHUNK_MAX_WEIGHT_BYTES:
        return max(T, 1)
    return max(1, min(T, CHUNK_BYTES // per_step))


# Memory that two threads write side by side starts on this many bytes: a pair of 64-byte
# cache lines, the unit the adjacent-line prefetcher moves (lstmc_runtime.kernel.ALIGN).
ALIGN_BYTES = 128
# Elements a workspace holds beyond its buffers for each buffer's start on ALIGN_BYTES:
# 128 bytes of float32 (float64 needs 16).
ALIGN_SLACK = 32


@njit(nogil=True, inline="always")
def aligned_index(work, i):
    """The first index j >= i of the 1-D `work` whose element starts on ALIGN_BYTES (its data
    on a multiple of its itemsize, as np.empty's is). A prologue carves its hoisted [T, B, n]
    buffers from a workspace that the batch split's threads fill side by side, each its rows
    of every step, once a call. From np.empty's 32 bytes (Numba's), the rows where two
    chunks meet could share a cache line; from 128 they share none where a chunk's rows of a
    step are a multiple of 128 bytes (B * n * itemsize and the cut's rows, as for most sizes).
    """
    at = np.intp(work.ctypes.data) + np.intp(i) * work.itemsize
    return np.intp(i) + (-at) % ALIGN_BYTES // work.itemsize
