"""The register tile of the step products (lstmc_runtime.gemm), as a Numba intrinsic.

It is the classic GEMM micro-kernel: a tile of `rows` rows of `out` by `vecs` SIMD vectors
of columns lives in registers while k runs over the whole K. Each k loads `vecs` vectors of
w's row k and, for each row of the tile, broadcasts one element of `a` and does `vecs`
fused multiply-adds. The tile is written once at the end. The IR is written by hand
because Numba has no vector type, and LLVM does not keep an array accumulator in registers
across a loop on its own.

Accumulation is in the array's own type, in order of k, with fused multiply-adds, as a
BLAS does; the result matches `np.dot` to the rounding of a K-term sum. Every output element
is the same sequence of operations whatever the tile's shape, so tiles of different shapes
give the same bits.
"""

from __future__ import annotations

import functools

from llvmlite import ir
from lstmc_runtime.layout import VECTOR_BYTES
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["make_tile"]

_I64 = ir.IntType(64)


def _element_pointer(builder, ary, itemsize, row, col):
    """Pointer to ary[row, col] of a 2-D array whose elements are contiguous within a row."""
    stride0 = cgutils.unpack_tuple(builder, ary.strides, 2)[0]
    byte = builder.add(builder.mul(row, stride0), builder.mul(col, _I64(itemsize)))
    raw = builder.gep(builder.bitcast(ary.data, ir.IntType(8).as_pointer()), [byte])
    return builder.bitcast(raw, ary.data.type)


def _prefetch_name() -> str:
    from llvmlite import binding

    # the intrinsic is overloaded on the pointer type: `ptr` once LLVM dropped typed pointers
    # (17), `i8*` before (llvmlite 0.43-0.44 build LLVM 14-15 with typed pointers)
    return "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@functools.cache  # one intrinsic per geometry: gemm asks for some twice (strips, 4-row tiles)
