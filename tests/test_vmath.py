"""Tests for lstmc_runtime.vmath: accuracy in ulp over the whole float range, special values,
NaN propagation, float32 purity and SIMD vectorization of loops that call the functions."""

import math
import os
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from llvmlite import binding as llvm
from lstmc_runtime import vmath
from numba import njit

DTYPES = {"float32": np.float32, "float64": np.float64}
INT = {np.float32: np.int32, np.float64: np.int64}
LD = np.longdouble

# Reference values: evaluated in long double (x86: 64-bit mantissa, 11 bits more than float64)
# and rounded once to the tested dtype. Double rounding can make the reference itself 1 ulp off
# on rare ties (e.g. exp(1.1103262754179353e-16)), which the bound below absorbs.
REFERENCE = {
    "exp": np.exp,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
}

# Max ulp distance to the correctly rounded result. Measured over the grids below (~1.2M points
# per function and dtype) plus hypothesis: exp 1 ulp; tanh, sigmoid, softplus 2 ulp (rare: <0.02%
# of the points) for both dtypes. Why 2 holds: exp(r) is within ~1.1 ulp of exact (polynomial,
# whose last fused step 1 + r*p rounds once, + rounding of r); tanh/sigmoid add the quotient's rounding (0.5 ulp) to the input
# error of exp/expm1 damped by the derivative (<= 1), the rounding of the denominator being
# compensated; softplus adds one rounding to a ~1 ulp log1p. All stay below 1.5 ulp of the exact
# value, hence at most 2 ulp from the correctly rounded one (which is itself 0.5 ulp away).
MAX_ULP = 2

CASES = sorted(vmath.UNARY)
IDS = [f"{name}-{dt}" for name, dt in CASES]

needs_extended = pytest.mark.skipif(
    np.finfo(LD).nmant < 63, reason="long double is no wider than float64: no float64 reference"
)


def _loop(f):
    """An njit loop over an array calling f: the same shape as the generated kernels."""

    @njit
    def loop(a, out):
        for j in range(a.size):
            out[j] = f(a[j])

    return loop


_LOOPS = {}


def apply(name: str, dt: str, x: np.ndarray) -> np.ndarray:
    """vmath's (name, dt) function applied element-wise through a compiled loop."""
    key = (name, dt)
    if key not in _LOOPS:
        _LOOPS[key] = _loop(vmath.UNARY[key])
    out = np.empty_like(x)
    _LOOPS[key](x, out)
    return out


