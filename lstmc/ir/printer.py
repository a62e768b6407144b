"""The text form of the IR, one node a line, which `parser.py` reads back:

    cell lstm
    sizes input, hidden
    %x = input {name="x"} : [input]
    %i = sigmoid %t_3 : [hidden]
    %out_h_next = output %h_next {name="h_next"} : [hidden]

`print_graph(parse_graph(text)) == text` for every graph (tests check it for every shipped cell
and after every pass). Attr values: "strings", ints, floats (always with `.`/`e`, or inf/nan),
true/false, <sizes>, [lists] and {key=value} mappings (keys that are not identifiers are
"quoted"). NumPy scalars print as the Python numbers they equal.
"""

from __future__ import annotations

import json
import math
import numbers
import re

import numpy as np

from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size, shape_str

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDS = ("true", "false", "inf", "nan")  # bare words the parser reads as values


def format_key(key) -> str:
    """An attr name: bare when it is an identifier the parser can't mistake, else quoted."""
    key = str(key)
    return key if _IDENTIFIER.fullmatch(key) and key not in _WORDS else json.dumps(key)


def format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, Size):
        return f"<{value}>"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{format_key(k)}={format_value(v)}" for k, v in sorted(value.items())]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot print attr value {value!r}")


def format_attrs(attrs: dict, skip=("shape",)) -> str:
    items = [
        f"{format_key(k)}={format_value(v)}" for k, v in sorted(attrs.items()) if k not in skip
    ]
    return " {" + ", ".join(items) + "}" if items else ""


def format_node(node: Node) -> str:
    operands = ", ".join(f"%{o.name}" for o in node.operands)
    return (
        f"%{node.name} = {node.op}{' ' + operands if operands else ''}"
        f"{format_attrs(node.attrs)} : {shape_str(node.shape)}"
    )


def print_graph(graph: Graph, mark: Node | None = None) -> str:
    """The graph's text. With `mark`, that node's line is flagged (for VerifyError)."""
    lines = [
        f"cell {graph.attrs.get('cell', 'anonymous')}",
        "sizes " + ", ".join(graph.attrs.get("sizes", ())),
    ]
    extra = {k: v for k, v in graph.attrs.items() if k not in ("cell", "sizes")}
    if extra:
        lines.append("attrs" + format_attrs(extra, skip=()))
    for node in graph.nodes():
        line = format_node(node)
        if mark is not None and node.name == mark.name:
            line += "    <-- here"
        lines.append(line)
    return "\n".join(lines) + "\n"
