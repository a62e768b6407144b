"""cse: common-subexpression elimination.

Two nodes with the same op, the same operands (in order) and the same attrs compute the same
value; the later one's users are moved to the first. Sources other than constants are unique by
name already. After: no two non-sink nodes are equal in that sense.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.ir.printer import format_attrs
from lstmc.passes.manager import PassResult, register


@register("cse")
def cse(graph: Graph) -> PassResult:
    seen = {}
    changed = False
    for node in graph.nodes():
        if node.kind == "sink" or node.op in ("input", "state", "param"):
            continue
        attrs = {k: v for k, v in node.attrs.items() if k != "name" or node.op != "const"}
        key = (node.op, tuple(o.name for o in node.operands), format_attrs(attrs))
        first = seen.get(key)
        if first is None:
            seen[key] = node
        elif graph.users(node):
            graph.replace_all_uses(node, first)
            changed = True
    return PassResult(graph, changed)
