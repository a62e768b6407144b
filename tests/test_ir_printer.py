"""The IR text form: golden text for every shipped cell, and print/parse round trips.

`tests/golden/ir/<cell>.ir` holds the unoptimized IR of each shipped cell. After a deliberate
change of lowering or printing, regenerate them with

    LSTMC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_ir_printer.py

and review the diff.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

import lstmc
from lstmc.cells import names as shipped_names
from lstmc.errors import VerifyError
from lstmc.ir.parser import parse_graph
from lstmc.ir.printer import format_value, print_graph
from lstmc.ir.shapes import Size
from lstmc.ir.verify import verify

GOLDEN = Path(__file__).parent / "golden" / "ir"
UPDATE = os.environ.get("LSTMC_UPDATE_GOLDEN") == "1"
CELLS = shipped_names()


def shipped_graph(name: str):
    return lstmc.to_ir(lstmc.builtin(name))


@pytest.mark.parametrize("name", CELLS)
def test_shipped_cell_ir_matches_golden(name):
    text = print_graph(shipped_graph(name))
    path = GOLDEN / f"{name}.ir"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert text == path.read_text(encoding="utf-8")


def test_every_golden_ir_is_a_shipped_cell():
    assert sorted(p.stem for p in GOLDEN.glob("*.ir")) == CELLS


@pytest.mark.parametrize("name", CELLS)
def test_shipped_cell_round_trips(name):
    graph = shipped_graph(name)
    text = print_graph(graph)
    parsed = verify(parse_graph(text))
    assert print_graph(parsed) == text
    assert [n.name for n in parsed.nodes()] == [n.name for n in graph.nodes()]


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("level", [1, 2, 3])
def test_optimized_graphs_round_trip(name, level):
    from lstmc.passes import pipeline, run_passes

    graph, _ = run_passes(shipped_graph(name), pipeline(level))
    text = print_graph(graph)
    assert print_graph(verify(parse_graph(text))) == text


def test_golden_goldens_mention_every_op_the_lowering_emits():
    ops = {line.split(" = ")[1].split()[0] for p in GOLDEN.glob("*.ir")
           for line in p.read_text().splitlines() if line.startswith("%")}  # fmt: skip
    assert {"input", "state", "param", "const", "matvec", "concat", "layer_norm", "output",
            "update", "sigmoid", "tanh", "relu", "add", "sub", "mul"} <= ops  # fmt: skip


ODD_VALUES = [
    0, -3, 10**20, 0.5, -0.0, 1e-300, 1e300, -2.5e-7, math.inf, -math.inf, 3.0, True, False,
    "", "text", 'quote " and \\ backslash', "line\nbreak\ttab", "ünïcödé ✓", "{not=attrs}",
    Size.of("hidden"), Size(), Size((("hidden", 2), ("input", 1)), 3), [], [1, 2.5, "s"],
    [[1], [Size.of("input")]], {"a": 1}, {"weird key": [True]}, {"true": {"nested": {}}},
    np.int64(7), np.float32(0.25), np.float64(-1.5), np.bool_(True), (1, 2),
]  # fmt: skip


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_attr_values_round_trip(value):
    graph = shipped_graph("rnn_tanh")
    graph.node("h_next").attrs["x"] = value
    graph.node("h_next").attrs["hoisted"] = "seq"
    graph.node("h_next").attrs["group"] = 3
    graph.attrs["extra"] = value
    text = print_graph(graph)
    again = parse_graph(text)
    assert print_graph(again) == text
    got = again.node("h_next").attrs["x"]
    assert format_value(got) == format_value(value)


def test_nan_round_trips():
    graph = shipped_graph("rnn_tanh")
    graph.node("h_next").attrs["x"] = math.nan
    again = parse_graph(print_graph(graph))
    assert math.isnan(again.node("h_next").attrs["x"])


def test_marked_node_is_flagged_and_still_parses():
    graph = shipped_graph("gru")
    text = print_graph(graph, mark=graph.node("z"))
    assert "%z = sigmoid" in text and text.count("<-- here") == 1
    assert print_graph(parse_graph(text)) == print_graph(graph)


def test_printing_is_deterministic_for_a_copy():
    graph = shipped_graph("lstm")
    assert print_graph(graph.copy()) == print_graph(graph)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cell c\nsizes n\n%x = nonsense : [n]\n", "unknown op"),
        ("cell c\nsizes n\nwhat is this\n", "not an IR line"),
        ("cell c\nsizes n\n%y = neg %x : [n]\n", "%x is used before it is defined"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n]\n%x = neg %x : [n]\n', "defined twice"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n]\n%y = neg %x : [m]\n', "printed shape"),
        ('cell c\nsizes n\n%x = input {name="x"} junk : [n]\n', "unexpected"),
        ('cell c\nsizes n\n%x = input {name="x" : [n]\n', "line 3"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n + ]\n', "line 3"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n]\n%y = add %x : [n]\n', "line 4"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n]\n%y = matvec %x, %x : [n]\n', "line 4"),
        ("cell c\nsizes n\nattrs {a=}\n", "line 3"),
        ('cell c\nsizes n\n%x = input {name="x"} : [n]\n%y = slice %x : [n]\n', "line 4"),
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(VerifyError, match=message):
        parse_graph(text)
