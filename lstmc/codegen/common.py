"""Pieces shared by the code generators: identifier namespace, size and element access
expressions, element-wise statement rendering, the module header."""

from __future__ import annotations

import hashlib
import keyword
import math

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


def float_literal(value: float) -> str:
    """Source text for a constant: its repr, or np.inf / -np.inf / np.nan, which have none
    that Python reads back (`cell_clip=inf` turns a clip off; folding can make any of them)."""
    value = float(value)
    if math.isnan(value):
        return "np.nan"
    if math.isinf(value):
        return "np.inf" if value > 0 else "-np.inf"
    return repr(value)


def helpers_and_constants(
    nodes: list[Node], target: str, decorator: str, ns: Namespace, alias_forwards: bool = False
) -> list[str]:
    """The helper functions the element-wise rules call (compiled with `decorator`), then the
    cell's constants as typed module globals. Shared by every target's module text.
    `alias_forwards`: a helper that only calls a transcendental function (ops.FORWARDS) is
    that function under the helper's name, not a function of its own (on the CPU, Numba
    inlines each call site of an inline function anew, and each level costs compile time)."""
    used = helpers_used(nodes, target)
    aliases = [name for name in used if alias_forwards and name in ops.FORWARDS]
    lines = [f"{name} = {ops.FORWARDS[name]}" for name in aliases]
    for name in used:
        if name not in aliases:
            lines += ["", "", decorator, *helper_source(name).rstrip("\n").split("\n")]
    lines += ["", "", "# Constants of the cell, in the kernel's float type."]
    for n in nodes:
        if n.op == "const":
            value = float_literal(n.attrs["value"])
            lines.append(f"{ns.get('k', n.name)} = _F({value})  {ir_comment(n)}")
    return lines


# Element-wise functions whose SIMD code is one long chain of dependent instructions
# (lstmc_runtime.vmath: some thirty in a row, then a division).
CHAIN_HELPERS = frozenset({"_sigmoid", "_tanh", "_exp", "_softplus", "_log"})


def chain_stages(nodes: list, target: str) -> dict[str, int]:
    """The loop of a fused element-wise group's row that each node goes in, when the group is
    cut where one chain function (CHAIN_HELPERS) reads another's result: a chain function
    goes in the stage numbered by the chain functions before it on its longest path within
    the group, any other node in the latest stage of its operands. An LSTM's four gates and
    c_next are stage 0; tanh(c_next) and h_next stage 1.

    Why: within one loop, an element's gates, then tanh(c_next), then h_next form a chain of
    two chain functions (~250 cycles), and the core overlaps too few elements to hide it. Cut
    in two, each loop's chain is one function long: lstm H=128, B=64 on one thread 14.7 ->
    13.7 ms, H=32 1.80 -> 1.60 ms (benchmarks/RESULTS.md)."""
    in_group = {n.name for n in nodes}
    chains: dict[str, int] = {}  # chain functions on the longest path ending at a node
    stage: dict[str, int] = {}
    for n in nodes:  # in dependency order
        ops = [o for o in n.operands if o.name in in_group]
        before = max((chains[o.name] for o in ops), default=0)
        rule = n.opdef.codegen.get(target) if n.kind == "elementwise" else None
        is_chain = getattr(rule, "helper", None) in CHAIN_HELPERS
        chains[n.name] = before + is_chain
        stage[n.name] = before if is_chain else max((stage[o.name] for o in ops), default=0)
    return stage


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
        return self.staged_group_lines(item, target, t, b, j, row, sink_target)[0]

    def staged_group_lines(
        self,
        item,
        target: str,
        t: str,
        b: str,
        j: str,
        row: str | None,
        sink_target,
        stage_of: dict[str, int] | None = None,
        index: str | None = None,
    ) -> list[list[str]]:
        """`group_lines` cut into the loops of `stage_of` (chain_stages; one stage without
        it): the lines of each stage's loop. A node that a later stage reads (`crossing`)
        passes its value through its row scratch (`scratch_name`), element `index`."""
        stage_of = stage_of or dict.fromkeys((n.name for n in item.nodes), 0)
        crossing_names = {n.name for n in self.crossing(item, stage_of)}
        stages: list[list[str]] = [[] for _ in range(max(stage_of.values()) + 1)]
        for n in item.nodes:
            s = stage_of[n.name]
            lines = stages[s]
            ops = [
                f"{self.scratch_name(o)}[{index}]"
                if o.name in crossing_names and stage_of[o.name] < s
                else self.acc.element(o, t, b, j, item, row=row)
                for o in n.operands
            ]
            var = self.acc.scalar_var(n)
            lines.append(f"{var} = {elementwise_expr(n, ops, target)}  {ir_comment(n)}")
            if n.name in self.sched.materialized:
                lines.append(f"{self.acc.element(n, t, b, j, row=row)} = {var}")
            if n.name in crossing_names:
                lines.append(f"{self.scratch_name(n)}[{index}] = {var}  # read by a later loop")
            if item.phase == "step":
                for user in self.graph.users(n):
                    if user.kind == "sink":
                        lines.append(
                            f"{sink_target(user)} = {var}  # {user.op} {user.attrs['name']}"
                        )
        return stages

    def crossing(self, item, stage_of: dict[str, int]) -> list:
        """The nodes of `item` that a later stage of `stage_of` reads."""
        return [
            n
            for n in item.nodes
            if any(stage_of.get(u.name, -1) > stage_of[n.name] for u in self.graph.users(n))
        ]

    def scratch_name(self, node) -> str:
        return self.ns.get("sg", node.name)


class Lines:
    """Lines of generated source at an indentation depth (`with lines.indent():`)."""

    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def add(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    def indent(self):
        lines = self

        class _Ctx:
            def __enter__(self):
                lines.depth += 1

            def __exit__(self, *a):
                lines.depth -= 1

        return _Ctx()
