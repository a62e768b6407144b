"""What every code generator needs to know about an optimized graph, computed once:

- the phase of each node: `once` (params/constants only), `seq` (hoisted: all timesteps before
  the loop) or `step` (inside the time loop); without the hoist pass everything is `step`;
- the element-wise groups (one loop nest each; without fuse-elementwise, one node a group);
- which values are materialized in buffers (used outside their group), and which are views
  (slices of materialized values: a base plus an offset);
- the weights to pack: one stacked, transposed matrix per product;
- the order in which groups and structural nodes are emitted, per phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lstmc.errors import CodegenError
from lstmc.ir.graph import Graph, Node, lexicographic_order
from lstmc.ir.shapes import Size

PHASES = ("once", "seq", "step")


@dataclass
class Item:
    """One unit of emitted code: an element-wise group, or one structural node."""

    kind: str  # "group" | "node"
    phase: str
    nodes: list[Node]
    extent: Size | None = None  # vector length of a group

    @property
    def first(self) -> Node:
        return self.nodes[0]


@dataclass
class Weight:
    """A packed weight: rows of several params (or column blocks of them) stacked, then
    transposed to [in, out] so that `v @ packed` is one GEMM."""

    name: str
    blocks: list[tuple[str, tuple | None]]  # (param, (col_start, col_size) as Size data | None)
    rows: Size
    cols: Size


@dataclass
class Schedule:
    graph: Graph
    phase: dict[str, str] = field(default_factory=dict)
    items: dict[str, list[Item]] = field(default_factory=dict)
    group_of: dict[str, Item] = field(default_factory=dict)
    materialized: set[str] = field(default_factory=set)
    view: dict[str, tuple[Node, Size]] = field(default_factory=dict)  # slice -> (base, offset)
    weights: dict[str, Weight] = field(default_factory=dict)  # product node -> its weight
    vector_params: list[str] = field(default_factory=list)

    def base(self, node: Node) -> tuple[Node, Size]:
        """The materialized (or source) node a value lives in, and its offset there."""
        return self.view.get(node.name, (node, Size()))


def _phase(node: Node, operand_phases: list[str]) -> str:
    if node.op == "input":
        return "seq"
    if node.op == "state":
        return "step"
    if node.op in ("param", "const"):
        return "once"
    if node.kind == "sink":
        return "step"
    if "hoisted" in node.attrs:
        return node.attrs["hoisted"]
    if not node.shape:  # a scalar computed from constants
        return "once"
    return "step"


def schedule(graph: Graph) -> Schedule:
    sched = Schedule(graph)
    nodes = graph.nodes()
    for n in nodes:
        sched.phase[n.name] = _phase(n, [sched.phase[o.name] for o in n.operands])
        if n.kind not in ("source", "sink"):
            for o in n.operands:
                if (
                    PHASES.index(sched.phase[o.name]) > PHASES.index(sched.phase[n.name])
                    and o.op != "input"
                ):
                    raise CodegenError(
                        f"%{n.name} is marked {sched.phase[n.name]} but uses "
                        f"%{o.name} of phase {sched.phase[o.name]}"
                    )

    # Element-wise groups: by the `group` attr when fused, else one node each. Scalars are
    # computed as plain scalar statements in the `once` phase.
    groups: dict[tuple, Item] = {}
    for n in nodes:
        if n.kind == "elementwise" and n.shape:
            key = ("g", n.attrs["group"]) if "group" in n.attrs else ("n", n.name)
            item = groups.get(key)
            if item is None:
                item = groups[key] = Item("group", sched.phase[n.name], [], n.shape[0])
            if item.phase != sched.phase[n.name] or item.extent != n.shape[0]:
                raise CodegenError(f"group {key[1]} mixes phases or sizes at %{n.name}")
            item.nodes.append(n)
            sched.group_of[n.name] = item

    # Views: a slice reads its operand's buffer at an offset (the operand is materialized:
    # products and concats always are, element-wise values are once a slice reads them).
    for n in nodes:
        if n.op == "slice":
            src = n.operands[0]
            base, offset = sched.base(src)
            sched.view[n.name] = (base, offset + n.attrs["start"])

    # Materialized: element-wise values read outside their own group.
    for n in nodes:
        if n.kind != "elementwise" or n.name not in sched.group_of:
            continue
        item = sched.group_of[n.name]
        for user in graph.users(n):
            # Sinks store from inside a step group's loop; other phases finish before the
            # time loop starts, so a sink reads their buffer.
            fused_sink = user.kind == "sink" and item.phase == "step"
            if sched.group_of.get(user.name) is not item and not fused_sink:
                sched.materialized.add(n.name)
    for n in nodes:
        if n.kind == "structural" and n.op not in ("param_cols",) and n.name not in sched.view:
            sched.materialized.add(n.name)

    # Packed weights.
    for n in nodes:
        if n.op in ("matvec", "packed_matvec"):
            ws = [n.operands[0]] if n.op == "matvec" else list(n.operands[1:])
            blocks = []
            rows = Size()
            for w in ws:
                if w.op == "param":
                    blocks.append((w.attrs["name"], None))
                else:
                    p = w.operands[0]
                    blocks.append(
                        (p.attrs["name"], (w.attrs["start"].to_data(), w.attrs["size"].to_data()))
                    )
                rows = rows + w.shape[0]
            vec = n.operands[-1] if n.op == "matvec" else n.operands[0]
            sched.weights[n.name] = Weight(f"w_{n.name}", blocks, rows, vec.shape[0])
    sched.vector_params = [n.attrs["name"] for n in nodes if n.op == "param" and len(n.shape) == 1]

    # Emission order: condense groups into single vertices and sort topologically.
    cond: dict[str, dict[str, None]] = {}  # unit -> the units that depend on it
    unit: dict[str, str] = {}
    for n in nodes:
        if n.kind in ("source",) or n.op == "param_cols" or n.name in sched.view:
            continue
        u = f"g{id(sched.group_of[n.name])}" if n.name in sched.group_of else n.name
        unit[n.name] = u
        cond.setdefault(u, {})
    for n in nodes:
        for o in n.operands:
            if o.name in unit and n.name in unit and unit[o.name] != unit[n.name]:
                cond[unit[o.name]][unit[n.name]] = None
            # a view's users depend on what the view's base depends on
            if o.name in sched.view and n.name in unit:
                base = sched.view[o.name][0]
                if base.name in unit and unit[base.name] != unit[n.name]:
                    cond[unit[base.name]][unit[n.name]] = None
    first_index = {}
    for n in nodes:
        if n.name in unit:
            first_index.setdefault(unit[n.name], n.index)
    order = lexicographic_order(cond, key=lambda u: first_index[u])
    if order is None:
        raise CodegenError("element-wise groups depend on each other in a cycle")
    by_unit = {}
    for n in nodes:
        if n.name in unit:
            by_unit.setdefault(unit[n.name], []).append(n)
    sched.items = {p: [] for p in PHASES}
    for u in order:
        members = by_unit[u]
        if members[0].name in sched.group_of:
            item = sched.group_of[members[0].name]
        else:
            item = Item("node", sched.phase[members[0].name], members)
        sched.items[item.phase].append(item)
    return sched
