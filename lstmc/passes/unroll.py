"""unroll: ask the code generators to unroll the time loop by a factor.

Sets the graph attr `unroll` (default 2). Loops over sizes fixed at compile time
(`fixed_sizes`, from `--size hidden=128`) get literal bounds, which LLVM unrolls and vectorizes
fully; that is the code generator's part. The IR's meaning is unchanged.
"""

from __future__ import annotations

from lstmc.ir.graph import Graph
from lstmc.passes.manager import PassResult, register


@register("unroll")
def unroll(graph: Graph, unroll: int | None = None) -> PassResult:
    factor = int(unroll or graph.attrs.get("unroll") or 2)
    if factor < 1:
        raise ValueError(f"the unroll factor must be at least 1, got {factor}")
    changed = graph.attrs.get("unroll") != factor
    graph.attrs["unroll"] = factor
    return PassResult(graph, changed)
