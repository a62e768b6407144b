"""Symbolic sizes and shapes.

A size is a sum of size symbols with positive integer coefficients plus a constant, such as
`hidden`, `hidden+input` or `4*hidden`. Shapes are tuples of sizes: `()` is a scalar, `(n,)` a
vector, `(m, n)` a matrix. Sizes are compared structurally, so `[hidden + input]` and
`[input + hidden]` are the same shape; they are bound to integers at call time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TERM = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*$|^\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Size:
    """A linear form: sum(coef * symbol) + const, terms sorted by symbol."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(symbol: str) -> Size:
        return Size(((symbol, 1),))

    @staticmethod
    def constant(value: int) -> Size:
        return Size((), value)

    def __add__(self, other: Size) -> Size:
        coefs = dict(self.terms)
        for sym, c in other.terms:
            coefs[sym] = coefs.get(sym, 0) + c
        return Size(tuple(sorted(coefs.items())), self.const + other.const)

    @property
    def symbol(self) -> str | None:
        """The symbol when this size is exactly one symbol (so it can be bound from an array)."""
        if self.const == 0 and len(self.terms) == 1 and self.terms[0][1] == 1:
            return self.terms[0][0]
        return None

    def symbols(self) -> set[str]:
        return {s for s, _ in self.terms}

    def evaluate(self, sizes: Mapping[str, int]) -> int:
        return self.const + sum(c * sizes[s] for s, c in self.terms)

    def __str__(self) -> str:
        parts = [s if c == 1 else f"{c}*{s}" for s, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts)

    @staticmethod
    def parse(text: str) -> Size:
        """Parse the printed form (`hidden+input`, `4*hidden`, `3`). Raises ValueError."""
        total = Size()
        for part in text.split("+"):
            m = _TERM.match(part)
            if not m:
                raise ValueError(f"bad size term {part.strip()!r} in {text!r}")
            if m.group(3) is not None:
                total = total + Size.constant(int(m.group(3)))
            else:
                total = total + Size(((m.group(2), int(m.group(1) or 1)),))
        return total

    def to_data(self) -> tuple:
        """A plain-data form that compiled artifacts can evaluate without the compiler."""
        return (self.terms, self.const)


Shape = tuple  # tuple[Size, ...]


def shape_str(shape: Shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def evaluate_shape(shape: Shape, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(s.evaluate(sizes) for s in shape)
