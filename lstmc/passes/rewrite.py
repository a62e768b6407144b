"""Local rewriting: (pattern, rewrite) rules applied to a fixed point (tinygrad's graph_rewrite).

A rule is `(op, fn)`: for every node whose op is `op`, `fn(graph, node)` returns a replacement
node (already in the graph) or None. Users of a replaced node are redirected; dead nodes are
left for `dce`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lstmc.ir.graph import Graph, Node

RewriteFn = Callable[[Graph, Node], "Node | None"]


def is_const(node: Node, value: float | None = None) -> bool:
    """Whether `node` is a constant, of `value` if given: the same zero too (-0.0 is not
    0.0 here: x + -0.0 is x, x + 0.0 is not when x is -0.0, and 1 / x tells them apart)."""
    if node.op != "const":
        return False
    if value is None:
        return True
    v = node.attrs["value"]
    return v == value and math.copysign(1.0, v) == math.copysign(1.0, value)


def graph_rewrite(graph: Graph, rules: list[tuple[str, RewriteFn]], max_rounds: int = 100) -> bool:
    """Apply `rules` until none fires. Returns whether anything changed."""
    by_op: dict[str, list[RewriteFn]] = {}
    for op, fn in rules:
        by_op.setdefault(op, []).append(fn)
    changed_any = False
    for _ in range(max_rounds):
        changed = False
        for node in graph.nodes():
            if node not in graph or not graph.users(node):
                continue
            for fn in by_op.get(node.op, ()):
                new = fn(graph, node)
                if new is not None and new is not node:
                    graph.replace_all_uses(node, new)
                    changed = True
                    break
        changed_any |= changed
        if not changed:
            break
    return changed_any
