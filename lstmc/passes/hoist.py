"""hoist: mark what can be computed outside the time loop.

Nodes that depend on no state are loop-invariant across steps except through the input:
- `hoisted="once"`: depends on params and constants only (e.g. `b_ih + b_hh`), computed once;
- `hoisted="seq"`: depends on the input but no state, computed for all timesteps at once before
  the loop, so the input projection is one `[T*B, I] x [I, 4H]` product.
Sinks and sources are not marked. The interpreter ignores the marks; code generators obey them.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.passes.manager import PassResult, register


@register("hoist")
def hoist(graph: Graph) -> PassResult:
    depends: dict[str, set[str]] = {}
    changed = False
    for node in graph.nodes():
        if node.op in ("input", "state"):
            depends[node.name] = {node.op}
        else:
            depends[node.name] = (
                set().union(*(depends[o.name] for o in node.operands)) if node.operands else set()
            )
        if node.kind in ("source", "sink") or "state" in depends[node.name]:
            continue
        mark = "seq" if "input" in depends[node.name] else "once"
        if node.attrs.get("hoisted") != mark:
            node.attrs["hoisted"] = mark
            changed = True
    return PassResult(graph, changed)
