"""The per-step product of a recurrent cell, `out = a @ w`, with a register-blocked kernel.

A step's product is small in one dimension: `a` is the state, [B, K] with B the batch (often
1 to 64), `w` the packed weight, [K, N]. BLAS libraries tune sgemm for large square-ish
shapes; at these shapes OpenBLAS reached 50-110 GFLOP/s a core here, and every call pays
for argument checks and thread decisions, microseconds against steps that last
microseconds. This kernel is compiled into the cell's own loop instead.

It is the classic GEMM micro-kernel: a tile of rows of `out` by SIMD vectors of columns lives
in registers while k runs over the whole K (the tile intrinsics: lstmc_runtime.tiles). This
module chooses the tiles, their order over `out` and the prefetches. A caveat for
developers: Numba's cache of the functions below watches this file only; after editing
tiles.py or layout.py, clear runtime/__pycache__ (an install rewrites them all, and the
generated kernels' cache key hashes every runtime file).

Rows go in blocks of MAIN_ROWS (6), then 4, 2 and 1; columns in groups of the block's tile
width (MAIN_VECS vectors: 4 on AVX-512, 2 on AVX2), then of two vectors, then one at a time,
then, for the last columns (fewer than a vector), a plain loop. On CPUs where software
prefetch pays (layout.SOFTWARE_PREFETCH: Intel's AVX-512 Xeons), a weight larger than L2 goes
by once, prefetched a panel or a strip ahead: in 8-row blocks of one panel for fewer than
STRIP_MIN_ROWS rows, else in strips of the main tile's width that every row goes through.
Elsewhere such weights take the same tiles as smaller ones, the hardware prefetchers
bringing the panels' streams in.
The same kernel serves the input projection over all steps, in chunks of rows that stay in L2.

Weights packed once (`kernel.pack`) are laid out in panels (`to_panels`, `matmul_panels`):
[P, K, PANEL] with panel p holding columns [p * PANEL, (p + 1) * PANEL) of the [K, N] weight,
PANEL being two vectors. A tile then reads w as one sequential stream per panel,
as a BLAS does after copying w into panels on every call. Read in place from a row-major
[K, N], a tile takes a piece of every row, N elements apart: a new 4 KB page at each k once
N >= 1024, where the hardware prefetchers stop, so the step's weight came in at memory
latency when it was not in L2 (one core of a Xeon, float32, [64, 512] x [512, 1024]: 70
GFLOP/s row-major, 167 in panels, OpenBLAS 127).
"""

from __future__ import annotations

# The machine's sizes and the weight layout: lstmc_runtime.layout (re-exported here, where
# the kernels that need them live).
from lstmc_runtime.layout import (
    _AVX512,
    CHUNK_MAX_WEIGHT_BYTES,
    L2_BYTES,
    PANEL_BYTES,
    SOFTWARE_PREFETCH,
    VECTOR_BYTES,
    chunk_steps,
    from_panels,
    to_panels,
)
from lstmc_runtime.tiles import make_tile
from numba import carray, njit
from numba.extending import overload
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "CHUNK_MAX_WEIGHT_BYTES",
    "L2_BYTES",
    "PANEL_BYTES",
    "VECTOR_BYTES",
    "chunk_steps",
    "from_panels",
    "matmul_into",
    "matmul_panels",
    "to_panels",
]


