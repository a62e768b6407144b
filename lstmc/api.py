"""The public Python API: load a spec, interpret it, compile it (DESIGN.md section 3)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lstmc import cells as _cells
from lstmc.errors import LstmcError, SpecError, did_you_mean
from lstmc.interp.interpreter import run_graph
from lstmc.ir.graph import Graph
from lstmc.ir.lower import lower
from lstmc.spec.cell import Cell
from lstmc.spec.loader import load_file, load_text


def load(path: str | Path) -> Cell:
    """Load a spec file. Raises SpecError with file:line:col."""
    return load_file(path)


def loads(text: str, filename: str = "<string>") -> Cell:
    """Load a spec from text (the file name is used in error locations)."""
    return load_text(text, filename)


def builtin(name: str) -> Cell:
    """Load one of the shipped cells (see `lstmc.cells.names()`)."""
    if name not in _cells.names():
        raise SpecError(
            f"no shipped cell `{name}`{did_you_mean(name, _cells.names())}; shipped: "
            + ", ".join(_cells.names()),
            None,
        )
    return load_file(_cells.path(name))


def as_cell(spec) -> Cell:
    """A Cell as given, or loaded from a spec file's path, or the shipped cell of that name
    when no such file exists (as the command line takes SPEC). Anything else is an LstmcError
    that says what to pass."""
    if isinstance(spec, Cell):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        name = str(spec)
        if not name:
            raise SpecError("expected a spec file's path or a shipped cell's name; got ''", None)
        path = Path(spec)
        if path.is_file():
            return load(path)
        if name in _cells.names():  # even beside a folder of that name
            return builtin(name)
        if path.exists():
            return load(path)  # not a file: load says what it is
        hint = ""
        if os.sep not in name and "." not in name:
            hint = (
                f", and no shipped cell `{name}`{did_you_mean(name, _cells.names())}; "
                "`lstmc cells` (lstmc.cells.names()) lists them"
            )
        raise SpecError(f"no such spec file: {name}{hint}", None)
    raise LstmcError(
        "expected a cell: lstmc.load('spec.yaml'), lstmc.builtin('lstm'), a spec file's path "
        f"or a shipped cell's name; got {type(spec).__name__}"
    )


def to_ir(cell: Cell | str | Path, constants: Mapping[str, float] | None = None) -> Graph:
    """The unoptimized IR of one timestep of `cell` (a Cell, a spec file or a shipped cell's
    name: `as_cell`), constants overridden if given."""
    return lower(as_cell(cell).with_constants(dict(constants or {})))


def interpret(
    cell: Cell | Graph | str | Path,
    x,
    params: Mapping,
    state: Mapping | None = None,
    constants: Mapping[str, float] | None = None,
):
    """Run the reference interpreter (float64) over `x: [T, B, input]`.

    Returns `(y, state)`: y is `[T, B, n]` when the cell has one output, else a dict keyed by
    output name; state is `{name: [B, n]}` after the last step.
    """
    graph = cell if isinstance(cell, Graph) else to_ir(cell, constants)
    outputs, final = run_graph(graph, x, params, state)
    y = next(iter(outputs.values())) if len(outputs) == 1 else outputs
    return y, final
