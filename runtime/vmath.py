"""Branch-free element-wise transcendental functions that LLVM can SIMD-vectorize.

A Numba loop such as ``out[j] = math.tanh(a[j])`` stays scalar: the libm call is opaque to the
loop vectorizer and costs ~15 ns per element.  The functions below are written in plain
arithmetic instead -- selects (``_select``, one LLVM select each), ``np.floor``,
multiplications, Horner polynomials (a loop over a tuple of constants) and an integer-to-float
bit-cast for 2**k -- so once they are inlined into a caller's loop, LLVM turns the whole loop
into packed (ymm/zmm) instructions.

The cost is the number of packed instructions, so they are counted: the polynomials run in
fused multiply-adds (``llvm.fmuladd``, which Numba never forms by itself), sigmoid's exp of a
non-positive argument scales by one power of two instead of two, and its quotient is one
division of a selected numerator (written as Python's conditional, LLVM divided both arms).
float32 sigmoid went from 0.80 to 0.53 ns an element on one AVX-512 core, tanh from 0.74 to
0.54, at the same accuracy.

There is one function per dtype (``exp_f32``/``exp_f64``, ...).  Both are built from the same
template by ``_build`` with every constant converted to that dtype first: Numba freezes them as
typed constants, so float32 code never silently promotes to float64.

Accuracy (measured in tests/test_vmath.py): at most 2 ulp over the whole float range,
subnormals, infinities and NaN included; NaN in gives NaN out and nothing ever raises.

The functions are ``inline="always"``: Numba inlines them at the IR level, so vectorization
does not depend on LLVM's inlining heuristics (which reject e.g. softplus_f64 as too big).
Divisions go through the ``_div`` intrinsic, so the caller's error model does not matter.
"""

# Explicit selects spell out the NaN behaviour (min/max depend on argument order), and
# `k == k` is the NaN test:
# ruff: noqa: PLR0124
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "UNARY",
    "exp_f32",
    "exp_f64",
    "sigmoid_f32",
    "sigmoid_f64",
    "softplus_f32",
    "softplus_f64",
    "tanh_f32",
    "tanh_f64",
    "wide_vectors",
]

_jit = njit(inline="always", error_model="numpy")