# The tile geometry follows the vector registers. AVX-512: 32 registers of 64 bytes, main tile
# 6 rows x 4 vectors (24 accumulators; a k loads 4 vectors of w and broadcasts 6 elements of a
# for 24 fused multiply-adds, where 8 x 2 made 10 loads for 16). One core of a Xeon, float32,
# GFLOP/s, 8 x 2 -> 6 x 4, measured in turns: [64, 32] x [32, 128] 110 -> 118, [512, 32] x
# [32, 128] 120 -> 135, [64, 128] x [128, 512] 143 -> 151, [128, 128] x [128, 512] 142 -> 150,
# [16, 128] x [128, 512] 129 -> 132, [64, 256] x [256, 1024] 137 -> 136. AVX2 has 16 registers
# of 32 bytes, where an 8 x 2 tile spilled (measured with NUMBA_CPU_FEATURES set to Haswell's:
# ~50 GFLOP/s against ~110): there the main tile is the classic 6 x 2 (12 accumulators, 2
# loads, 1 broadcast) and the 4-row tile 4 x 3.
MAIN_ROWS = 6
MAIN_VECS = 4 if _AVX512 else 2
# A weight larger than L2 streams in from L3 or memory once per product: there (where
# SOFTWARE_PREFETCH), blocks of STREAM_ROWS rows x 2 vectors (one panel) go through it once,
# prefetching the next panel (_streamed_rows_into). 8 rows cover B = 16 and 64 with no rows left
# over, which a 6-row block leaves (4) and which then read the weight a second time: [16, 512] x
# [512, 2048] took 86 GFLOP/s with 6 x 4 tiles and the 4 rows after, 122 this way. The same
# blocks, without the prefetch, take row counts that 8 divides and 6 leaves 2 of (8 rows, a
# batch of 16 split in two): the 2 rows' tile has 8 accumulators ([8, 128] x [128, 512]: 164
# GFLOP/s as 8 x 2, 152 as 6 x 4 and 2 x 4).
STREAM_ROWS = 8 if _AVX512 else 6
# From STRIP_MIN_ROWS rows on (where SOFTWARE_PREFETCH), a weight larger than L2 goes by in
# strips of the main tile's width instead (_strips_into): 6-row blocks of MAIN_VECS vectors,
# prefetching the next strip, the rows after the blocks done in the same strip. One core of a
# Xeon (2 MB L2), float32, GFLOP/s, 8 x 2 blocks -> strips, measured in turns: [64, 512] x
# [512, 1024] 160 -> 176, [64, 512] x [512, 2048] 156 -> 175, [32, 512] x [512, 2048]
# 148 -> 160, [64, 1024] x [1024, 2048] 156 -> 174; both cores at once, each its own product:
# 148 -> 161, 145 -> 157, 142 -> 148, 154 -> 168. At 16 rows and fewer, the 8 x 2 blocks stay
# ahead ([16, 512] x [512, 2048] 144 -> 143, [8, 512] x [512, 2048] 114 -> 93).
STRIP_MIN_ROWS = 32
_FOUR_ROW_VECS = 4 if _AVX512 else 3
_ROWS_AT_ONCE = 256  # rows of a per pass over w: 256 x K=512 float32 is 512 KB, in L2


# Weights of at least this many bytes do not stay in L2 from one step to the next, so their
# products prefetch the next panel (_streamed_rows_into, _strips_into), where that pays
# (layout.SOFTWARE_PREFETCH; elsewhere they take the plain tiles). A compile-time constant
# of the cached code; Numba's cache is per CPU model.
_PREFETCH_MIN_BYTES = L2_BYTES
# Tiles: (rows, vectors). 16 or more accumulators keep the FMA units busy (measured ~110
# GFLOP/s a core, float32, at 8x2 and 4x4, against 45-90 for OpenBLAS at B = 8 to 64; 6x4:
# above). Fewer rows take more vectors, so that each still has enough
# independent accumulators to hide the FMA latency; a single row is bound by loading w.
_MAIN_WIDE = make_tile(MAIN_ROWS, MAIN_VECS)
_MAIN_WIDE_PREFETCH = make_tile(MAIN_ROWS, MAIN_VECS, prefetch=True)
_STRIP_R4, _STRIP_R2 = make_tile(4, MAIN_VECS), make_tile(2, MAIN_VECS)
_STRIP_R1 = make_tile(1, MAIN_VECS)
_MAIN_V2, _MAIN_V1 = make_tile(MAIN_ROWS, 2), make_tile(MAIN_ROWS, 1)
_STREAM_V2_PREFETCH = make_tile(STREAM_ROWS, 2, prefetch=True)
_STREAM_V2 = make_tile(STREAM_ROWS, 2)
_STREAM_V1 = make_tile(STREAM_ROWS, 1)
_R4V4, _R4V1 = make_tile(4, _FOUR_ROW_VECS), make_tile(4, 1)
_R2V4, _R2V1 = make_tile(2, 4), make_tile(2, 1)
_R1V8, _R1V1 = make_tile(1, 8), make_tile(1, 1)


