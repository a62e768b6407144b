"""split-concat-matvec: `W @ concat(a, b, ...)` becomes `W[:, A] @ a + W[:, B] @ b + ...`.

The textbook form `W_f @ concat(h, x)` mixes the state and the input in one product, which
would stop the input part from being hoisted out of the time loop and from being fused with the
other products of x. After this pass no matvec multiplies a concat; the column blocks of W are
`param_cols` views, packed once at weight-packing time.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.ir.shapes import Size
from lstmc.passes.manager import PassResult, register


@register("split-concat-matvec")
def split_concat_matvec(graph: Graph) -> PassResult:
    changed = False
    for node in graph.find("matvec"):
        w, v = node.operands
        if v.op != "concat" or w.op != "param" or not graph.users(node):
            continue
        total = None
        start = Size()
        for part in v.operands:
            cols = graph.add(
                "param_cols", [w], {"start": start, "size": part.shape[0]}, name=f"{w.name}_cols"
            )
            prod = graph.add("matvec", [cols, part], name="matvec")
            total = prod if total is None else graph.add("add", [total, prod], name="add")
            start = start + part.shape[0]
        graph.replace_all_uses(node, total)
        changed = True
    return PassResult(graph, changed)
