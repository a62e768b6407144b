"""hoist: mark what can be computed outside the time loop.

Nodes that depend on no state are loop-invariant across steps except through the input:
- `hoisted="once"`: depends on params and constants only (e.g. `b_ih + b_hh`), computed once;
- `hoisted="seq"`: depends on the input but no state, computed for all timesteps at once before
  the loop, so the input projection is one `[T*B, I] x [I, 4H]` product.

An element-wise node on hoisted products (not on the input itself) is hoisted only when a
hoisted node needs it, as `tanh(P @ x)` in `W @ tanh(P @ x)`. Otherwise it stays in the
step's fused loop: a bias add there costs one load and one add per element, while hoisting it
would write and re-read a [T, B, n] buffer of its own (measured: at H=512, B=64 the four
hoisted bias adds of an LSTM made the prologue 1.5x slower than its input GEMM alone).
Sinks and sources are not marked. The interpreter ignores the marks; code generators obey them.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.passes.manager import PassResult, register


@register("hoist")
def hoist(graph: Graph) -> PassResult:
    depends: dict[str, set[str]] = {}
    marks: dict[str, str] = {}
    nodes = graph.nodes()
    for node in nodes:
        if node.op in ("input", "state"):
            depends[node.name] = {node.op}
        else:
            depends[node.name] = (
                set().union(*(depends[o.name] for o in node.operands)) if node.operands else set()
            )
        if node.kind in ("source", "sink") or "state" in depends[node.name]:
            continue
        marks[node.name] = "seq" if "input" in depends[node.name] else "once"

    # Element-wise work on hoisted products (bias adds on a slice, and chains of them) may stay
    # in the step; work on the input itself (`tanh(x) * 2`) stays hoisted, as fusing it into
    # the step would leave its first link a loop of its own (its only operand is a source).
    # A candidate stays in the step unless a hoisted node needs it; users come after their
    # operands, so walking backwards decides a node's users first.
    movable: set[str] = set()
    for node in nodes:
        if marks.get(node.name) == "seq" and node.kind == "elementwise":
            if all(
                o.op != "input" and (o.kind != "elementwise" or o.name in movable)
                for o in node.operands
            ):
                movable.add(node.name)
    for node in reversed(nodes):
        if node.name in movable and not any(marks.get(u.name) == "seq" for u in graph.users(node)):
            del marks[node.name]
    changed = False
    for node in nodes:
        mark = marks.get(node.name)
        if node.attrs.get("hoisted") != mark:
            if mark is None:
                del node.attrs["hoisted"]
            else:
                node.attrs["hoisted"] = mark
            changed = True
    return PassResult(graph, changed)