@intrinsic
def _pow2(typingctx, k):
    """2.0**k for an integral float k in the normal exponent range, in k's own float type.

    Converts k to an integer and writes k + bias into the exponent field: a convert, an add,
    a shift and a bit-cast, all of which have packed SIMD forms (unlike ``math.ldexp``).
    """
    if k not in (types.float32, types.float64):
        return None
    mant, bias = (23, 127) if k == types.float32 else (52, 1023)

    def codegen(context, builder, sig, args):
        ity = ir.IntType(k.bitwidth)
        # Convert via i32 even for float64: |k| < 2**11 and f64 -> i32 is packed on plain AVX.
        ki = (
            builder.sext(builder.fptosi(args[0], ir.IntType(32)), ity)
            if k.bitwidth == 64
            else builder.fptosi(args[0], ity)
        )
        bits = builder.shl(builder.add(ki, ity(bias)), ity(mant))
        return builder.bitcast(bits, context.get_value_type(k))

    return k(k), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a*b + c as ``llvm.fmuladd``: one fused instruction (one rounding) where the CPU has FMA,
    a multiply and an add elsewhere. Numba never contracts ``a*b + c`` itself (that needs
    fastmath's "contract" flag), and the loop vectorizer keeps the intrinsic packed."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fmuladd.f{a.bitwidth}"
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM select. Numba lowers the Python conditional to branches
    and a phi; LLVM then sometimes duplicates the work after it into both arms (two packed
    divisions where one was written)."""
    if not (cond == types.boolean and a == b and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(*args)

    return a(cond, a, b), codegen


@intrinsic
def wide_vectors(typingctx):
    """Called first in a function, lets LLVM's loop vectorizer use the widest vectors the CPU
    has in that function: 512 bits on AVX-512, where LLVM's tuning for Intel's AVX-512 cores
    otherwise prefers 256 (to spare the clock of older ones; the step's products already run
    in 512-bit registers). It sets the function's "prefer-vector-width" attribute; a CPU
    without AVX-512 keeps its own widest vectors. An LSTM step's element-wise loop on one Xeon
    core: 4.4 ns a unit in 256-bit vectors, 3.2 in 512-bit (sigmoid, tanh, the gate adds)."""

    def codegen(context, builder, sig, args):
        # llvmlite's attribute set only admits attributes without a value: add the string
        # attribute to the underlying set, whose items go into the IR as they are. A llvmlite
        # whose attributes are no such set leaves the vector width to LLVM (slower, not wrong).
        attributes = builder.function.attributes
        if isinstance(attributes, set):
            set.add(attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _div(typingctx, a, b):
    """a / b as a bare IEEE division (inf or NaN on b == 0): Numba's "python" error model would
    guard ``/`` with a ZeroDivisionError branch in the caller's loop and block vectorization."""
    if a != b or a not in (types.float32, types.float64):
        return None
    return a(a, b), lambda context, builder, sig, args: builder.fdiv(*args)


def _build(
    ft: type, ln2_hi: float, x_lo: float, x_hi: float, exp_deg: int, log_deg: int, tanh_sat: float
) -> dict[str, Callable]:
    """Compile exp, tanh, sigmoid and softplus for float type ``ft`` (np.float32/np.float64).

    ln2_hi      -- ln 2 rounded so that k*ln2_hi is exact for every k in range (Cody-Waite)
    x_lo, x_hi  -- exp(x_lo) rounds to 0 and exp(x_hi) overflows to inf
    exp_deg     -- Taylor degree for exp(r), |r| <= ln2/2: r**(d+1)/(d+1)! < ulp/10
    log_deg     -- terms of log(1+f) = 2*atanh(s) = 2s + 2s**3/3 + ... after 2s, where
                   s = f/(2+f), |s| <= 3 - 2*sqrt(2) = 0.1716, z = s*s
    tanh_sat    -- tanh(x) rounds to 1 for x >= tanh_sat
    """
    ZERO, HALF, ONE, TWO = ft(0.0), ft(0.5), ft(1.0), ft(2.0)
    INV_LN2, SQRT2 = ft(1.0 / math.log(2.0)), ft(math.sqrt(2.0))
    LN2_HI = ft(ln2_hi)
    # The tail of ln 2 below ln2_hi; float64's needs more bits than a double holds, so it is
    # taken from fdlibm (0x3dea39ef35793c76).
    LN2_LO = ft(1.90821492927058770002e-10 if ft is np.float64 else math.log(2.0) - ln2_hi)
    X_LO, X_HI, TANH_SAT = ft(x_lo), ft(x_hi), ft(tanh_sat)
    # Taylor coefficients, highest degree first: 1/n! for n = exp_deg..2, 2/(2n+1) for log.
    EXPM1_C = tuple(ft(1.0 / math.factorial(n)) for n in range(exp_deg, 1, -1))
    EXP_C = (*EXPM1_C, ONE, ONE)
    # exp_neg's scale: 2**k for k down to X_LO/ln2 - 1 (-151, -1077) is 2**(k + SUB_SHIFT) with
    # k + SUB_SHIFT a normal exponent (>= -126, -1022), times 2**-SUB_SHIFT.
    SUB_SHIFT = ft(32.0 if ft is np.float32 else 64.0)
    SUB_SCALE = ft(2.0 ** -float(SUB_SHIFT))
    LOG_C = tuple(ft(2.0 / (2 * n + 1)) for n in range(log_deg, 0, -1))

    # The functions are written out flat, each in one piece but for exp_neg, which sigmoid
    # and softplus call: Numba inlines a function by copying its IR block by block, once per
    # call site and once more for every function it calls in turn, so helpers called from
    # helpers (and the blocks of `a if c else b`) took much of a kernel's compile time
    # (layernorm_lstm cold 5.0-5.3 s before, 4.3 s flat).
    # Selects are `_select`, the polynomials a loop over a tuple of constants.
    EXP_C0, EXP_CS = EXP_C[0], EXP_C[1:]
    EXPM1_C0, EXPM1_CS = EXPM1_C[0], EXPM1_C[1:]
    LOG_C0, LOG_CS = LOG_C[0], LOG_C[1:]

    @_jit
    def exp(x):
        """e**x: overflow -> inf, underflow -> 0 or subnormal, NaN -> NaN."""
        x = ft(x)  # a float64 or int argument: this function's type, not a typing error
        # x = k*ln2 + r, |r| <= ln2/2, x clamped to [X_LO, X_HI] (comparisons are False for
        # NaN: NaN passes through). k = round(x/ln2), give or take one near the ties;
        # k*LN2_HI is exact, so is x minus it (fused or not); the tail rounds once when fused.
        x = _select(x > X_HI, X_HI, x)
        x = _select(x < X_LO, X_LO, x)
        k = np.floor(_fma(x, INV_LN2, HALF))
        r = _fma(-k, LN2_LO, _fma(-k, LN2_HI, x))
        k = _select(k == k, k, ZERO)  # NaN would make the int conversion undefined; r stays NaN
        # exp(r): the whole Taylor polynomial in fused multiply-adds, whose last step 1 + r*p
        # rounds once (~0.7 ulp: 0.5 from that rounding, r*p's error damped by |r| <= 0.35).
        p = EXP_C0
        for c in EXP_CS:
            p = _fma(p, r, c)
        # 2**k as two factors: each stays a normal number even when exp(x) is subnormal or
        # k = max exponent + 1 (overflow to inf); p*s1 is exact, the last product rounds once.
        k1 = np.floor(k * HALF)
        return (p * _pow2(k1)) * _pow2(k - k1)

    @_jit
    def exp_neg(x):
        """e**x for x <= 0 (or NaN): as ``exp`` (so no clamp at X_HI), but the result is at most
        1, so one scale factor does. 2**k is applied as 2**(k + SUB_SHIFT) (a normal number for
        every k >= X_LO/ln2) times the constant 2**-SUB_SHIFT: the first product is exact, the
        second rounds once, also into the subnormal range. Four packed instructions fewer."""
        x = _select(x < X_LO, X_LO, x)
        k = np.floor(_fma(x, INV_LN2, HALF))
        r = _fma(-k, LN2_LO, _fma(-k, LN2_HI, x))
        k = _select(k == k, k, ZERO)
        p = EXP_C0
        for c in EXP_CS:
            p = _fma(p, r, c)
        return (p * _pow2(k + SUB_SHIFT)) * SUB_SCALE

    @_jit
    def tanh(x):
        """(e^2|x| - 1)/(e^2|x| + 1) with the sign of x: relative accuracy near 0, +-1 exactly
        for |x| >= TANH_SAT, tanh(-0) = -0, NaN -> NaN."""
        x = ft(x)  # a float64 or int argument: this function's type, not a typing error
        a = abs(x)
        a = _select(a > TANH_SAT, TANH_SAT, a)  # avoid inf/inf; NaN passes through
        # e = exp(2a) - 1, accurate relative to the result near 0 (where it would cancel):
        # 2a = k*ln2 + r as in ``exp`` (0 <= 2a <= 2*TANH_SAT: no clamp needed, 2**k is a
        # normal number), then s*expm1(r) + (s - 1), s = 2**k, expm1(r) = r + r*r*p(r).
        # s - 1 is exact while k < mantissa bits; above (2a > ~17 in float32, ~38 in
        # float64) it rounds, but e is then so large that the quotient below rounds to 1.
        y = a + a
        k = np.floor(_fma(y, INV_LN2, HALF))
        r = _fma(-k, LN2_LO, _fma(-k, LN2_HI, y))
        k = _select(k == k, k, ZERO)
        s = _pow2(k)
        p = EXPM1_C0
        for c in EXPM1_CS:
            p = _fma(p, r, c)
        e = _fma(s, _fma(r * r, p, r), s - ONE)
        d = e + TWO
        small = e < TWO
        d_err = (_select(small, TWO, e) - d) + _select(small, e, TWO)  # exact (Fast2Sum)
        q = _div(e, d)
        # e/(d + d_err) = q*(1 - d_err/d), and 1/d = (1 - q)/2: removes the rounding of d.
        t = _fma(-q * d_err, (ONE - q) * HALF, q)
        return np.copysign(t, x)  # keeps tanh(-0) = -0 and NaN

    @_jit
    def sigmoid(x):
        """1/(1 + e^-x), exactly 0 and 1 in the limits, accurate for tiny results; NaN -> NaN."""
        x = ft(x)  # a float64 or int argument: this function's type, not a typing error
        e = exp_neg(-abs(x))  # in [0, 1]: no overflow, and tiny results stay accurate
        d = ONE + e
        d_err = (ONE - d) + e  # exact (Fast2Sum)
        pos = x >= ZERO
        # 1/(1+e^-x), or e^x/(1+e^x) for x < 0; NaN -> NaN. One select, then one division.
        q = _div(_select(pos, ONE, e), d)
        # As in tanh, remove the rounding of d: 1/d = q for x >= 0, else 1 - q.
        return _fma(-q * d_err, _select(pos, q, ONE - q), q)

    @_jit
    def softplus(x):
        """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, accurate for x << 0."""
        x = ft(x)  # a float64 or int argument: this function's type, not a typing error
        u = exp_neg(-abs(x))
        # log(1 + u) for 0 <= u <= 1 (fdlibm's log1p without the need for frexp):
        w = ONE + u
        c = _div(u - (w - ONE), w)  # rounding error of w, as a first-order correction of log(w)
        big = w > SQRT2
        f = _select(big, w * HALF, w) - ONE  # exact; log(w) = big*ln2 + log(1+f)
        s = _div(f, TWO + f)
        z = s * s
        hfsq = HALF * f * f
        # log(1+f) = 2s + s*R(z) = f - (hfsq - s*(hfsq + R)), R = z*(2/3 + 2z/5 + ...)
        p = LOG_C0
        for c2 in LOG_CS:
            p = _fma(p, z, c2)
        tail = s * (hfsq + z * p) + (_select(big, LN2_LO, ZERO) + c)
        log1p_u = _select(big, LN2_HI, ZERO) + (f - (hfsq - tail))
        # NaN becomes 0 in the max term but reaches the log1p term and propagates.
        return _select(x > ZERO, x, ZERO) + log1p_u

    return {"exp": exp, "tanh": tanh, "sigmoid": sigmoid, "softplus": softplus}


# float64: ln2_hi = fdlibm's 0x3fe62e42fee00000 has 32 significant bits, |k| <= 1076 has 11;
# exp(-746) < 2**-1075 rounds to 0, exp(710) > DBL_MAX; 1 - tanh(19.1) < 2**-54;
# Taylor tails: 0.347**14/14! = 4e-18 (exp), 0.0294**11/23 = 6e-19 (log).
_F64 = _build(np.float64, 6.93147180369123816490e-01, -746.0, 710.0, 13, 10, 19.5)
# float32: ln2_hi = 0x3f317200 has 15 significant bits, |k| <= 150 has 8;
# exp(-104) < 2**-150 rounds to 0, exp(89) > FLT_MAX; 1 - tanh(9.1) < 2**-25;
# Taylor tails: 0.347**8/8! = 5e-9 (exp), 0.0294**5/11 = 2e-9 (log).
_F32 = _build(np.float32, 0.693145751953125, -104.0, 89.0, 7, 4, 9.5)

exp_f32, exp_f64 = _F32["exp"], _F64["exp"]
tanh_f32, tanh_f64 = _F32["tanh"], _F64["tanh"]
sigmoid_f32, sigmoid_f64 = _F32["sigmoid"], _F64["sigmoid"]
softplus_f32, softplus_f64 = _F32["softplus"], _F64["softplus"]

#: (function name, dtype name) -> scalar njit function, for the code generator.
UNARY: dict[tuple[str, str], Callable] = {
    (name, dt): fns[name]
    for dt, fns in (("float32", _F32), ("float64", _F64))
    for name in ("exp", "tanh", "sigmoid", "softplus")
}
