"""constant-fold: an element-wise op whose operands are all constants becomes a constant.

Before: any verified graph. After: no element-wise node has only `const` operands (its users
read a new `const` holding the float64 value the interpreter computes).
"""

from __future__ import annotations

import numpy as np

from lstmc.ir.graph import Graph
from lstmc.passes.manager import PassResult, register


@register("constant-fold")
def constant_fold(graph: Graph) -> PassResult:
    changed = False
    for node in graph.nodes():
        if node.kind != "elementwise" or not node.operands:
            continue
        if not all(o.op == "const" for o in node.operands) or not graph.users(node):
            continue
        with np.errstate(all="ignore"):
            value = node.opdef.interp(
                [np.float64(o.attrs["value"]) for o in node.operands], node.attrs, None
            )
        const = graph.add("const", attrs={"value": float(value)}, name="k")
        graph.replace_all_uses(node, const)
        changed = True
    return PassResult(graph, changed)
