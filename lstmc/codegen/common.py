"""Pieces shared by the code generators: identifier namespace, size and element access
expressions, element-wise statement rendering, the module header."""

from __future__ import annotations

import hashlib
import keyword

from lstmc.codegen.schedule import Schedule
from lstmc.ir import ops
from lstmc.ir.graph import Node
from lstmc.ir.printer import format_node
from lstmc.ir.shapes import Size

DTYPES = {"float32": "f32", "float64": "f64"}


class Namespace:
    """Hands out legal, unique Python identifiers. Spec names are identifiers already (the
    loader checks), and every generated name carries a prefix, so a cell may name an equation
    `np`, `range` or `t` without shadowing anything the generated code uses."""

    def __init__(self):
        self.used: set[str] = set()
        self.names: dict[tuple[str, str], str] = {}

    def get(self, prefix: str, name: str) -> str:
        key = (prefix, name)
        if key not in self.names:
            base = f"{prefix}_{name}"
            assert base.isidentifier() and not keyword.iskeyword(base), base
            ident, i = base, 1
            while ident in self.used:
                ident, i = f"{base}_{i}", i + 1
            self.used.add(ident)
            self.names[key] = ident
        return self.names[key]


def size_expr(size: Size, fixed: dict[str, int] | None, ns: Namespace) -> str:
    """Python expression of a symbolic size: `n_hidden`, `2 * n_hidden`, or a literal."""
    fixed = fixed or {}
    if all(s in fixed for s, _ in size.terms):
        return str(size.evaluate(fixed))
    parts = []
    for sym, coef in size.terms:
        v = str(fixed[sym]) if sym in fixed else ns.get("n", sym)
        parts.append(v if coef == 1 else f"{coef} * {v}")
    if size.const:
        parts.append(str(size.const))
    return " + ".join(parts) if len(parts) == 1 else "(" + " + ".join(parts) + ")"


class Access:
    """Renders how a loop body reads one element of a value.

    Element indices are (t, b, j) expressions; which are used depends on where the value
    lives: once values are [n], seq values [T, B, n], step values and state [B, n].
    """

    def __init__(self, sched: Schedule, ns: Namespace, fixed: dict | None):
        self.sched = sched
        self.ns = ns
        self.fixed = fixed

    def array(self, node: Node) -> str:
        if node.op == "input":
            return "x"
        if node.op == "state":
            return self.ns.get("st", node.attrs["name"])
        if node.op == "param":
            return self.ns.get("p", node.attrs["name"])
        return self.ns.get("v", node.name)

    def offset_index(self, offset: str, j: str) -> str:
        """Index of element j of a value that starts at `offset` in its buffer."""
        return f"{offset} + {j}"

    def scalar_var(self, node: Node) -> str:
        return self.ns.get("s", node.name)

    def element(
        self, node: Node, t: str, b: str, j: str, in_group=None, row: str | None = None
    ) -> str:
        """Expression for element j of `node` in batch row b at time t.

        `row` is the row index into state and step buffers when those hold only a chunk of
        the batch (the CPU target runs chunks of rows on separate threads); default b.
        """
        row = b if row is None else row
        if node.op == "const":
            return self.ns.get("k", node.name)
        if in_group is not None and self.sched.group_of.get(node.name) is in_group:
            return self.scalar_var(node)
        if not node.shape:  # scalar nodes are computed once into a scalar local
            return self.scalar_var(node)
        base, offset = self.sched.base(node)
        idx = (
            j if offset == Size() else self.offset_index(size_expr(offset, self.fixed, self.ns), j)
        )
        arr = self.array(base)
        if base.op == "param":
            return f"{arr}[{idx}]"
        if base.op == "state":
            return f"{arr}[{row}, {idx}]"
        phase = self.sched.phase[base.name]
        if phase == "once":
            return f"{arr}[{idx}]"
        if phase == "seq":
            return f"{arr}[{t}, {b}, {idx}]"
        return f"{arr}[{row}, {idx}]"


def elementwise_expr(node: Node, operands: list[str], target: str) -> str:
    rule = node.opdef.codegen[target]
    return rule.expr.format(*operands)


def helpers_used(nodes: list[Node], target: str) -> list[str]:
    names = []
    for n in nodes:
        if n.kind == "elementwise":
            rule = n.opdef.codegen[target]
            if rule.helper and rule.helper not in names:
                names.append(rule.helper)
    return names


def helper_source(name: str) -> str:
    return ops.HELPERS[name]


def ir_comment(node: Node) -> str:
    return "# " + format_node(node)


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def helpers_and_constants(
    nodes: list[Node], target: str, decorator: str, ns: Namespace
) -> list[str]:
    """The helper functions the element-wise rules call (compiled with `decorator`), then the
    cell's constants as typed module globals. Shared by every target's module text."""
    lines: list[str] = []
    for name in helpers_used(nodes, target):
        lines += ["", "", decorator, *helper_source(name).rstrip("\n").split("\n")]
    lines += ["", "", "# Constants of the cell, in the kernel's float type."]
    for n in nodes:
        if n.op == "const":
            lines.append(f"{ns.get('k', n.name)} = _F({n.attrs['value']!r})  {ir_comment(n)}")
    return lines


class EmitterBase:
    """What every target's emitter starts from: the graph, its schedule, the namespace and the
    element access of that target, and the names of state and output buffers."""

    access_class = Access

    def __init__(
        self, graph, dtype: str = "float32", fixed: dict | None = None, info: dict | None = None
    ):
        from lstmc.codegen.schedule import schedule

        self.graph = graph
        self.sched = schedule(graph)
        self.dtype = dtype
        self.fixed = dict(fixed or {})
        self.info = dict(info or {})
        self.ns = Namespace()
        self.acc = self.access_class(self.sched, self.ns, self.fixed)
        self.states = graph.find("state")
        self.outputs = graph.find("output")

    def nxt(self, state_name: str) -> str:
        return self.ns.get("nx", state_name)

    def y(self, out_name: str) -> str:
        return self.ns.get("y", out_name)

    def group_lines(
        self, item, target: str, t: str, b: str, j: str, row: str | None, sink_target
    ) -> list[str]:
        """One element of an element-wise group: each node into a scalar local, stores of
        materialized values, and (in the time loop) the stores of the sinks it feeds.
        `sink_target(sink)` gives the element a sink writes."""
        lines = []
        for n in item.nodes:
            ops = [self.acc.element(o, t, b, j, item, row=row) for o in n.operands]
            var = self.acc.scalar_var(n)
            lines.append(f"{var} = {elementwise_expr(n, ops, target)}  {ir_comment(n)}")
            if n.name in self.sched.materialized:
                lines.append(f"{self.acc.element(n, t, b, j, row=row)} = {var}")
            if item.phase == "step":
                for user in self.graph.users(n):
                    if user.kind == "sink":
                        lines.append(
                            f"{sink_target(user)} = {var}  # {user.op} {user.attrs['name']}"
                        )
        return lines