def make_tile(rows: int, vecs: int, prefetch: bool = False):
    """An intrinsic `tile(a, w, out, i0, j0)`: out[i0:i0+rows, j0:j0+vecs*W] =
    a[i0:i0+rows, :] @ w[:, j0:j0+vecs*W], W being the elements of one vector. w is a
    row-major [K, N] or panels [P, K, PANEL] (`to_panels`), whose vector v of row k lies in
    panel (j0 + v*W) // PANEL. The caller keeps the tile inside the arrays, passes rows with
    contiguous elements and j0 a multiple of W.

    With `prefetch`, `tile(a, w, out, i0, j0, pf_start, pf_step)` also asks, at each k, for
    the cache lines at bytes pf_start + k * pf_step and that + pf_step / 2 of w's data to be
    brought into L2 (see gemm._streamed_rows_into), two so that a step up to 128 bytes covers
    every 64-byte line; the caller keeps those bytes inside w."""

    def typer(typingctx, a, w, out, i0, j0, pf_start=None, pf_step=None):
        if not all(isinstance(t, types.Array) and t.ndim == 2 for t in (a, out)):
            return None
        if not (isinstance(w, types.Array) and w.ndim in (2, 3)):
            return None
        if not (a.dtype == w.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
            return None

        def codegen(context, builder, sig, args):
            dtype = sig.args[0].dtype
            if prefetch:
                pf_fn = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(
                        ir.VoidType(), [ir.IntType(8).as_pointer()] + [ir.IntType(32)] * 3
                    ),
                    _prefetch_name(),
                )
                pf_start, pf_step = (
                    context.cast(builder, v, t, types.intp) for v, t in zip(args[5:], sig.args[5:])
                )
            itemsize = dtype.bitwidth // 8
            scalar = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
            width = VECTOR_BYTES // itemsize
            vty = ir.VectorType(scalar, width)
            fma = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vty, [vty, vty, vty]),
                f"llvm.fma.v{width}f{dtype.bitwidth}",
            )
            a_ary, w_ary, o_ary = (
                context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3])
            )
            i0 = context.cast(builder, args[3], sig.args[3], types.intp)
            j0 = context.cast(builder, args[4], sig.args[4], types.intp)
            k_total = cgutils.unpack_tuple(builder, a_ary.shape, 2)[1]
            w_bytes = builder.bitcast(w_ary.data, ir.IntType(8).as_pointer())

            # Where each vector of the tile starts (k = 0), in bytes from w's data, and the
            # bytes from one k to the next.
            if sig.args[1].ndim == 2:
                k_stride = cgutils.unpack_tuple(builder, w_ary.strides, 2)[0]
                starts = [
                    builder.mul(builder.add(j0, _I64(v * width)), _I64(itemsize))
                    for v in range(vecs)
                ]
            else:
                p_stride, k_stride, _ = cgutils.unpack_tuple(builder, w_ary.strides, 3)
                panel = cgutils.unpack_tuple(builder, w_ary.shape, 3)[2]
                starts = []
                for v in range(vecs):
                    col = builder.add(j0, _I64(v * width))
                    p = builder.udiv(col, panel)
                    c = builder.sub(col, builder.mul(p, panel))
                    starts.append(
                        builder.add(builder.mul(p, p_stride), builder.mul(c, _I64(itemsize)))
                    )

            def w_vector(k, v):
                byte = builder.add(starts[v], builder.mul(k, k_stride))
                return builder.bitcast(builder.gep(w_bytes, [byte]), vty.as_pointer())

            def vector_at(row_pointer, v):
                return builder.bitcast(
                    builder.gep(row_pointer, [_I64(v * width)]), vty.as_pointer()
                )

            # Accumulators as allocas in the entry block: LLVM's SROA turns them into
            # registers (phi nodes of the k loop).
            zero = ir.Constant(vty, [ir.Constant(scalar, 0.0)] * width)
            accs = [
                [cgutils.alloca_once_value(builder, zero) for _ in range(vecs)] for _ in range(rows)
            ]
            a_rows = [
                _element_pointer(builder, a_ary, itemsize, builder.add(i0, _I64(r)), _I64(0))
                for r in range(rows)
            ]
            splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            with cgutils.for_range(builder, k_total) as loop:
                k = loop.index
                if prefetch:  # (address, write=0, locality=2: keep in L2, data cache)
                    byte = builder.add(pf_start, builder.mul(k, pf_step))
                    half = builder.add(byte, builder.lshr(pf_step, _I64(1)))
                    hints = [ir.IntType(32)(v) for v in (0, 2, 1)]
                    for at in (byte, half):
                        builder.call(pf_fn, [builder.gep(w_bytes, [at]), *hints])
                w_vecs = [builder.load(w_vector(k, v), align=itemsize) for v in range(vecs)]
                for r in range(rows):
                    a_rk = builder.load(builder.gep(a_rows[r], [k]), align=itemsize)
                    one = builder.insert_element(
                        ir.Constant(vty, ir.Undefined), a_rk, ir.IntType(32)(0)
                    )
                    a_bcast = builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), splat)
                    for v in range(vecs):
                        total = builder.call(fma, [a_bcast, w_vecs[v], builder.load(accs[r][v])])
                        builder.store(total, accs[r][v])
            for r in range(rows):
                o_row = _element_pointer(builder, o_ary, itemsize, builder.add(i0, _I64(r)), j0)
                for v in range(vecs):
                    builder.store(builder.load(accs[r][v]), vector_at(o_row, v), align=itemsize)
            return context.get_dummy_value()

        if prefetch:
            if not (isinstance(pf_start, types.Integer) and isinstance(pf_step, types.Integer)):
                return None
            return types.void(a, w, out, i0, j0, pf_start, pf_step), codegen
        if pf_start is not None:
            return None
        return types.void(a, w, out, i0, j0), codegen

    if prefetch:

        def tile(typingctx, a, w, out, i0, j0, pf_start, pf_step):
            return typer(typingctx, a, w, out, i0, j0, pf_start, pf_step)

    else:

        def tile(typingctx, a, w, out, i0, j0):
            return typer(typingctx, a, w, out, i0, j0)

    return intrinsic(tile)
