"""The parsed form of a spec: what the YAML says, with a location on every piece.

A `Cell` is produced by `lstmc.spec.loader` and consumed by `lstmc.ir.lower`, which resolves
names, checks shapes and builds the IR. Nothing here is evaluated.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field

from lstmc.errors import Location
from lstmc.ir.shapes import Shape
from lstmc.spec.expr import Expr

PARAM_INITS = ("uniform", "zeros", "ones")


@dataclass(frozen=True)
class Decl:
    """A declared input, state variable or param: a name with a symbolic shape."""

    name: str
    shape: Shape
    loc: Location
    init: str = "uniform"  # params only: how init_params fills it


@dataclass(frozen=True)
class Constant:
    name: str
    value: float
    loc: Location


@dataclass(frozen=True)
class Equation:
    name: str
    expr: Expr
    loc: Location
    text: str = ""  # as written in the spec


@dataclass
class Cell:
    """A recurrent cell as written in its spec."""

    name: str
    doc: str
    file: str
    source: str  # the spec's text, for hashing (never evaluated)
    loc: Location
    sizes: dict[str, Location] = field(default_factory=dict)
    inputs: dict[str, Decl] = field(default_factory=dict)
    state: dict[str, Decl] = field(default_factory=dict)
    params: dict[str, Decl] = field(default_factory=dict)
    constants: dict[str, Constant] = field(default_factory=dict)
    equations: dict[str, Equation] = field(default_factory=dict)
    update: dict[str, Equation] = field(default_factory=dict)  # state name -> new value
    outputs: list[tuple[str, Location]] = field(default_factory=list)

    @property
    def input_name(self) -> str:
        return next(iter(self.inputs))

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self.outputs]

    def with_constants(self, overrides: dict[str, float] | None) -> Cell:
        """A copy whose constants take the given values (compile-time attributes)."""
        if not overrides:
            return self
        from lstmc.errors import SpecError, did_you_mean

        consts = dict(self.constants)
        for key, value in overrides.items():
            # The mistake is in the overrides (compile's `constants`, `--const`), not in the
            # spec: no spec location, the cell named in the message instead.
            if key not in consts:
                raise SpecError(
                    f"unknown constant `{key}` given for cell `{self.name}`"
                    f"{did_you_mean(key, consts)}; its spec declares {sorted(consts) or 'none'}",
                    None,
                )
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: 10**400
                number = None
            if number is None or math.isnan(number) or isinstance(value, bool):
                raise SpecError(
                    f"constant `{key}` must be a float32/float64 number (inf allowed, not NaN); "
                    f"got {reprlib.repr(value)}",
                    None,
                )
            consts[key] = Constant(key, number, consts[key].loc)
        copy = Cell(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        copy.constants = consts
        return copy

    def summary(self) -> str:
        """The first line of the doc."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""
