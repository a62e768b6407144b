"""fuse-gates: products that share their vector become one stacked product.

Every group of two or more `matvec` nodes with the same right operand (the same node, after
CSE) becomes `packed_matvec(v, W1, W2, ...)` producing `[W1; W2; ...] @ v`, and each original
product becomes a `slice` of it. A 4-gate LSTM then does one `[4H, I]` product of x and one
`[4H, H]` product of h per step. Products of different vectors (GRU-Cho's `U_n @ (r * h)`) are
never merged with those of `h`. The stacked weight is packed once, before any call.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size
from lstmc.passes.manager import PassResult, register


@register("fuse-gates")
def fuse_gates(graph: Graph) -> PassResult:
    groups: dict[str, list[Node]] = {}
    for node in graph.find("matvec"):
        if graph.users(node):
            groups.setdefault(node.operands[1].name, []).append(node)
    changed = False
    for products in groups.values():
        if len(products) < 2:
            continue
        vector = products[0].operands[1]
        packed = graph.add(
            "packed_matvec",
            [vector, *(p.operands[0] for p in products)],
            name=f"packed_{vector.name}",
        )
        start = Size()
        for p in products:
            part = graph.add("slice", [packed], {"start": start, "size": p.shape[0]}, name=p.name)
            graph.replace_all_uses(p, part)
            start = start + p.shape[0]
        changed = True
    return PassResult(graph, changed)
