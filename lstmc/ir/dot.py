"""Graphviz DOT text of an IR graph (`lstmc graph`), to see a cell and what the passes did.

Each node is labeled with its name, op and shape (a constant with its value). Sources are drawn
as inverted houses (the input and state, colored by kind) or boxes (params), sinks as houses
with a heavy border. An edge carries the operand's index when its op takes more than one
operand, since order matters (`sub`, `matvec`, `concat`). Pass marks are visible: a node with a
`hoisted` attr is filled by its phase (computed once, or for the whole sequence before the time
loop), and nodes sharing a `group` attr (one fused loop nest) are drawn inside one cluster.

The text is deterministic: nodes in the graph's topological order, groups sorted, attrs sorted.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph, Node
from lstmc.ir.printer import format_value
from lstmc.ir.shapes import shape_str

_STYLE = {
    "input": 'shape=invhouse, style=filled, fillcolor="#cfe2ff"',
    "state": 'shape=invhouse, style=filled, fillcolor="#d1f0d1"',
    "param": 'shape=box, style=filled, fillcolor="#ececec"',
    "const": 'shape=plaintext, fontcolor="#555555"',
    "output": 'shape=house, style=filled, fillcolor="#cfe2ff", penwidth=2',
    "update": 'shape=house, style=filled, fillcolor="#d1f0d1", penwidth=2',
}
_DEFAULT = 'shape=ellipse, style=filled, fillcolor="#ffffff"'
_HOISTED = {"once": "#fff1a8", "seq": "#ffd8a8"}  # fill by phase; other marks get the last
_HOISTED_OTHER = "#ffe4c4"
_GROUP_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def quote(text: str) -> str:
    """A DOT double-quoted string; newlines become `\\n` line breaks in labels."""
    body = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def _label(node: Node) -> str:
    if node.op == "const":
        value = format_value(node.attrs.get("value"))
        return f"{node.attrs['name']} = {value}" if "name" in node.attrs else value
    op = node.op
    name = node.attrs.get("name")
    if node.kind == "sink" and name is not None:
        op = f"{op} {_plain(name)}"  # `update h`, `output h_next`
    lines = [node.name, op, shape_str(node.shape)]
    if node.op == "param" and node.attrs.get("init", "uniform") != "uniform":
        lines.append(f"init={_plain(node.attrs['init'])}")
    if node.kind not in ("source", "sink"):  # slice bounds, eps, pass marks, ...
        lines += [f"{k}={_plain(v)}" for k, v in sorted(node.attrs.items()) if k != "shape"]
    return "\n".join(lines)


def _plain(value) -> str:
    if isinstance(value, str):
        return value
    text = format_value(value)
    return text[1:-1] if text.startswith("<") else text  # a size: `hidden`, not `<hidden>`


def _style(node: Node) -> str:
    if node.op in _STYLE:
        return _STYLE[node.op]
    hoisted = node.attrs.get("hoisted")
    if hoisted is not None and hoisted is not False:
        fill = _HOISTED.get(hoisted, _HOISTED_OTHER) if isinstance(hoisted, str) else _HOISTED_OTHER
        return f'shape=ellipse, style="filled,dashed", fillcolor="{fill}"'
    return _DEFAULT


def _group_key(value) -> tuple:
    return (type(value).__name__, _plain(value))


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT text (render with `dot -Tsvg`)."""
    nodes = graph.nodes()
    cell = graph.attrs.get("cell", "cell")
    title = [f"cell {cell}"]
    title += [
        f"{k}: {', '.join(map(_plain, v))}" if k == "sizes" else f"{k}={_plain(v)}"
        for k, v in sorted(graph.attrs.items())
        if k != "cell"
    ]
    out = [
        f"digraph {quote(cell)} {{",
        f"  graph [rankdir=TB, labelloc=t, fontname=Helvetica, label={quote(chr(10).join(title))}];",
        '  node [fontname=Helvetica, fontsize=10, color="#333333"];',
        '  edge [fontname=Helvetica, fontsize=8, color="#555555"];',
    ]
    groups: dict[tuple, list[Node]] = {}
    loose: list[Node] = []
    for node in nodes:
        if "group" in node.attrs and node.kind not in ("source", "sink"):
            groups.setdefault(_group_key(node.attrs["group"]), []).append(node)
        else:
            loose.append(node)

    def node_line(node: Node, indent: str) -> str:
        return f"{indent}{quote(node.name)} [label={quote(_label(node))}, {_style(node)}];"

    for node in loose:
        out.append(node_line(node, "  "))
    for i, key in enumerate(sorted(groups)):
        members = groups[key]
        color = _GROUP_COLORS[i % len(_GROUP_COLORS)]
        out.append(f"  subgraph {quote(f'cluster_group_{i}')} {{")
        out.append(
            f'    graph [label={quote("group " + key[1])}, style="rounded,dashed", '
            f'color="{color}", fontcolor="{color}"];'
        )
        out += [node_line(node, "    ") for node in members]
        out.append("  }")
    for node in nodes:
        many = len(node.operands) > 1
        for i, operand in enumerate(node.operands):
            attrs = f" [label={quote(str(i))}]" if many else ""
            out.append(f"  {quote(operand.name)} -> {quote(node.name)}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"