def reference(name: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return REFERENCE[name](x.astype(LD)).astype(x.dtype)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable floats between a and b (+0 == -0; NaN vs NaN is 0, vs a number inf).

    The sign-magnitude bit patterns are mapped to integers that are monotone in the value; the
    difference is taken modulo 2**64 so that it cannot overflow.
    """
    it = INT[a.dtype.type]
    mask = np.int64(np.iinfo(it).max)

    def ordered(v):
        i = v.view(it).astype(np.int64)
        return np.where(i < 0, -(i & mask), i).view(np.uint64)

    d = ordered(a) - ordered(b)
    d = np.minimum(d, -d).astype(np.float64)
    na, nb = np.isnan(a), np.isnan(b)
    return np.where(na & nb, 0.0, np.where(na | nb, np.inf, d))


def check(name: str, dt: str, x: np.ndarray) -> float:
    """Assert vmath's (name, dt) is within MAX_ULP of the reference on x; return the max ulp."""
    got, want = apply(name, dt, x), reference(name, x)
    u = ulp_distance(got, want)
    i = int(np.argmax(u))
    assert u[i] <= MAX_ULP, f"{name}_{dt}({x[i]!r}) = {got[i]!r}, want {want[i]!r} ({u[i]} ulp)"
    return float(u[i])


def nudged(dtype, values, steps=3) -> np.ndarray:
    """The values rounded to dtype, and their neighbours up to `steps` ulp either side."""
    out = []
    for v in np.asarray(values, dtype=dtype):
        up = dn = v
        out.append(v)
        for _ in range(steps):
            with np.errstate(over="ignore"):  # nextafter(max, inf) = inf is fine
                up, dn = np.nextafter(up, dtype(np.inf)), np.nextafter(dn, dtype(-np.inf))
            out += [up, dn]
    return np.array(out, dtype=dtype)


def special_values(dtype) -> np.ndarray:
    fi = np.finfo(dtype)
    tiny, big = fi.smallest_subnormal, fi.max
    ln = lambda v: float(np.log(LD(v)))
    edges = [0.0, 1.0, math.log(2) / 2, math.sqrt(2) - 1, 0.55]  # range reductions
    # exp: overflow, subnormal results, underflow to 0 (rounding up or down to 2**-min)
    exp_limits = [ln(big), ln(fi.smallest_normal), ln(tiny), ln(tiny) - math.log(2)]
    # tanh rounds to 1 (~9.01 / ~19.06); sigmoid rounds to 1 and softplus(x) to x
    saturation = [0.5 * ln(2 / fi.eps), -ln(fi.eps)]
    clamps = [9.5, 19.5, 89.0, 104.0, 710.0, 746.0]  # clamp points in vmath
    extremes = [float(tiny), float(fi.smallest_normal), float(big)]
    thresholds = edges + exp_limits + saturation + clamps + extremes
    v = nudged(dtype, [t for t in thresholds if abs(t) <= big])
    return np.concatenate([v, -v, np.array([np.inf, -np.inf, np.nan, -0.0], dtype)])


def grid(dtype, n=300_000) -> np.ndarray:
    """Both signs of: every magnitude from the smallest subnormal to the largest finite value
    (evenly spaced bit patterns = a logarithmic grid), a denser logarithmic grid on [2**-40, 2**8],
    and a linear grid over the region where the functions are not trivial."""
    it = INT[dtype]
    top = int(np.array(np.finfo(dtype).max, dtype).view(it))
    whole = np.linspace(0, top, n).astype(it).view(dtype)
    near = np.exp2(np.linspace(-40, 8, n // 3)).astype(dtype)
    m = 110 if dtype is np.float32 else 750
    linear = np.linspace(-m, m, n).astype(dtype)
    return np.concatenate([whole, -whole, near, -near, linear, special_values(dtype)])


@needs_extended
@pytest.mark.parametrize("name,dt", CASES, ids=IDS)
def test_accuracy_on_grid(name, dt):
    check(name, dt, grid(DTYPES[dt]))


@needs_extended
@pytest.mark.parametrize("name,dt", CASES, ids=IDS)
def test_accuracy_hypothesis(name, dt):
    width = 32 if dt == "float32" else 64

    @given(st.lists(st.floats(width=width), min_size=1, max_size=64))
    def prop(xs):
        check(name, dt, np.array(xs, dtype=DTYPES[dt]))

    prop()


@pytest.mark.parametrize("dt", DTYPES)
def test_special_values_exact(dt):
    ft = DTYPES[dt]
    x = np.array([np.inf, -np.inf, 0.0, -0.0], ft)
    expect = {
        "exp": [np.inf, 0.0, 1.0, 1.0],
        "tanh": [1.0, -1.0, 0.0, -0.0],
        "sigmoid": [1.0, 0.0, 0.5, 0.5],
        "softplus": [np.inf, 0.0, math.log(2), math.log(2)],
    }
    for name, want in expect.items():
        got = apply(name, dt, x)
        np.testing.assert_array_equal(got, np.array(want, ft), err_msg=name)
        assert got.dtype == ft
    assert np.signbit(apply("tanh", dt, x)[3]), "tanh(-0.0) must be -0.0"
    # Saturation: huge finite arguments give the limits exactly, never inf/inf = NaN.
    big = np.array([np.finfo(ft).max, -np.finfo(ft).max, 1e4, -1e4], ft)
    np.testing.assert_array_equal(apply("tanh", dt, big), np.array([1, -1, 1, -1], ft))
    np.testing.assert_array_equal(apply("sigmoid", dt, big), np.array([1, 0, 1, 0], ft))


@pytest.mark.parametrize("name,dt", CASES, ids=IDS)
def test_nan_propagates(name, dt):
    ft = DTYPES[dt]
    f = vmath.UNARY[(name, dt)]
    payload = np.array(0x7FC00001 if ft is np.float32 else 0x7FF0000000000001, INT[ft]).view(ft)
    nans = np.array([np.nan, -np.nan, payload], ft)  # quiet, negative, signalling with payload
    assert np.isnan(apply(name, dt, nans)).all()
    assert math.isnan(f(ft(np.nan)))  # the scalar function called directly, no exception either


@pytest.mark.parametrize("name,dt", CASES, ids=IDS)
def test_scalar_call_matches_loop(name, dt):
    """Calling the function directly gives the same bits as the (vectorized) loop."""
    ft = DTYPES[dt]
    x = np.random.default_rng(0).standard_normal(64).astype(ft) * ft(8)
    f = vmath.UNARY[(name, dt)]
    scalar = np.array([f(v) for v in x], ft)
    np.testing.assert_array_equal(scalar.view(INT[ft]), apply(name, dt, x).view(INT[ft]))


def test_unary_table():
    assert set(vmath.UNARY) == {(n, d) for n in REFERENCE for d in DTYPES}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_float32_stays_float32(name):
    """No float64 arithmetic (or float -> double promotion) in a float32 loop."""
    apply(name, "float32", np.ones(4, np.float32))
    loop = _LOOPS[(name, "float32")]
    assert "double" not in loop.inspect_llvm(loop.signatures[0])


# Packed (SIMD) floating-point arithmetic on 256/512-bit registers, e.g. `vmulps %zmm1, ...`.
PACKED = re.compile(r"\bv(?:mul|add|sub|div|min|max|fn?madd\d+|fn?msub\d+)p[sd]\s[^\n]*%[yz]mm")


@pytest.mark.skipif(not llvm.get_host_cpu_features().get("avx"), reason="needs an x86 CPU with AVX")
@pytest.mark.parametrize("name,dt", CASES, ids=IDS)
def test_loop_is_vectorized(name, dt):
    apply(name, dt, np.ones(4, DTYPES[dt]))
    loop = _LOOPS[(name, dt)]
    asm = loop.inspect_asm(loop.signatures[0])
    assert PACKED.search(asm), f"{name}_{dt}: no packed float instruction on ymm/zmm registers"


@needs_extended
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_accuracy_without_fma(tmp_path):
    """`_fma` is llvm.fmuladd: fused where the CPU has FMA, a multiply and an add where it has
    not. The ulp bound must hold both ways: here the functions are compiled for the baseline
    x86-64 (SSE2, no FMA) in a fresh process and checked on the same grid."""
    code = textwrap.dedent("""\
        import sys
        sys.path.insert(0, sys.argv[1])
        import test_vmath as t
        for name, dt in t.CASES:
            t.check(name, dt, t.grid(t.DTYPES[dt], n=30_000))
        print("ok")
        """)
    env = {
        **os.environ,
        "NUMBA_CPU_NAME": "x86-64",
        "NUMBA_CPU_FEATURES": "",
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_wide_vectors_asks_for_512_bit_vectors_in_its_caller():
    """The generated kernels call wide_vectors() first: it must reach the function's LLVM IR
    as the "prefer-vector-width" attribute (LLVM's tuning for Intel's AVX-512 cores otherwise
    vectorizes in 256 bits), and change nothing in what the function computes."""

    @njit(error_model="numpy")
    def wide(a, out):
        vmath.wide_vectors()
        for i in range(a.size):
            out[i] = vmath.sigmoid_f32(a[i])

    @njit(error_model="numpy")
    def plain(a, out):
        for i in range(a.size):
            out[i] = vmath.sigmoid_f32(a[i])

    a = np.linspace(-30, 30, 1001, dtype=np.float32)
    got, want = np.empty_like(a), np.empty_like(a)
    wide(a, got)
    plain(a, want)
    np.testing.assert_array_equal(got, want)
    assert '"prefer-vector-width"="512"' in wide.inspect_llvm(wide.signatures[0])
    assert "prefer-vector-width" not in plain.inspect_llvm(plain.signatures[0])
