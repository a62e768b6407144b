"""The calling convention (lstmc_runtime.signature.Signature) of a graph."""

from __future__ import annotations

from lstmc_runtime.signature import ArraySpec, Signature

from lstmc.ir.graph import Graph


def _spec(node) -> ArraySpec:
    return ArraySpec(
        node.attrs["name"],
        tuple(s.to_data() for s in node.shape),
        node.attrs.get("init", "uniform"),
    )


def signature_of(graph: Graph) -> Signature:
    """Input, state, params (in declaration order) and outputs of a graph."""
    (inp,) = graph.find("input")
    return Signature(
        cell=graph.attrs.get("cell", "cell"),
        sizes=tuple(graph.attrs.get("sizes", ())),
        input=_spec(inp),
        state=tuple(_spec(n) for n in graph.find("state")),
        params=tuple(_spec(n) for n in graph.find("param")),
        # in the spec's order (the order lowering created them), not the topological order,
        # which passes change: y's keys must not depend on the opt level
        outputs=tuple(
            (n.attrs["name"], n.shape[0].to_data())
            for n in sorted(graph.find("output"), key=lambda n: n.index)
        ),
    )
