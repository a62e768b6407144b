"""reassociate: regroup sums so that the loop-invariant part can be hoisted.

`(W @ x + U @ h) + b` becomes `U @ h + (W @ x + b)`: the inner sum no longer depends on the
state, so `hoist` moves it out of the time loop (for an LSTM, the bias adds of all four gates
leave the step). A sum is regrouped only when the node it absorbs has no other user, so no work
is duplicated. Floating-point addition is not associative: the two orders differ by a few
ulps of |W @ x| + |U @ h| + |b|, not of the sum. Where the terms cancel, the relative
difference can be large, and a sum that overflows in one order may not in the other (1e308 +
1e308 - 1e308). A BLAS product's own order of summation, which no spec fixes, does the same.

Ranks: 0 depends on params and constants only, 1 on the input but not the state, 2 on the state.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph, Node
from lstmc.passes.manager import PassResult, register
from lstmc.passes.rewrite import graph_rewrite


def _rank(node: Node, memo: dict) -> int:
    if node.name in memo:
        return memo[node.name]
    if node.op == "state":
        r = 2
    elif node.op == "input":
        r = 1
    else:
        r = max((_rank(o, memo) for o in node.operands), default=0)
    memo[node.name] = r
    return r


@register("reassociate")
def reassociate(graph: Graph) -> PassResult:
    memo: dict[str, int] = {}

    def regroup(g: Graph, n: Node):
        for inner, outer in ((n.operands[0], n.operands[1]), (n.operands[1], n.operands[0])):
            if inner.op != "add" or len(g.users(inner)) != 1:
                continue
            a, b = inner.operands
            hi, lo = (a, b) if _rank(a, memo) >= _rank(b, memo) else (b, a)
            top = _rank(hi, memo)
            if _rank(lo, memo) < top and _rank(outer, memo) < top and hi.shape == n.shape:
                low = g.add("add", [lo, outer], name="add")
                return g.add("add", [hi, low], name=n.name + "_r")
        return None

    return PassResult(graph, graph_rewrite(graph, [("add", regroup)]))