@njit(nogil=True, _nrt=False)
def _columns_tail(a, w, out, i0, i1, j0):
    """out[i0:i1, j0:] for the last columns, fewer than one vector, of a row-major w: a plain
    loop. A call, not inlined: the four inlined copies doubled what each kernel calling
    matmul_into pays in compile time (LLVM optimizes the linked runtime code again in every
    caller's module)."""
    for i in range(i0, i1):
        for j in range(j0, out.shape[1]):
            out[i, j] = 0
        for k in range(a.shape[1]):
            s = a[i, k]
            for j in range(j0, out.shape[1]):
                out[i, j] += s * w[k, j]


def _lanes(a):
    """Elements of `a`'s dtype in one vector: a constant of the compiled code, where
    VECTOR_BYTES // a.itemsize was a 64-bit division at run time in every layer of a call."""


@overload(_lanes, inline="always")
def _lanes_impl(a):
    lanes = VECTOR_BYTES * 8 // a.dtype.bitwidth
    return lambda a: lanes


def _tail(a, w, out, i0, i1, j0):
    """`_columns_tail` for w row-major or in panels (the tail's columns, fewer than a vector,
    lie in one panel). Inlined, so that a product with no tail columns (the usual case)
    pays a comparison for it, not a call."""


@overload(_tail, jit_options={"nogil": True}, inline="always")
def _tail_impl(a, w, out, i0, i1, j0):
    if w.ndim == 2:
        return lambda a, w, out, i0, i1, j0: _columns_tail(a, w, out, i0, i1, j0)

    def panels(a, w, out, i0, i1, j0):
        if j0 >= out.shape[1]:
            return
        p = j0 // w.shape[2]
        c0 = j0 - p * w.shape[2]
        _columns_tail(a, w[p, :, c0 : c0 + out.shape[1] - j0], out[:, j0:], i0, i1, 0)

    return panels


# Every function of this module is compiled without Numba's reference counting
# (`_nrt=False`), and the small layers are inlined: a kernel calls an entry point every
# step, and each call through a layer paid an atomic increment and decrement (calls to
# NRT_incref/NRT_decref) for each of its three arrays. One core, float32, us a call in a
# step loop: [1, 32] x [32, 128] 0.36 -> 0.10 (the tile alone: 0.08), [1, 128] x [128, 256]
# 1.27 -> 0.93, [16, 32] x [32, 128] 1.06 -> 0.78; [64, 128] x [128, 512] unchanged. Safe
# because nothing here allocates or keeps an array: the caller holds them for the call.
@njit(cache=True, nogil=True, _nrt=False)
def matmul_into(a, w, out):
    """out[:, :] = a @ w, for 2-D arrays of one float type: a [M, K], w [K, N], out [M, N].
    Rows are taken in blocks of 6, then 4, 2 and 1, and the columns in groups of the tile's
    width, then two vectors, one, and the plain loop. A single row with a weight larger than the
    caches reads it at 0.4-0.5x OpenBLAS's sgemv rate (K=1024..2048, N=4K); every shape with
    8 or more rows measured 0.9-2.5x OpenBLAS's sgemm (benchmarks/RESULTS.md)."""
    m, n = a.shape[0], w.shape[1]
    if a.shape[1] != w.shape[0] or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul_into: shapes do not match")
    if a.strides[1] != a.itemsize or w.strides[1] != w.itemsize or out.strides[1] != out.itemsize:
        # Not rows of contiguous elements (never so in generated kernels): the plain loop.
        # Not np.dot on copies: its code made every caller's compile 0.4 s longer.
        _columns_tail(a, w, out, 0, m, 0)
        return
    _chunks_into(a, w, out)


