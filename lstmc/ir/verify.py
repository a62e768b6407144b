"""The IR verifier: the invariants every graph holds before and after every pass."""

from __future__ import annotations

from lstmc.errors import VerifyError
from lstmc.ir import ops
from lstmc.ir.graph import Graph, Node
from lstmc.ir.printer import print_graph

_WEIGHT_OPS = ("param", "param_cols")


def _fail(graph: Graph, node: Node | None, message: str):
    where = f"%{node.name}: " if node is not None else ""
    raise VerifyError(f"{where}{message}\n{print_graph(graph, mark=node)}")


def verify(graph: Graph) -> Graph:
    """Check the graph's invariants; raise VerifyError with the IR printed and the failing node
    marked. Returns the graph, so it can be chained."""
    if graph.has_cycle():
        raise VerifyError("the graph has a cycle")  # no IR printed: printing walks the order
    seen: dict[tuple[str, str], Node] = {}
    for node in graph.nodes():
        if node.op not in ops.REGISTRY:
            _fail(graph, node, f"unknown op `{node.op}`")
        opdef = node.opdef
        if opdef.arity is not None and len(node.operands) != opdef.arity:
            _fail(graph, node, f"{node.op} takes {opdef.arity} operands, has {len(node.operands)}")
        for o in node.operands:
            if o not in graph:
                _fail(graph, node, f"operand %{o.name} is not in the graph")
            if o.kind == "sink":
                _fail(graph, node, f"uses the sink %{o.name}")
        try:
            shape = opdef.shape([o.shape for o in node.operands], node.attrs)
        except ops.ShapeError as exc:
            _fail(graph, node, str(exc))
        if shape != node.shape:
            _fail(
                graph,
                node,
                f"shape {list(map(str, node.shape))} but its op gives {list(map(str, shape))}",
            )
        if opdef.kind in ("source", "sink") and node.op != "const":
            key = (node.op, node.attrs.get("name"))
            if key[1] is None:
                _fail(graph, node, f"{node.op} needs a name attr")
            if key in seen:
                _fail(graph, node, f"a second {node.op} named {key[1]!r}")
            seen[key] = node
        if node.op == "const" and not isinstance(node.attrs.get("value"), float):
            _fail(graph, node, "const needs a float value attr")
        if node.op in ("matvec",) and node.operands[0].op not in _WEIGHT_OPS:
            _fail(graph, node, "the matrix of a matvec must be a param or param_cols")
        if node.op == "packed_matvec":
            if len(node.operands) < 2:
                _fail(graph, node, "packed_matvec needs a vector and at least one weight")
            if any(w.op not in _WEIGHT_OPS for w in node.operands[1:]):
                _fail(graph, node, "packed_matvec weights must be params or param_cols")
        if node.op == "param_cols" and node.operands[0].op != "param":
            _fail(graph, node, "param_cols must slice a param")
        if opdef.kind == "sink" and graph.users(node):
            _fail(graph, node, "a sink has users")
    states = {k[1] for k in seen if k[0] == "state"}
    updates = {k[1]: n for k, n in seen.items() if k[0] == "update"}
    for name in states:
        if name not in updates:
            _fail(graph, None, f"state {name!r} has no update")
        if updates[name].shape != seen[("state", name)].shape:
            _fail(graph, updates[name], f"update of {name!r} changes its shape")
    for name, node in updates.items():
        if name not in states:
            _fail(graph, node, f"update of unknown state {name!r}")
    if not any(k[0] == "output" for k in seen):
        _fail(graph, None, "the graph has no output")
    if sum(k[0] == "input" for k in seen) != 1:
        _fail(graph, None, "the graph must have exactly one input")
    return graph
