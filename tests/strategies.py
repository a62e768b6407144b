"""Hypothesis strategies for lstmc: random valid cell specs, random near-valid ones, and data.

    from strategies import cell_specs, cell_and_data, near_valid_specs, random_params

    @given(cell_specs())                 # YAML text of a random valid recurrent cell
    @given(cell_and_data())              # CellCase(text, sizes, T, B, seed) with .x(), .params()
    @given(near_valid_specs())           # valid specs with 1-3 random mutations (may be valid)

A generated cell has the sizes `input`, `hidden` and up to two more, one input, one to three
state variables, a few equations feeding each other (declared in random order, so uses before
definitions are common), one or two outputs, optional `constants:`, and params created exactly
where an expression needs them, so every param is used and every size can be bound from the
arrays. Expressions mix `W @ v`, `U @ (r * h)`, `W @ concat(h, x)` (a `[hidden, hidden + input]`
param), `+ - * /`, unary `-`, every spec function, numbers in every accepted notation, named
constants and `1 - f` coupled gates. The YAML itself varies too: flow and block collections,
quoted, folded and block-scalar equations, comments, sections in any order, names that are
Python builtins or look like the compiler's own temporaries (`np`, `_sigmoid`, `t_1`, `next_h`).

Values stay finite: every expression carries a generous bound on its magnitude, exp and log
only see safe arguments (`exp(-abs(v))`, `log(1 + abs(v))`), denominators are at least 1
(`1 + abs(v)`), anything whose bound passes 1e3 is squashed (tanh, clip, ...), and every state
update is bounded or gated (`z * h + (1 - z) * cand`, `f * c + i * g`), so over T <= 5 steps
from a randn state with the default init (U(+-1/sqrt(hidden))) nothing overflows.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from lstmc_runtime.signature import Signature

import lstmc
from lstmc.cells import names as shipped_names
from lstmc.cells import path as shipped_path
from lstmc.ir.graph import Graph
from lstmc.ir.interface import signature_of
from lstmc.spec.cell import Cell

# -- names --------------------------------------------------------------------------------------

_POOLS = {
    "cell": ["mycell", "cell", "rnn", "gated", "lstm_v2", "gru2", "c0", "test_cell", "MyCell"],
    "size": ["proj", "k", "inner", "m", "d", "cells", "units", "r2"],
    "input": ["x", "inp", "x_t", "u", "xt"],
    "state": ["h", "c", "s", "m", "n_", "h2", "carry", "mem"],
    "matrix": ["W", "U", "V", "P", "R", "Wx", "Uh", "M", "W_i", "U_f", "W_hr"],
    "vector": ["b", "bias", "d", "p", "b_i", "w_peep", "u_diag"],
    "gamma": ["gamma", "g_ln", "gain"],
    "beta": ["beta", "b_ln", "shift"],
    "constant": ["alpha", "forget_bias", "scale", "clip_at", "k0", "eps_"],
    "equation": [
        "i", "f", "g", "o", "r", "z", "n", "a", "gate", "cand", "pre", "act", "q", "y",
        "h_next", "c_next", "mix", "e", "t", "hx",
    ],
}  # fmt: skip
# Valid identifiers that may trip a code generator: Python builtins and modules, YAML 1.1
# booleans, and names like the compiler's own temporaries, helpers and typed constants.
_TRICKY = [
    "np", "math", "sum", "list", "float", "self", "range", "numba", "on", "no", "yes", "null",
    "true", "x0", "_t", "I", "l", "O", "out", "t_1", "next_h", "out_y", "add", "mul_1",
    "_F", "_ZERO", "_ONE", "_sigmoid", "_vm_exp", "T", "B", "params", "state", "kernel",
]  # fmt: skip
_TRICKY_CELL = ["np", "math", "kernel", "lstmc_cell", "cell_1", "T", "numba_", "x"]

# Numbers as a spec may write them: (text, value).
_NUMBERS = [
    ("2", 2.0), ("0.5", 0.5), (".5", 0.5), ("1e-1", 0.1), ("3E-1", 0.3), ("1.5", 1.5),
    ("0.25", 0.25), ("2.0", 2.0), ("1e0", 1.0), ("3.", 3.0), ("1", 1.0), ("25e-2", 0.25),
]  # fmt: skip
_CONSTANT_TEXTS = [*_NUMBERS, ("+0.75", 0.75), ("-0.5", -0.5), ("1.0", 1.0), ("0", 0.0)]

ATOM, UNARY, PRODUCT, SUM = 3, 2, 1, 0  # precedence of an expression's outermost operator
LIMIT = 1e3  # squash anything whose magnitude bound passes this
STATE_MAG = 10.0  # |state| stays below this over T <= 5 steps from a randn start
INPUT_MAG = 6.0


@functools.cache
def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


# Draw through a few cached integer strategies: building a new strategy object for every
# choice (st.sampled_from(...) each time) costs more than the rest of the generation.
def _between(draw, lo: int, hi: int) -> int:
    return draw(_ints(lo, hi))


def _choose(draw, options):
    """One of `options`; shrinks towards the first."""
    options = options if isinstance(options, (list, tuple, str)) else list(options)
    return options[draw(_ints(0, len(options) - 1))]


def _shuffled(draw, items) -> list:
    """A random permutation of `items`; shrinks towards the given order."""
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = i - draw(_ints(0, i))
        items[i], items[j] = items[j], items[i]
    return items


class _E(NamedTuple):
    """A generated expression: its text, its outermost precedence and a bound on |value|."""

    text: str
    prec: int
    mag: float


def _at(e: _E, prec: int) -> str:
    """The text of `e` where an operand of precedence `prec` or tighter is needed."""
    return e.text if e.prec >= prec else f"({e.text})"


def _key(*symbols: str) -> tuple[str, ...]:
    return tuple(sorted(symbols))


class _Gen:
    """Draws one random valid cell; `text()` renders it as YAML."""

    def __init__(self, draw):
        self.draw = draw
        self.taken: set[str] = set()
        self.spaced = _between(draw, 0, 1) == 1
        self.params: dict[str, str] = {}  # name -> YAML value text
        self.constants: dict[str, tuple[str, float]] = {}
        self.used_constants: set[str] = set()
        self.bare: set[str] = set()  # sizes some param has as a whole dimension
        self.equations: dict[str, str] = {}  # in generation (dependency) order
        self.vectors: dict[tuple, list[tuple[str, float]]] = {}  # size key -> [(name, mag)]
        self.gates: dict[tuple, list[str]] = {}  # size key -> names valued in [0, 1]
        self.scalars: list[tuple[str, float]] = []  # scalar equations: (name, |value| bound)
        self.update: dict[str, str] = {}
        self.outputs: list[str] = []

    # -- small helpers ---------------------------------------------------------------------

    def pick(self, options):
        return _choose(self.draw, options)

    def chance(self, p: float) -> bool:
        # True at the top of the range, so that shrinking (towards 0) turns options off.
        return _between(self.draw, 0, 99) >= 100 - p * 100

    def fresh(self, kind: str) -> str:
        pool = _POOLS[kind]
        if kind != "size" and self.chance(0.08):
            pool = _TRICKY_CELL if kind == "cell" else _TRICKY
        name = self.pick(pool)
        base, i = name, 1
        while name in self.taken or name in ("input", "hidden"):
            name = f"{base}{i}" if base[-1] != "_" and not base[-1].isdigit() else f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name

    def op(self, symbol: str) -> str:
        return f" {symbol} " if self.spaced else symbol

    def number(self, lo: float = 0.0) -> _E:
        text, value = self.pick([n for n in _NUMBERS if n[1] >= lo])
        return _E(text, ATOM, value)

    def scalar(self) -> _E:
        """A scalar: a number, a named constant or a scalar equation."""
        options = ["number"] * 3 + ["constant"] * bool(self.constants) + ["eq"] * bool(self.scalars)
        kind = self.pick(options)
        if kind == "constant":
            unused = [c for c in self.constants if c not in self.used_constants]
            name = self.pick(unused or sorted(self.constants))
            self.used_constants.add(name)
            return _E(name, ATOM, abs(self.constants[name][1]))
        if kind == "eq":
            name, mag = self.pick(self.scalars)
            return _E(name, ATOM, mag)
        return self.number()

    def add_param(self, kind: str, shape: str, init: str | None = None) -> str:
        name = self.fresh(kind)
        if init is None and self.chance(0.1):
            init = "uniform"
        self.params[name] = f"{{shape: {shape}, init: {init}}}" if init else shape
        self.bare |= set(re.findall(r"[\[,]\s*(\w+)\s*(?=[,\]])", shape))
        return name

    def size_text(self, key: tuple) -> str:
        parts = _shuffled(self.draw, key) if len(key) > 1 else list(key)
        return self.op("+").join(parts)

    def shape_text(self, *keys: tuple) -> str:
        sep = self.pick([", ", ","]) if not self.spaced else ", "
        return "[" + sep.join(self.size_text(k) for k in keys) + "]"

    def define(self, kind: str, e: _E, key: tuple, gate: bool = False, name=None) -> _E:
        """Make `e` an equation of size `key`; returns the name as a leaf."""
        name = name or self.fresh(kind)
        self.equations[name] = e.text
        self.vectors.setdefault(key, []).append((name, e.mag))
        if gate:
            self.gates.setdefault(key, []).append(name)
        return _E(name, ATOM, e.mag)

    # -- expressions -------------------------------------------------------------------------

    def leaf(self, key: tuple) -> _E:
        have = self.vectors.get(key, [])
        if have and not self.chance(0.25):
            name, mag = self.pick(have)
            return _E(name, ATOM, mag)
        return _E(self.add_param("vector", self.shape_text(key)), ATOM, 1.0)

    def operand(self, depth: int) -> tuple[_E, tuple]:
        """The right side of a product: a vector of any available size, a non-trivial
        expression (`(r * h)`) or a concat; returns it and its size key."""
        keys = sorted(self.vectors)
        kind = self.pick(["name"] * 4 + ["expr"] * 2 + ["concat"] * 2)
        if kind == "concat":
            parts = [
                self.pick([k for k in keys if len(k) == 1]) for _ in range(self.pick([2, 2, 3]))
            ]
            args = [self.leaf(k) if depth <= 0 or self.chance(0.7) else self.vec(k, depth - 1)
                    for k in parts]  # fmt: skip
            key = _key(*(s for k in parts for s in k))
            text = f"concat({', '.join(a.text for a in args)})"
            return _E(text, ATOM, max(a.mag for a in args)), key
        key = self.pick(keys)
        if kind == "expr" and len(key) == 1 and depth > 0:
            return self.vec(key, depth - 1), key
        name, mag = self.pick(self.vectors[key])
        return _E(name, ATOM, mag), key

    def matvec(self, key: tuple, depth: int) -> _E:
        v, vkey = self.operand(depth)
        w = self.add_param("matrix", self.shape_text(key, vkey))
        return _E(f"{w}{self.op('@')}{_at(v, UNARY)}", PRODUCT, 6 * len(vkey) * v.mag)

    def unary(self, key: tuple, depth: int) -> _E:
        a = self.vec(key, depth - 1)
        t, m = a.text, a.mag
        kind = self.pick([
            "sigmoid", "tanh", "relu", "neg", "hard_sigmoid", "softsign", "softplus", "exp",
            "log", "abs", "identity", "clip", "max", "min", "layer_norm",
        ])  # fmt: skip
        if kind in ("sigmoid", "tanh", "hard_sigmoid", "softsign"):
            return _E(f"{kind}({t})", ATOM, 1.0)
        if kind in ("relu", "abs", "identity"):
            return _E(f"{kind}({t})", ATOM, m)
        if kind == "softplus":
            return _E(f"softplus({t})", ATOM, m + 1.0)
        if kind == "neg":
            return _E(f"-{_at(a, UNARY)}", UNARY, m)
        if kind == "exp":
            form, bound = self.pick([
                ("exp(-abs({}))", 1.0), ("exp(tanh({}))", math.e), ("exp(-softplus({}))", 1.0),
                ("exp(clip({}, -2, 2))", math.exp(2)),
            ])  # fmt: skip
            return _E(form.format(t), ATOM, bound)
        if kind == "log":
            form = self.pick(["log(1 + abs({}))", "log(2 + tanh({}))", "log(1 + sigmoid({}))"])
            return _E(form.format(t), ATOM, math.log1p(m) + 1.0)
        if kind == "clip":
            # lo > hi too: hi wins, as NumPy's and torch's clip (the kernels' differed)
            lo, hi = self.pick([("-2", "2"), ("0", "1"), ("-1", "0.5"), ("-.5", ".5"), ("1", "-1")])
            return _E(f"clip({t}, {lo}, {hi})", ATOM, 2.0)
        if kind in ("max", "min"):
            b = self.vec(key, depth - 1) if self.chance(0.7) else self.scalar()
            args = (t, b.text) if self.chance(0.5) else (b.text, t)
            return _E(f"{kind}({args[0]}, {args[1]})", ATOM, max(m, b.mag))
        gamma = self.add_param("gamma", self.shape_text(key), self.pick([None, "ones"]))
        beta = self.add_param("beta", self.shape_text(key), self.pick([None, "zeros"]))
        return _E(f"layer_norm({t}, {gamma}, {beta})", ATOM, 2.5 + 1.0)

    def binary(self, key: tuple, depth: int) -> _E:
        a = self.vec(key, depth - 1)
        kind = self.pick(["+", "-", "*", "/", "scale", "shift", "coupled"])
        if kind in ("+", "-"):
            b = self.vec(key, depth - 1)
            return _E(f"{_at(a, SUM)}{self.op(kind)}{_at(b, PRODUCT)}", SUM, a.mag + b.mag)
        if kind == "*":
            b = self.vec(key, depth - 1)
            return _E(f"{_at(a, PRODUCT)}{self.op('*')}{_at(b, UNARY)}", PRODUCT, a.mag * b.mag)
        if kind == "/":
            form = self.pick([
                "(1 + abs({}))", "(2 + tanh({}))", "(1 + exp(-abs({})))", "(1 + sigmoid({}))",
                "number",
            ])  # fmt: skip
            if form == "number":
                den = self.number(lo=0.5).text
            else:
                den = form.format(self.vec(key, depth - 1).text)
            return _E(f"{_at(a, PRODUCT)}{self.op('/')}{den}", PRODUCT, 2 * a.mag)
        s = self.scalar()
        if kind == "scale":
            text = (f"{_at(s, PRODUCT)}{self.op('*')}{_at(a, UNARY)}" if self.chance(0.5)
                    else f"{_at(a, PRODUCT)}{self.op('*')}{_at(s, UNARY)}")  # fmt: skip
            return _E(text, PRODUCT, a.mag * s.mag)
        if kind == "shift":
            sign = self.pick(["+", "-"])
            return _E(f"{_at(a, SUM)}{self.op(sign)}{_at(s, PRODUCT)}", SUM, a.mag + s.mag)
        g = self.gate(key, depth - 1)  # a coupled gate: (1 - g) * a
        return _E(
            f"(1{self.op('-')}{_at(g, PRODUCT)}){self.op('*')}{_at(a, UNARY)}", PRODUCT, a.mag
        )

    def gate(self, key: tuple, depth: int) -> _E:
        """A value in [0, 1]: an existing gate equation or a fresh sigmoid."""
        if self.gates.get(key) and self.chance(0.4):
            return _E(self.pick(self.gates[key]), ATOM, 1.0)
        fn = self.pick(["sigmoid", "sigmoid", "hard_sigmoid"])
        return _E(f"{fn}({self.vec(key, max(depth, 1)).text})", ATOM, 1.0)

    def squash(self, e: _E, key: tuple) -> _E:
        kind = self.pick(["tanh", "sigmoid", "softsign", "hard_sigmoid", "clip", "layer_norm"])
        if kind == "clip":
            return _E(f"clip({e.text}, -2, 2)", ATOM, 2.0)
        if kind == "layer_norm":
            gamma = self.add_param("gamma", self.shape_text(key), self.pick([None, "ones"]))
            beta = self.add_param("beta", self.shape_text(key), self.pick([None, "zeros"]))
            return _E(f"layer_norm({e.text}, {gamma}, {beta})", ATOM, 3.5)
        return _E(f"{kind}({e.text})", ATOM, 1.0)

    def vec(self, key: tuple, depth: int) -> _E:
        """A vector expression of size `key`, at most `depth` operations deep."""
        if depth <= 0:
            kind = self.pick(["leaf", "leaf", "matvec"])
        else:
            kind = self.pick(["leaf", "matvec", "matvec", "unary", "unary", "binary", "binary"])
        if kind == "leaf":
            e = self.leaf(key)
        elif kind == "matvec":
            e = self.matvec(key, depth)
        elif kind == "unary":
            e = self.unary(key, depth)
        else:
            e = self.binary(key, depth)
        return self.squash(e, key) if e.mag > LIMIT else e

    def bounded(self, key: tuple, depth: int) -> _E:
        e = self.vec(key, depth)
        return e if e.mag <= 4.0 else self.squash(e, key)

    # -- the cell ----------------------------------------------------------------------------

    def build(self) -> None:
        draw = self.draw
        self.cell = self.fresh("cell")
        extra = [self.fresh("size") for _ in range(_between(draw, 0, 2))]
        self.sizes = _shuffled(draw, ["input", "hidden", *extra])
        self.input = self.fresh("input")
        self.vectors[("input",)] = [(self.input, INPUT_MAG)]
        self.state: dict[str, tuple] = {}
        for i in range(_between(draw, 1, 3)):
            size = "hidden" if i == 0 else self.pick(["hidden", "hidden", "input", *extra])
            name = self.fresh("state")
            self.state[name] = (size,)
            self.vectors.setdefault((size,), []).append((name, STATE_MAG))
        for _ in range(_between(draw, 0, 2)):
            self.constants[self.fresh("constant")] = self.pick(_CONSTANT_TEXTS)
        if self.chance(0.2):
            s = self.scalar()
            other = self.number()
            text = f"{_at(other, SUM)}{self.op('-')}{_at(s, PRODUCT)}"
            name = self.fresh("equation")
            self.equations[name] = text
            self.scalars.append((name, other.mag + s.mag))
        # Sizes no state has get an equation first, so products can use them (and bind them).
        unbound = [s for s in extra if (s,) not in self.state.values()]
        for s in unbound:
            self.define("equation", self.bounded((s,), _between(draw, 0, 2)), (s,))
        for _ in range(_between(draw, 0, 2)):
            key = (self.pick(["hidden", "input", *extra]),)
            if self.chance(0.15):  # an alias or a concat as an equation of its own
                name, mag = self.pick(sorted(x for v in self.vectors.values() for x in v))
                key = next(k for k, v in self.vectors.items() if (name, mag) in v)
                self.define("equation", _E(name, ATOM, mag), key)
            elif self.chance(0.15):
                a, b = self.leaf(("hidden",)), self.leaf(("input",))
                self.define("equation", _E(f"concat({a.text}, {b.text})", ATOM, max(a.mag, b.mag)),
                            _key("hidden", "input"))  # fmt: skip
            else:
                self.define("equation", self.vec(key, _between(draw, 1, 3)), key,
                            gate=False)  # fmt: skip
        for name, key in self.state.items():
            self.update[name] = self.state_update(name, key)
        for const in self.constants:  # every constant gets used (as an output, maybe)
            if const not in self.used_constants:
                key = (self.pick(["hidden", "input", *extra]),)
                e = self.bounded(key, 1)
                c = _E(const, ATOM, abs(self.constants[const][1]))
                self.define("equation", _E(f"{const}{self.op('*')}{_at(e, UNARY)}", PRODUCT,
                                           c.mag * e.mag), key)  # fmt: skip
                self.used_constants.add(const)
        for size in self.sizes:  # bind every size from x and the params alone (state optional)
            if size != "input" and size not in self.bare:
                key = (size,)
                b = self.add_param("vector", self.shape_text(key))
                self.define("equation", self.squash(_E(b, ATOM, 1.0), key), key)
        self.choose_outputs()

    def state_update(self, state: str, key: tuple) -> str:
        """A bounded or gated new value for `state`, as an equation name (or inline)."""
        kind = self.pick(["squash", "gru", "lstm", "inline"])
        depth = _between(self.draw, 1, 3)
        if kind == "inline":
            return self.squash(self.vec(key, depth), key).text
        if kind == "squash":
            new = self.squash(self.vec(key, depth), key)
        elif kind == "gru":
            z = self.define("equation", self.gate(key, depth), key, gate=True)
            cand = self.define("equation", self.bounded(key, depth), key)
            keep, write = (z.text, f"(1{self.op('-')}{z.text})")
            if self.chance(0.5):
                keep, write = write, keep
            new = _E(f"{keep}{self.op('*')}{state}{self.op('+')}{write}{self.op('*')}{cand.text}",
                     SUM, STATE_MAG)  # fmt: skip
        else:
            f = self.define("equation", self.gate(key, depth), key, gate=True)
            if self.chance(0.3):
                i = self.define("equation", _E(f"1{self.op('-')}{f.text}", SUM, 1.0), key)
            else:
                i = self.define("equation", self.gate(key, depth), key, gate=True)
            g = self.define("equation", self.bounded(key, depth), key)
            new = _E(f"{f.text}{self.op('*')}{state}{self.op('+')}{i.text}{self.op('*')}{g.text}",
                     SUM, STATE_MAG)  # fmt: skip
        return self.define("equation", new, key).text

    def choose_outputs(self) -> None:
        updates = [v for v in self.update.values() if v in self.equations]
        vector_eqs = [n for k, v in self.vectors.items() for n, _ in v if n in self.equations]
        first = self.pick(updates) if updates and self.chance(0.8) else None
        if first is None:
            if not vector_eqs:  # every update was inline: emit a fresh equation
                key = next(iter(self.state.values()))
                vector_eqs = [self.define("equation", self.bounded(key, 1), key).text]
            first = self.pick(vector_eqs)
        self.outputs = [first]
        others = [n for n in vector_eqs if n != first]
        if others and self.chance(0.35):
            self.outputs.append(self.pick(others))

    # -- YAML --------------------------------------------------------------------------------

    def comment(self) -> str:
        return self.pick(["", "", "", "", "  # note", "    # a comment: with colon", " #x"])

    def mapping(self, key: str, items: dict[str, str], flow_ok: bool = True) -> str:
        if flow_ok and self.chance(0.2):
            return f"{key}: {{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}"
        ind = " " * self.pick([2, 2, 4])
        return f"{key}:{self.comment()}\n" + "\n".join(
            f"{ind}{k}: {v}{self.comment()}" for k, v in items.items()
        )

    def sequence(self, key: str, items: list[str], scalar_ok: bool = False) -> str:
        if scalar_ok and len(items) == 1 and self.chance(0.2):
            return f"{key}: {items[0]}"
        if self.chance(0.2):
            ind = self.pick(["  ", "", "    "])
            return f"{key}:\n" + "\n".join(f"{ind}- {i}" for i in items)
        return f"{key}: [{', '.join(items)}]{self.comment()}"

    def scalar_lines(self, ind: str, name: str, text: str) -> str:
        """One `name: expression` entry, in a random YAML scalar style."""
        style = self.pick(["plain"] * 8 + ["'", '"', "folded", "|", ">-"])
        words = text.split(" ")
        breaks = [i for i in range(1, len(words)) if re.match(r"[\w(.]", words[i])]
        if style in ("folded", "|", ">-") and not breaks:
            style = "plain"
        if style == "plain":
            return f"{ind}{name}: {text}{self.comment()}"
        if style in ("'", '"'):
            return f"{ind}{name}: {style}{text}{style}{self.comment()}"
        cut = {self.pick(breaks) for _ in range(_between(self.draw, 1, 3))}
        lines, cur = [], [words[0]]
        for i, w in enumerate(words[1:], 1):
            if i in cut:
                lines.append(" ".join(cur))
                cur = [w]
            else:
                cur.append(w)
        lines.append(" ".join(cur))
        more = ind + "  "
        if style == "folded":  # a plain scalar continued on more-indented lines
            return f"{ind}{name}: {lines[0]}\n" + "\n".join(more + ln for ln in lines[1:])
        header = style + self.pick(["", "", "  # block"])
        return f"{ind}{name}: {header}\n" + "\n".join(more + ln for ln in lines)

    def text(self) -> str:
        order = _shuffled(self.draw, list(self.equations))
        sections = {"cell": f"cell: {self.cell}"}
        if self.chance(0.3):
            sections["doc"] = self.pick([
                "doc: A generated cell.",
                "doc: |\n  A generated cell.\n\n  It has: colons, and # hashes.",
                "doc: >\n  Folded\n  text.",
            ])  # fmt: skip
        sections["sizes"] = self.sequence("sizes", list(self.sizes))
        sections["inputs"] = self.mapping("inputs", {self.input: self.shape_text(("input",))})
        sections["state"] = self.mapping(
            "state", {n: self.shape_text(k) for n, k in self.state.items()}
        )
        param_order = _shuffled(self.draw, sorted(self.params))
        if param_order:
            sections["params"] = self.mapping("params", {n: self.params[n] for n in param_order})
        else:
            sections["params"] = self.pick(["params: {}", "params:", "params: ~"])
        if self.constants:
            sections["constants"] = self.mapping(
                "constants", {n: t for n, (t, _) in self.constants.items()}
            )
        ind = self.pick(["  ", "  ", "    "])
        sections["equations"] = "equations:\n" + "\n".join(
            self.scalar_lines(ind, n, self.equations[n]) for n in order
        )
        sections["update"] = "update:\n" + "\n".join(
            self.scalar_lines(ind, n, v) for n, v in self.update.items()
        )
        sections["outputs"] = self.sequence("outputs", self.outputs, scalar_ok=True)
        keys = list(sections)
        if self.chance(0.2):
            keys = list(_shuffled(self.draw, keys))
        return "\n".join(sections[k] for k in keys) + "\n"


@st.composite
def cell_specs(draw) -> str:
    """YAML text of a random valid recurrent cell (see the module docstring)."""
    gen = _Gen(draw)
    gen.build()
    return gen.text()


# -- data -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def load_cached(text: str) -> Cell:
    """`lstmc.loads(text, "case.yaml")`, cached: strategies and tests load the same text many
    times (above all while hypothesis shrinks), and the pure-Python YAML loader is the slow
    part. Don't mutate the result."""
    return lstmc.loads(text, "case.yaml")