@njit(cache=True, nogil=True, _nrt=False)  # no reference counts: see matmul_into
def matmul_panels(a, w, out):
    """out[:, :] = a @ W for W packed in panels (`to_panels`): a [M, K], w [P, K, PANEL],
    out [M, N] with N <= P * PANEL; what matmul_into does for a row-major W."""
    m, n = a.shape[0], out.shape[1]
    if a.shape[1] != w.shape[1] or out.shape[0] != m or n > w.shape[0] * w.shape[2]:
        raise ValueError("matmul_panels: shapes do not match")
    vec = _lanes(a)
    if w.shape[2] % vec != 0 or w.strides[2] != w.itemsize:
        raise ValueError("matmul_panels: panels of whole vectors, contiguous, are expected")
    if a.strides[1] != a.itemsize or out.strides[1] != out.itemsize:
        # not rows of contiguous elements (never so in generated kernels): the plain loop,
        # a panel at a time
        panel = w.shape[2]
        for p in range(-(-n // panel)):
            j0 = p * panel
            j1 = min(n, j0 + panel)
            _columns_tail(a, w[p, :, : j1 - j0], out[:, j0:j1], 0, m, 0)
        return
    _chunks_into(a, w, out)


@njit(inline="always")
def _chunks_into(a, w, out):
    m = a.shape[0]
    if m > _ROWS_AT_ONCE:  # many rows (an input projection over all steps): in chunks whose
        for i0 in range(0, m, _ROWS_AT_ONCE):  # rows stay in L2 while the panels go by
            i1 = min(m, i0 + _ROWS_AT_ONCE)
            _rows_into(a[i0:i1], w, out[i0:i1])
        return
    _rows_into(a, w, out)


# -- what the step products' C entry point runs (lstmc_runtime.step_products) ---------------
# Here, not there: Numba's cache of a compiled function follows its own file's source, and
# these run this module's tiles, so an edit of this file must compile them again.
@njit(cache=True, nogil=True, _nrt=False)
def _plain_panels(a, w, out):
    """out = a @ W, W in panels, by the plain loop a panel at a time: for rows that are not
    contiguous (matmul_step's fallback; matmul_panels has its own)."""
    n, panel = out.shape[1], w.shape[2]
    for p in range(-(-n // panel)):
        j0 = p * panel
        j1 = min(n, j0 + panel)
        _columns_tail(a, w[p, :, : j1 - j0], out[:, j0:j1], 0, a.shape[0], 0)


def _step_entry(a_p, m, k, a_s0, a_s1, w_p, panels, k_w, panel, out_p, n, out_s0, out_s1):
    """The C entry point: matmul_panels on arrays rebuilt from pointers and strides in bytes
    (step_products.matmul_step checked the shapes and w's panels; m, k > 0). Rows of
    contiguous elements one after the other take the tiles; others (never so in generated
    kernels) the plain loop, as matmul_panels does. Both are here, behind the entry point,
    so that no kernel links and optimizes their code again."""
    w = carray(w_p, (panels, k_w, panel))
    item = w.itemsize
    if (
        a_s1 != item
        or out_s1 != item
        or (m > 1 and (a_s0 < k * item or out_s0 < n * item or a_s0 % item or out_s0 % item))
    ):
        # unchecked views from the first elements' addresses, as NumPy's own strides say
        a = as_strided(carray(a_p, (1,)), (m, k), (a_s0, a_s1))
        out = as_strided(carray(out_p, (1,)), (m, n), (out_s0, out_s1))
        _plain_panels(a, w, out)
        return 0
    # one row's stride is anything (NumPy gives a [1, k] array the stride it likes)
    lda = a_s0 // item if m > 1 else k
    ldo = out_s0 // item if m > 1 else n
    a = carray(a_p, (m, lda))[:, :k]
    out = carray(out_p, (m, ldo))[:, :n]
    _chunks_into(a, w, out)
    return 0


@njit(inline="always")
def _prefetch_share(panel_bytes, panels, k_total, p, b, blocks):
    """What block b of `blocks` asks for while it multiplies by panel p of a weight of
    `panels` panels of `k_total` rows, `panel_bytes` each: (first byte, bytes a k) of its
    share of the next panel (the last one for the last). The tile asks for the lines at
    start + k * step and that + step / 2, k < k_total: with step rounded down, every address
    stays inside that panel, and the blocks' shares cover it, but for its last
    (row bytes mod blocks) * k_total bytes when `blocks` does not divide a panel row's bytes
    (k_total / 32 lines of 64 bytes for 3 blocks of a 128-byte row)."""
    step = (panel_bytes // k_total) // blocks
    ahead = min(p + 1, panels - 1) * panel_bytes
    return ahead + b * step * k_total, step


@njit(nogil=True, _nrt=False)
def _rows_into(a, w, out):
    m, n = a.shape[0], out.shape[1]
    if (
        SOFTWARE_PREFETCH  # a constant of the compiled code: the branch is gone where false
        and w.ndim == 3
        and m >= STREAM_ROWS
        and w.size * w.itemsize >= _PREFETCH_MIN_BYTES
    ):
        if m >= STRIP_MIN_ROWS:
            _strips_into(a, w, out)
        else:
            _streamed_rows_into(a, w, out, True)
        return
    if m % STREAM_ROWS == 0 and m % MAIN_ROWS == 2:
        _streamed_rows_into(a, w, out, False)
        return
    vec = _lanes(a)  # elements of one vector
    # Blocks of MAIN_ROWS rows, one tile width of columns at a time for all the blocks: those
    # columns of w (K x MAIN_VECS vectors) are read from memory once and from the core's
    # cache for the other blocks. (Block-major order read the whole of w once per block: at
    # K=1024, N=4096 that was 2.5x slower than OpenBLAS.)
    m_main = m - m % MAIN_ROWS
    j = 0
    while j + MAIN_VECS * vec <= n:
        for i in range(0, m_main, MAIN_ROWS):
            _MAIN_WIDE(a, w, out, i, j)
        j += MAIN_VECS * vec
    _narrow_columns(a, w, out, m_main, j)
    _rows_left(a, w, out, m_main, 0)


@njit(inline="always")
def _narrow_columns(a, w, out, m_main, j):
    """out[:m_main, j:] in the 6-row blocks, for columns fewer than the main tile's width:
    groups of two vectors, then of one, then the plain loop."""
    n = out.shape[1]
    vec = _lanes(a)
    while MAIN_VECS > 2 and j + 2 * vec <= n:
        for i in range(0, m_main, MAIN_ROWS):
            _MAIN_V2(a, w, out, i, j)
        j += 2 * vec
    while j + vec <= n:
        for i in range(0, m_main, MAIN_ROWS):
            _MAIN_V1(a, w, out, i, j)
        j += vec
    _tail(a, w, out, 0, m_main, j)


@njit(nogil=True, _nrt=False)
def _strips_into(a, w, out):
    """_rows_into for a weight in panels larger than L2 and at least STRIP_MIN_ROWS rows: one
    strip of MAIN_VECS vectors (whole panels) at a time, through which every row goes before
    the next strip, so that w is read from L3 or memory once. The 6-row blocks of a strip
    each bring a share of the next strip into L2 (_prefetch_share); the rows after them take
    tiles of the strip's width. The columns after the last whole strip go as in _rows_into."""
    m, n = a.shape[0], out.shape[1]
    vec = _lanes(a)
    width = MAIN_VECS * vec  # columns of a strip
    per_strip = width // w.shape[2]  # panels of a strip
    strip_bytes = per_strip * w.strides[0]
    strips_in_w = w.shape[0] // per_strip
    m_main = m - m % MAIN_ROWS
    blocks = m_main // MAIN_ROWS
    j = 0
    while j + width <= n:
        s = j // width
        for b in range(blocks):
            start, step = _prefetch_share(strip_bytes, strips_in_w, w.shape[1], s, b, blocks)
            _MAIN_WIDE_PREFETCH(a, w, out, b * MAIN_ROWS, j, start, step)
        i = m_main
        if i + 4 <= m:
            _STRIP_R4(a, w, out, i, j)
            i += 4
        if i + 2 <= m:
            _STRIP_R2(a, w, out, i, j)
            i += 2
        if i < m:
            _STRIP_R1(a, w, out, i, j)
        j += width
    _narrow_columns(a, w, out, m_main, j)
    _rows_left(a, w, out, m_main, width * (n // width))


@njit(nogil=True, _nrt=False)
def _streamed_rows_into(a, w, out, prefetch):
    """_rows_into in blocks of STREAM_ROWS rows, a panel at a time. With `prefetch` (a
    weight larger than L2, in panels) the blocks of a panel also bring the next panel into
    L2, each a share of it, a line every few k. Else the first block of a panel waits for it
    to stream in from L3 or memory while the others find it in L2. One core of a Xeon (2 MB
    L2), float32, GFLOP/s without -> with: [64, 512] x [512, 2048] 137 -> 146, [16, 512] x
    [512, 2048] 108-118 -> 141-142, [64, 1024] x [1024, 2048] 139 -> 153. Below L2 it cost
    up to 6% ([64, 256] x [256, 1024], 1 MB: 172 -> 161)."""
    m, n = a.shape[0], out.shape[1]
    vec = _lanes(a)
    m_main = m - m % STREAM_ROWS
    blocks = m_main // STREAM_ROWS
    j = 0
    while j + 2 * vec <= n:
        for b in range(blocks):
            if prefetch:
                start, step = _prefetch_share(
                    w.strides[0], w.shape[0], w.shape[1], j // (2 * vec), b, blocks
                )
                _STREAM_V2_PREFETCH(a, w, out, b * STREAM_ROWS, j, start, step)
            else:
                _STREAM_V2(a, w, out, b * STREAM_ROWS, j)
        j += 2 * vec
    while j + vec <= n:
        for i in range(0, m_main, STREAM_ROWS):
            _STREAM_V1(a, w, out, i, j)
        j += vec
    _tail(a, w, out, 0, m_main, j)
    _rows_left(a, w, out, m_main, 0)


@njit(inline="always")
def _rows_left(a, w, out, i, j0):
    """The rows from i on, fewer than a block, columns from j0 on: at most one block each of
    4, 2 and 1 rows."""
    for rows in (4, 2, 1):
        if i + rows <= a.shape[0]:
            _small_block(a, w, out, i, rows, j0)
            i += rows


@njit(inline="always")
def _small_tile(a, w, out, i, j, rows, wide):
    """The tile at out[i, j] of a block of 4, 2 or 1 rows: the block's wide one or one vector."""
    if rows == 4:
        if wide:
            _R4V4(a, w, out, i, j)
        else:
            _R4V1(a, w, out, i, j)
    elif rows == 2:
        if wide:
            _R2V4(a, w, out, i, j)
        else:
            _R2V1(a, w, out, i, j)
    elif wide:
        _R1V8(a, w, out, i, j)
    else:
        _R1V1(a, w, out, i, j)


@njit(nogil=True, _nrt=False)
def _small_block(a, w, out, i, rows, j0):
    """out[i:i + rows, j0:] for 4, 2 or 1 rows (j0 a multiple of a vector): panels of the
    block's tile width (4 vectors, 3 for 4 rows on AVX2, 8 for a single row, which is bound
    by reading w), then one vector, then the plain loop."""
    n = out.shape[1]
    vec = _lanes(a)
    wide = vec * (8 if rows == 1 else (_FOUR_ROW_VECS if rows == 4 else 4))
    j = j0
    while j + wide <= n:
        _small_tile(a, w, out, i, j, rows, True)
        j += wide
    while j + vec <= n:
        _small_tile(a, w, out, i, j, rows, False)
        j += vec
    _tail(a, w, out, i, i + rows, j)
