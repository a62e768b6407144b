"""The op registry: every IR op declared once, with its shape rule, its interpreter rule and
its code-generation rules side by side. The shape rules' functions live in
lstmc.ir.shape_rules (ShapeError too, re-exported here); the rest is here.

Values in the interpreter are float64 arrays: a vector is `[B, n]` (one row per sequence), a
matrix param is `[m, n]`, a scalar is a 0-d array. Element-wise ops broadcast scalars.

Code-generation rules for element-wise ops are scalar expression templates: `{0}`, `{1}`, ...
are operand variables (codegen binds every value to a local, so an operand may appear twice),
`_F` is the kernel's float type and `_ZERO`, `_ONE` typed constants. A rule may name a helper
function whose source is shared by the targets that list it. Structural ops (products, slices,
reductions) have the marker STRUCTURAL: each target's emitter implements `emit_<op>`, and a test
checks that every target covers every op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lstmc.ir.shape_rules import (
    ShapeError,  # noqa: F401 (re-exported: callers catch ops.ShapeError)
    clip_shape,
    concat_shape,
    declared_shape,
    elementwise_shape,
    layer_norm_shape,
    matvec_shape,
    packed_matvec_shape,
    param_cols_shape,
    same_shape,
    slice_shape,
)
from lstmc.ir.shapes import Shape

TARGETS = ("cpu", "cuda")
STRUCTURAL = "structural"


@dataclass(frozen=True)
class Rule:
    """How a target computes one element of an element-wise op."""

    expr: str  # template over operand variables {0}, {1}, ...
    helper: str | None = None  # name of a helper in HELPERS this expression calls


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str  # source | sink | elementwise | structural
    arity: int | None  # None: variadic
    shape: Callable[[list[Shape], dict], Shape]
    interp: Callable[..., np.ndarray]  # (args, attrs, ctx) -> value
    codegen: dict = field(default_factory=dict)  # target -> Rule | STRUCTURAL
    doc: str = ""


REGISTRY: dict[str, OpDef] = {}
# Spec function name -> (op name, number of arguments). Operators map in lower.py.
SPEC_FUNCTIONS: dict[str, tuple[str, int | None]] = {}


def op(name, kind, arity, shape, interp, codegen=None, doc="", spec_name=None):
    REGISTRY[name] = OpDef(name, kind, arity, shape, interp, codegen or {}, doc)
    if spec_name:
        SPEC_FUNCTIONS[spec_name] = (name, arity)


def get(name: str) -> OpDef:
    return REGISTRY[name]


# -- interpreter rules (float64 NumPy; NaN in, NaN out) -----------------------------------------


def _sigmoid(v):
    z = np.exp(-np.abs(v))  # never overflows; exact limits for huge |v|
    return np.where(v >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def _softplus(v):
    return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))


def _softsign(v):
    return np.where(np.isinf(v), np.sign(v), v / (1.0 + np.abs(v)))


def _slice_rows(v, attrs, ctx):
    start = attrs["start"].evaluate(ctx.sizes)
    return v[..., start : start + attrs["size"].evaluate(ctx.sizes)]


def _layer_norm_interp(args, attrs, ctx):
    v, gamma, beta = args
    # Deviations from the row's first value first (exact for values of one magnitude), then
    # from their mean: v - mean of a constant row of 1e30s was an ulp of 1e30, not 0, which
    # the 1/std then blew up to +-1. (The kernels' one-pass statistics shift by the first
    # value too, lstmc_runtime.rows, and give 0 there as well.)
    shifted = v - v[..., :1]
    centered = shifted - shifted.mean(axis=-1, keepdims=True)
    var = (centered**2).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(var + attrs["eps"]) * gamma + beta


def _unary(f):
    return lambda args, attrs, ctx: f(args[0])


def _binary(f):
    return lambda args, attrs, ctx: f(args[0], args[1])


# -- declarations -------------------------------------------------------------------------------

for _name, _doc in (
    ("input", "one timestep's input vector, attrs: name"),
    ("state", "a state variable's value from the previous step, attrs: name"),
    ("param", "a learned parameter, attrs: name"),
):
    op(
        _name,
        "source",
        0,
        declared_shape,
        lambda args, attrs, ctx: ctx.source(attrs),
        {t: STRUCTURAL for t in TARGETS},
        _doc,
    )
op(
    "const",
    "source",
    0,
    lambda s, a: (),
    lambda args, attrs, ctx: np.float64(attrs["value"]),
    {t: STRUCTURAL for t in TARGETS},
    "a scalar constant, attrs: value (and name if named)",
)
op(
    "output",
    "sink",
    1,
    same_shape,
    lambda args, attrs, ctx: args[0],
    {t: STRUCTURAL for t in TARGETS},
    "a value emitted at every timestep, attrs: name",
)
op(
    "update",
    "sink",
    1,
    same_shape,
    lambda args, attrs, ctx: args[0],
    {t: STRUCTURAL for t in TARGETS},
    "the next value of a state variable, attrs: name",
)


def _ew(name, arity, interp, expr, helper=None, doc="", spec_name=None):
    rule = Rule(expr, helper)
    op(
        name,
        "elementwise",
        arity,
        clip_shape if name == "clip" else functools.partial(elementwise_shape, op=name),
        interp,
        {t: rule for t in TARGETS},
        doc,
        spec_name,
    )


_ew("add", 2, _binary(np.add), "({0} + {1})", doc="a + b")
_ew("sub", 2, _binary(np.subtract), "({0} - {1})", doc="a - b")
_ew("mul", 2, _binary(np.multiply), "({0} * {1})", doc="a * b")
_ew("div", 2, _binary(np.divide), "({0} / {1})", doc="a / b (IEEE: x/0 is ±inf or NaN)")
_ew("neg", 1, _unary(np.negative), "(-{0})", doc="-a")
_ew(
    "sigmoid",
    1,
    _unary(_sigmoid),
    "_sigmoid({0})",
    "_sigmoid",
    "1 / (1 + exp(-v)), exact limits for large |v|",
    "sigmoid",
)
_ew("tanh", 1, _unary(np.tanh), "_tanh({0})", "_tanh", "hyperbolic tangent", "tanh")
_ew("exp", 1, _unary(np.exp), "_exp({0})", "_exp", "e ** v", "exp")
_ew("log", 1, _unary(np.log), "_log({0})", "_log", "natural log (NaN below 0)", "log")
_ew(
    "softplus",
    1,
    _unary(_softplus),
    "_softplus({0})",
    "_softplus",
    "log(1 + exp(v)) computed without overflow",
    "softplus",
)
_ew(
    "relu",
    1,
    _unary(lambda v: np.where(v < 0, 0.0, v)),
    "(_ZERO if {0} < _ZERO else {0})",
    doc="max(v, 0), NaN stays NaN",
    spec_name="relu",
)
_ew(
    "hard_sigmoid",
    1,
    _unary(lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0)),
    "_hard_sigmoid({0})",
    "_hard_sigmoid",
    "clip(0.2 * v + 0.5, 0, 1): ONNX HardSigmoid's default and Keras 2 (Keras 3 and PyTorch use 1/6)",
    "hard_sigmoid",
)
_ew("softsign", 1, _unary(_softsign), "_softsign({0})", "_softsign", "v / (1 + |v|)", "softsign")
_ew("abs", 1, _unary(np.abs), "abs({0})", doc="|v|", spec_name="abs")
_ew("identity", 1, _unary(lambda v: v), "{0}", doc="v unchanged", spec_name="identity")
_ew(
    "max",
    2,
    _binary(np.maximum),
    "({0} if ({0} > {1} or {0} != {0}) else {1})",
    doc="element-wise maximum, NaN if either is NaN",
    spec_name="max",
)
_ew(
    "min",
    2,
    _binary(np.minimum),
    "({0} if ({0} < {1} or {0} != {0}) else {1})",
    doc="element-wise minimum, NaN if either is NaN",
    spec_name="min",
)
_ew(
    "clip",
    3,
    lambda args, attrs, ctx: np.minimum(np.maximum(args[0], args[1]), args[2]),
    "_clip({0}, {1}, {2})",
    "_clip",
    "min(max(v, lo), hi), NaN stays NaN",
    "clip",
)

op(
    "matvec",
    "structural",
    2,
    matvec_shape,
    lambda args, attrs, ctx: args[1] @ args[0].T,
    {t: STRUCTURAL for t in TARGETS},
    "matrix param times vector: W @ v",
)
op(
    "packed_matvec",
    "structural",
    None,
    packed_matvec_shape,
    lambda args, attrs, ctx: args[0] @ np.concatenate(args[1:], axis=0).T,
    {t: STRUCTURAL for t in TARGETS},
    "several products sharing one vector, stacked: [W1; W2; ...] @ v (gate fusion)",
)
op(
    "param_cols",
    "structural",
    1,
    param_cols_shape,
    lambda args, attrs, ctx: _slice_rows(args[0], attrs, ctx),
    {t: STRUCTURAL for t in TARGETS},
    "a block of a matrix param's columns, attrs: start, size (splits W @ concat(a, b))",
)
op(
    "slice",
    "structural",
    1,
    slice_shape,
    lambda args, attrs, ctx: _slice_rows(args[0], attrs, ctx),
    {t: STRUCTURAL for t in TARGETS},
    "elements [start, start+size) of a vector",
)


def _concat_interp(args, attrs, ctx):
    # A param vector ([n]) joined with per-row values ([B, n]) repeats for every row.
    lead = max((np.shape(a)[:-1] for a in args), key=len)
    return np.concatenate([np.broadcast_to(a, lead + np.shape(a)[-1:]) for a in args], axis=-1)


op(
    "concat",
    "structural",
    None,
    concat_shape,
    _concat_interp,
    {t: STRUCTURAL for t in TARGETS},
    "vectors joined end to end",
    "concat",
)
op(
    "layer_norm",
    "structural",
    3,
    layer_norm_shape,
    _layer_norm_interp,
    {t: STRUCTURAL for t in TARGETS},
    "(v - mean(v)) / sqrt(var(v) + eps) * gamma + beta over the vector (biased variance, "
    "eps 1e-5 as torch.nn.LayerNorm)",
    "layer_norm",
)
SPEC_FUNCTIONS["concat"] = ("concat", None)


# Helpers that are the target's transcendental function by another name: `_vm_*` are
# lstmc_runtime.vmath's on the CPU, math.*'s on CUDA, bound by the emitter.
FORWARDS = {f"_{fn}": f"_vm_{fn}" for fn in ("sigmoid", "tanh", "exp", "log", "softplus")}

# Helper functions that element-wise rules call, in plain arithmetic so that every target can
# compile them: `_F` is the kernel's float type.
HELPERS = {
    **{name: f"def {name}(v):\n    return {target}(v)\n" for name, target in FORWARDS.items()},
    "_hard_sigmoid": (
        "def _hard_sigmoid(v):\n"
        "    t = _F(0.2) * v + _F(0.5)\n"
        "    if t != t:\n"
        "        return t\n"
        "    return _ZERO if t < _ZERO else (_ONE if t > _ONE else t)\n"
    ),
    "_softsign": (
        "def _softsign(v):\n"
        "    a = abs(v)\n"
        "    if a == _INF:\n"  # inf / inf would be NaN; the limit is ±1
        "        return _ONE if v > _ZERO else -_ONE\n"
        "    return v / (_ONE + a)\n"
    ),
    # min(max(v, lo), hi) as the interpreter, NumPy and torch: hi wins where lo > hi (a
    # constant overridden so), and a NaN in any of the three gives NaN. With lo and hi
    # constants (the usual case) their checks fold away.
    "_clip": (
        "def _clip(v, lo, hi):\n"
        "    if v != v or lo != lo or hi != hi:\n"
        "        return v + lo + hi\n"
        "    t = lo if v < lo else v\n"
        "    return hi if t > hi else t\n"
    ),
}
