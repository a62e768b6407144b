"""fuse-elementwise: group element-wise nodes into loop nests, one per group.

Each element-wise node gets `group=k`. Nodes share a group when they run in the same phase
(step, or hoisted seq/once), over the same vector size, at the same *stage*, where the stage
counts the materializing ops (products, concat, layer_norm, slices of element-wise values) on
the longest path from the sources; a node computed from sources alone (directly or through
other such nodes) and used only by element-wise nodes moves down to its users' stage. Equal
stage means no path between the two nodes goes through such an op, so one loop can compute
them all in topological order: for an LSTM, every element-wise op of a step is one loop
nest. Scalar nodes are left alone (they are constants).
"""

from __future__ import annotations

from lstmc.ir.graph import Graph, Node
from lstmc.passes.manager import PassResult, register

VIEW_OPS = ("slice", "param_cols")


def is_barrier(node: Node) -> bool:
    """Does this node's value have to be materialized before element-wise users read it?"""
    if node.kind in ("source", "sink", "elementwise"):
        return False
    if node.op in VIEW_OPS:  # a view of a materialized value is free; of a fused one, it isn't
        return node.operands[0].kind == "elementwise"
    return True


@register("fuse-elementwise")
def fuse_elementwise(graph: Graph) -> PassResult:
    stage: dict[str, int] = {}
    nodes = graph.nodes()
    for node in nodes:  # as soon as possible
        stage[node.name] = max(
            (stage[o.name] + (1 if is_barrier(o) else 0) for o in node.operands), default=0
        )
    # Then as late as its users allow, for an element-wise node computed from sources alone
    # (directly or through other such nodes) that only element-wise nodes use (`p_i * c` of a
    # peephole, or `p * h + b`, ready before the step's product): it joins its users' loop
    # instead of being stored and read back. Users come later in `nodes`, so walking back
    # moves a chain down from its last node. Nodes that read products stay where they are,
    # next to the product (the CUDA target fuses a product into the loop of its users when
    # they share one group).
    of_sources: set[str] = set()
    for node in nodes:
        if node.kind == "elementwise" and all(
            o.kind == "source" or o.name in of_sources for o in node.operands
        ):
            of_sources.add(node.name)
    for node in reversed(nodes):
        users = graph.users(node)
        if (
            node.name in of_sources
            and node.shape
            and users
            and all(
                u.kind == "elementwise"
                and u.shape == node.shape
                and u.attrs.get("hoisted") == node.attrs.get("hoisted")
                for u in users
            )
        ):
            stage[node.name] = max(stage[node.name], min(stage[u.name] for u in users))
    keys: dict[tuple, int] = {}
    changed = False
    for node in graph.nodes():
        if node.kind != "elementwise" or not node.shape:
            continue
        key = (node.attrs.get("hoisted", "step"), stage[node.name], node.shape)
        group = keys.setdefault(key, len(keys))
        if node.attrs.get("group") != group:
            node.attrs["group"] = group
            changed = True
    return PassResult(graph, changed)