@functools.lru_cache(maxsize=512)
def _text_signature(text: str) -> Signature:
    return signature_of(lstmc.to_ir(load_cached(text)))


def signature(obj) -> Signature:
    """The calling convention of a spec text, Cell, Graph or Signature."""
    if isinstance(obj, Signature):
        return obj
    if isinstance(obj, str):
        return _text_signature(obj)
    if isinstance(obj, Cell):
        obj = lstmc.to_ir(obj)
    if isinstance(obj, Graph):
        return signature_of(obj)
    raise TypeError(f"expected a spec text, Cell, Graph or Signature, got {type(obj).__name__}")


def random_params(cell_or_signature, sizes: dict[str, int], seed: int = 0) -> dict:
    """Params as `init_params` makes them: U(+-1/sqrt(hidden)), or the declared ones/zeros."""
    return signature(cell_or_signature).init_params(sizes, seed)


def random_state(cell_or_signature, sizes: dict[str, int], B: int, seed: int = 0) -> dict:
    """A standard-normal `[B, n]` array per state variable."""
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal((B, *s.concrete(sizes)))
            for s in signature(cell_or_signature).state}  # fmt: skip


def random_x(cell_or_signature, sizes: dict[str, int], T: int, B: int, seed: int = 0):
    """A standard-normal input sequence `[T, B, input]`."""
    sig = signature(cell_or_signature)
    return np.random.default_rng(seed).standard_normal((T, B, *sig.input.concrete(sizes)))


