"""dce: dead-code elimination.

Removes every node from which no output or update is reachable, except the input, state and
param sources, which define the kernel's signature and stay even when unused.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.passes.manager import PassResult, register

_KEEP = ("input", "state", "param")


@register("dce")
def dce(graph: Graph) -> PassResult:
    live: set[str] = set()
    for sink in (n for n in graph.nodes() if n.kind == "sink"):
        live.add(sink.name)
        live |= graph.ancestors(sink)
    changed = False
    for node in reversed(graph.nodes()):
        if node.name not in live and node.op not in _KEEP and not graph.users(node):
            graph.remove(node)
            changed = True
    return PassResult(graph, changed)
