"""Property tests of the spec front end on random cells (tests/strategies.py).

- Every near-valid spec (a valid one, mutated) either loads, lowers and verifies, or raises
  SpecError located `file:line:col` — never any other exception — and a located unknown name
  or function points exactly at that name in the text.
- Every generated valid spec loads, lowers, verifies, prints and parses back to the same text,
  and runs in the reference interpreter to finite outputs of the declared shapes.
"""

from __future__ import annotations

import re

import numpy as np
from hypothesis import example, given, settings
from strategies import cell_and_data, cell_specs, near_valid_specs, signature

import lstmc
from lstmc.errors import SpecError
from lstmc.ir.parser import parse_graph
from lstmc.ir.printer import print_graph
from lstmc.ir.verify import verify

_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")  # line breaks as PyYAML counts them


def index_of(text: str, line: int, col: int) -> int:
    """The index in `text` of a 1-based line:col (columns count characters)."""
    start = 0
    for _ in range(line - 1):
        m = _BREAK.search(text, start)
        assert m is not None, f"line {line} is past the end"
        start = m.end()
    return start + col - 1


@settings(max_examples=150)
@given(near_valid_specs())
@example("cell: rnn\nsizes: [input, hidden]\ninputs: {x: [input]}\nstate: {h: [hidden]}\n"
         "params: {W: [hidden, input]}\nequations:\n  y: 'tanh(W @ x) +\n    zz'\n"
         "update: {h: y}\noutputs: [y]\n")  # fmt: skip
def test_near_valid_specs_load_or_fail_at_a_location(text):
    try:
        graph = lstmc.to_ir(lstmc.loads(text, "spec.yaml"))
    except SpecError as err:
        loc = err.location
        assert loc is not None, str(err)
        assert str(err).startswith(f"spec.yaml:{loc.line}:{loc.col}: error: ")
        assert loc.line >= 1 and loc.col >= 1
        assert loc.line <= len(text.splitlines()) + 1
        m = re.match(r"unknown (?:name|function) `(\w+)`", err.message)
        if m:  # the location is exactly where the name is written
            i = index_of(text, loc.line, loc.col)
            assert text[i : i + len(m[1])] == m[1], (str(err), text)
        return
    verify(graph)
    sig = signature(graph)
    sizes = {s: 2 for s in sig.sizes}
    state = {s.name: np.ones((1, *s.concrete(sizes))) for s in sig.state}
    x = np.ones((2, 1, *sig.input.concrete(sizes)))
    lstmc.interpret(graph, x, sig.init_params(sizes), state)


@given(cell_and_data())
def test_generated_cells_load_lower_verify_and_run(case):
    cell = case.cell()
    graph = lstmc.to_ir(cell)
    verify(graph)
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text
    y, state = lstmc.interpret(graph, case.x(), case.params(), case.state())
    outputs = y if isinstance(y, dict) else {cell.output_names[0]: y}
    assert list(outputs) == cell.output_names
    sig = case.signature()
    for name, size in sig.outputs:
        n = next(g.shape[0] for g in graph.find("output") if g.attrs["name"] == name)
        assert outputs[name].shape == (case.T, case.B, n.evaluate(case.sizes))
        assert np.isfinite(outputs[name]).all()
    for spec in sig.state:
        assert state[spec.name].shape == (case.B, *spec.concrete(case.sizes))
        assert np.isfinite(state[spec.name]).all()
    # Every size binds from x and the params alone, so the state may be left out.
    assert sig.bind(case.x(), case.params()) == case.sizes


@settings(max_examples=60)
@given(cell_specs())
def test_generated_cells_round_trip_and_reload(text):
    cell = lstmc.loads(text, "gen.yaml")
    graph = verify(lstmc.to_ir(cell))
    printed = print_graph(graph)
    again = parse_graph(printed)
    verify(again)
    assert print_graph(again) == printed
    # Loading is deterministic: the same text gives the same IR.
    assert print_graph(lstmc.to_ir(lstmc.loads(text, "gen.yaml"))) == printed
    # Every param is used, every size can be bound, outputs are equations.
    assert set(cell.output_names) <= set(cell.equations)
    assert {p.attrs["name"] for p in graph.find("param")} == set(cell.params)


def check_locations(cell) -> int:
    """Every node of every expression is located exactly at its text; returns how many."""
    from lstmc.spec.expr import NUMBER_RE, BinOp, Call, Name, Neg, Num

    text = cell.source
    count = 0
    stack = [eq.expr for eq in [*cell.equations.values(), *cell.update.values()]]
    while stack:
        e = stack.pop()
        i = index_of(text, e.loc.line, e.loc.col)
        where = f"{e.loc}: {text[i : i + 20]!r} for {e}"
        if isinstance(e, Name):
            assert text[i : i + len(e.id)] == e.id, where
        elif isinstance(e, Call):
            assert text[i : i + len(e.func)] == e.func, where
            stack.extend(e.args)
        elif isinstance(e, Num):
            m = NUMBER_RE.match(text, i)
            assert m and float(m[0]) == e.value, where
        elif isinstance(e, Neg):
            assert text[i] == "-", where
            stack.append(e.operand)
        elif isinstance(e, BinOp):
            assert text[i] == e.op, where
            stack += [e.lhs, e.rhs]
        count += 1
    return count


@given(cell_specs())
def test_every_expression_node_is_located_at_its_text(text):
    assert check_locations(lstmc.loads(text, "gen.yaml")) > 0


def test_shipped_cells_expression_locations():
    from lstmc.cells import names

    for name in names():
        assert check_locations(lstmc.builtin(name)) > 0