class CellCase(NamedTuple):
    """A random cell with concrete sizes, sequence length T (0..5), batch B (1..3) and a seed.

    `case.x()`, `case.params()` and `case.state()` draw the arrays from the seed (three
    different streams); `case.cell()` / `case.graph()` load and lower the spec.
    """

    text: str
    sizes: dict
    T: int
    B: int
    seed: int

    def cell(self) -> Cell:
        """The loaded spec (cached per text: don't mutate it)."""
        return load_cached(self.text)

    def graph(self) -> Graph:
        """A fresh unoptimized IR graph (yours to change)."""
        return lstmc.to_ir(self.cell())

    def signature(self) -> Signature:
        return signature(self.text)

    def params(self) -> dict:
        return random_params(self.signature(), self.sizes, self.seed)

    def state(self) -> dict:
        return random_state(self.signature(), self.sizes, self.B, self.seed + 1)

    def x(self):
        return random_x(self.signature(), self.sizes, self.T, self.B, self.seed + 2)


@st.composite
def cell_and_data(draw, max_size: int = 6, max_T: int = 5, max_B: int = 3) -> CellCase:
    """A `CellCase`: a `cell_specs()` text, each size in 1..6, T in 0..5, B in 1..3, a seed."""
    text = draw(cell_specs())
    sig = signature(text)
    sizes = {s: _between(draw, 1, max_size) for s in sig.sizes}
    T = _between(draw, 0, max_T)
    B = _between(draw, 1, max_B)
    seed = _between(draw, 0, 2**32 - 1)
    return CellCase(text, sizes, T, B, seed)


@st.composite
def gated_cell_and_data(draw, max_hidden: int = 40, max_T: int = 5, max_B: int = 4) -> CellCase:
    """A `CellCase` of a random gated cell whose step is products of the state, then one
    element-wise loop (the shape the CPU target can split by units across threads):

        gate_k = act_k(W_k @ x + U_k @ s_a [+ V_k @ s_b] [+ p_k * s_c] [+ b_k]), act in {sigmoid, tanh}
        s_next = one of  g1 * s + g2 * g3,  (1 - g1) * s + g1 * g2,  g1 * tanh(s + g2)
        outputs: a state's next value, or a gate times tanh of one

    with 1-5 gates and 1-3 states of size `hidden` (so hidden up to `max_hidden` crosses the
    16-unit alignment of the split), in random equation order."""
    n_states = _between(draw, 1, 3)
    states = ["h", "c", "m"][:n_states]
    n_gates = _between(draw, 1, 5)
    params: dict[str, str] = {}
    eqs: dict[str, str] = {}
    gates = []
    for k in range(n_gates):
        terms = [f"W{k} @ x", f"U{k} @ {_choose(draw, states)}"]
        params[f"W{k}"] = "[hidden, input]"
        params[f"U{k}"] = "[hidden, hidden]"
        if _between(draw, 0, 2) == 0:
            terms.append(f"V{k} @ {_choose(draw, states)}")
            params[f"V{k}"] = "[hidden, hidden]"
        if _between(draw, 0, 2) == 0:
            terms.append(f"p{k} * {_choose(draw, states)}")
            params[f"p{k}"] = "[hidden]"
        if _between(draw, 0, 1):
            terms.append(f"b{k}")
            params[f"b{k}"] = "[hidden]"
        terms = _shuffled(draw, terms)
        eqs[f"g{k}"] = f"{_choose(draw, ['sigmoid', 'tanh'])}({' + '.join(terms)})"
        gates.append(f"g{k}")
    update = {}
    for s in states:
        a, b, c = (_choose(draw, gates) for _ in range(3))
        form = _between(draw, 0, 2)
        eqs[f"{s}_next"] = [
            f"{a} * {s} + {b} * {c}",
            f"(1 - {a}) * {s} + {a} * {b}",
            f"{a} * tanh({s} + {b})",
        ][form]
        update[s] = f"{s}_next"
    outputs = [f"{states[0]}_next"]
    if _between(draw, 0, 1):
        eqs["y"] = f"{_choose(draw, gates)} * tanh({_choose(draw, states)}_next)"
        outputs.append("y")
    order = _shuffled(draw, list(eqs))
    lines = ["cell: gated", "sizes: [input, hidden]", "inputs:", "  x: [input]", "state:"]
    lines += [f"  {s}: [hidden]" for s in states]
    lines += ["params:"] + [f"  {n}: {shape}" for n, shape in params.items()]
    lines += ["equations:"] + [f"  {n}: {eqs[n]}" for n in order]
    lines += ["update:"] + [f"  {s}: {v}" for s, v in update.items()]
    lines += [f"outputs: [{', '.join(outputs)}]"]
    text = "\n".join(lines) + "\n"
    sizes = {"input": _between(draw, 1, 6), "hidden": _between(draw, 1, max_hidden)}
    return CellCase(
        text,
        sizes,
        _between(draw, 0, max_T),
        _between(draw, 1, max_B),
        _between(draw, 0, 2**32 - 1),
    )


# -- near-valid specs ---------------------------------------------------------------------------

_BAD_NAMES = [
    "2x", "a-b", "a b", "__x", "__class__", "class", "lambda", "None", "True", "é", "x.y", "''",
    "match", "_", "print(1)", "[a]", "{a: 1}", "a:b", "-x", "'__import__'", "x\\ty", "ｘ", "",
]  # fmt: skip
_BAD_FUNCTIONS = [
    "sigmod", "foo", "eval", "exec", "__import__", "print", "open", "np.exp", "math.tanh",
    "getattr", "Tanh", "lambda: 0 or ", "os.system", "softmax", "sqrt", "pow", "concat",
]  # fmt: skip
_BAD_NUMBERS = [
    "0x10", "1_000", "1.2.3", "inf", "nan", "1e", "1e999", "٣", "²", "0b1", "1j", "-0", "+1",
    "1e-5", "3E+2", ".5", "5.", "0o7", "1__0", "1e+", ".", "..5", "NaN", "-inf", "1,5",
]  # fmt: skip
_BAD_SHAPES = [
    "[]", "[hidden, hidden, hidden]", "[0]", "[-1]", "[2.5]", "[hidden * 2]", "[2*hidden]",
    "[input]", "[hidden, input]", "[unknown]", "[hidden + ]", "[[hidden]]", "hidden",
    "{a: 1}", "[hidden, 0*input]", "[3]", "[hiden]", "[hidden + input]", "[٣]", "~", "''",
    "{shape: [hidden], init: normal}", "{shape: [hidden]}", "{init: ones}", "{shape: [h], x: 1}",
]  # fmt: skip
_GARBAGE = [
    "\t", "\x00", "\x7f", "\ufeff", "\u2028", "\u00a0", "é", "²", "\r", "\r\n", "{", "}", "[",
    "]", ":", ": ", "#", " #", "&", "*", "!", "%", "@", "`", "|", ">", "'", '"', "\\", ",", "-",
    "- ", "?", "~", "\n", "  ", "**", "==", "[0]", ".__class__", "'s'", "lambda: 0", "()", "(",
    ")", "+", " @ ", "\U0001f600", "\ud800", "\x85", "\x1b", ";", "$", "^",
]  # fmt: skip
_OPERATORS = ["**", "==", "[0]", ".__class__", "'s'", "lambda: 0", "()", "(", ")", "+", " @ ", ","]
_YAML_TRICKS = [
    '!!python/object/apply:os.system ["echo hi"] ', "!!str ", "!!python/name:os.system ",
    "&anchor ", "*anchor", "%YAML 1.1\n---\n", "---\n", "\n---\nfoo: 1\n", "\n...\n", "<<: *a\n",
    "? [a]\n: b\n", "!<tag:yaml.org,2002:python/object/apply:os.system> ", "! ", "!local ",
    "%TAG !x! tag:yaml.org,2002:python/\n---\n", "&a [*a]", "{", "[[[[[[[[", "? ",
]  # fmt: skip
_SECTIONS = [
    "cell", "doc", "sizes", "inputs", "state", "params", "constants", "equations", "update",
    "outputs",
]  # fmt: skip
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?<![\w.])(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FUNCTION = re.compile(r"\b([a-z_]+)\(")


def _replace_match(draw, text: str, pattern: re.Pattern, replacements) -> str | None:
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    m = _choose(draw, matches)
    new = _choose(draw, replacements) if not callable(replacements) else replacements(m)
    return text[: m.start()] + new + text[m.end() :]


def _misspell(draw, word: str) -> str:
    i = _between(draw, 0, len(word))
    kind = _choose(draw, ["drop", "swap", "insert", "case", "double"])
    if kind == "drop" and len(word) > 1:
        return word[: max(i - 1, 0)] + word[max(i, 1) :]
    if kind == "swap" and len(word) > 1:
        j = min(i, len(word) - 2)
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if kind == "case":
        return word.swapcase()
    if kind == "double":
        return word + word[-1]
    return word[:i] + _choose(draw, "aezx_1") + word[i:]


def _mutate(draw, text: str) -> str:
    lines = text.split("\n")
    n = len(lines)
    kind = _choose(draw, [
        "delete_line", "duplicate_line", "misspell", "indent", "shape", "function", "number",
        "garbage", "delete_section", "rename", "collection", "swap_matvec", "cycle", "update",
        "yaml", "truncate", "empty", "unknown_section", "swap_lines", "dup_across", "operator",
    ])  # fmt: skip
    line = _between(draw, 0, n - 1)
    out = None
    if kind == "delete_line":
        out = "\n".join(lines[:line] + lines[line + 1 :])
    elif kind == "duplicate_line":
        out = "\n".join(lines[: line + 1] + lines[line:])
    elif kind == "swap_lines":
        other = _between(draw, 0, n - 1)
        lines[line], lines[other] = lines[other], lines[line]
        out = "\n".join(lines)
    elif kind == "misspell":
        out = _replace_match(draw, text, _NAME, lambda m: _misspell(draw, m.group(0)))
    elif kind == "indent":
        body = lines[line].lstrip(" ")
        lines[line] = _choose(draw, ["", " ", "   ", "\t", "  \t", "      "]) + body
        out = "\n".join(lines)
    elif kind == "shape":
        out = _replace_match(draw, text, re.compile(r"\[[^\[\]\n]*\]"), _BAD_SHAPES)
    elif kind == "function":
        out = _replace_match(draw, text, _FUNCTION, [f + "(" for f in _BAD_FUNCTIONS])
    elif kind == "number":
        out = _replace_match(draw, text, _NUMBER, _BAD_NUMBERS)
        if out is None:  # no number yet: scale an equation by a bad one
            bad = _choose(draw, _BAD_NUMBERS)
            out = re.sub(r"(\n\s+\w+: )", lambda m: m.group(1) + bad + " * ", text, count=1)
    elif kind in ("garbage", "yaml", "operator"):
        pool = {"garbage": _GARBAGE, "yaml": _YAML_TRICKS, "operator": _OPERATORS}[kind]
        pos = _between(draw, 0, len(text))
        out = text[:pos] + _choose(draw, pool) + text[pos:]
    elif kind == "delete_section":
        section = _choose(draw, _SECTIONS)
        out = re.sub(rf"(?ms)^{section}:.*?(?=^\S|\Z)", "", text, count=1)
    elif kind == "rename":
        out = _replace_match(draw, text, re.compile(r"(?m)(?<=^  )\w+(?=:)|(?<=^cell: )\w+"),
                             _BAD_NAMES)  # fmt: skip
    elif kind == "collection":
        section = _choose(draw, _SECTIONS)
        value = _choose(draw, ["[h]", "{input: 1}", "{a: b}", "3", "[a, b]", "", "~", "x"])
        out = re.sub(rf"(?ms)^{section}:.*?(?=^\S|\Z)", f"{section}: {value}\n", text, count=1)
    elif kind == "swap_matvec":
        out = _replace_match(draw, text, re.compile(r"(\w+) ?@ ?(\w+)"),
                             lambda m: f"{m.group(2)} @ {m.group(1)}")  # fmt: skip
    elif kind == "cycle":
        names = re.findall(r"(?m)^  (\w+): ", text)
        a, b = _choose(draw, names or ["a"]), _choose(draw, names or ["b"])
        out = text.replace("\nupdate:", f"\n  zz_{a}: {b} + zz_{a}\n  {a}_: {b}\nupdate:", 1)
    elif kind == "update":
        extra = _choose(draw, ["nothere: x", "x: x", "h: 1", "h: W @ x", "h:", "c: h"])
        out = text.replace("\nupdate:\n", f"\nupdate:\n  {extra}\n", 1)
    elif kind == "truncate":
        out = text[: _between(draw, 0, len(text))]
    elif kind == "empty":
        out = _replace_match(draw, text, re.compile(r"(?m)(?<=: ).+$"), ["", "~", "''", "null"])
    elif kind == "unknown_section":
        extra = _choose(draw, ["equation:\n  a: x\n", "extra: 1\n", "Cell: x\n", "_: 1\n"])
        out = text + extra
    elif kind == "dup_across":
        names = re.findall(r"(?m)^  (\w+): ", text)
        if names:
            out = text.replace("\nparams:\n", f"\nparams:\n  {_choose(draw, names)}: "
                               "[hidden]\n", 1)  # fmt: skip
    return text if out is None else out


@functools.cache
def _shipped_texts() -> tuple[str, ...]:
    return tuple(shipped_path(name).read_text() for name in shipped_names())


@st.composite
def near_valid_specs(draw) -> str:
    """A valid spec (generated or shipped) with one to three random mutations: deleted,
    duplicated or swapped lines, misspelled names, broken indentation, wrong shapes, unknown
    functions, bad numbers, garbage characters, YAML tags and tricks, missing sections,
    non-identifier names, lists where mappings go, cycles, bad updates, truncation. The result
    may still be valid."""
    if _between(draw, 0, 3) == 0:
        text = _choose(draw, _shipped_texts())
    else:
        text = draw(cell_specs())
    for _ in range(_between(draw, 1, 3)):
        text = _mutate(draw, text)
    return text
