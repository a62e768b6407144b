"""The CPU target's column-split time loop: each thread owns a range of a step's units.

`_rows` (cpu.py) splits a call by batch rows, which helps only while the weights are small:
every chunk's per-step product streams the whole recurrent weight. `_cols` splits by units
instead, the way oneDNN's RNN splits gate columns: thread k owns units [e0, e1) of the step's
element-wise group and the columns of every step product that group reads at those units (for
an LSTM, columns j, H+j, 2H+j, 3H+j of the packed [H, 4H] weight). Each thread streams only its
block of the weight (packed once per thread count, see lstmc_runtime.packing), runs the
element-wise work of its units, writes its columns of the new state, and meets the others at a
spin barrier (lstmc_runtime.sync) before the next step reads the whole state.

The batch split of such a kernel runs `_cols` too, on each chunk of rows for every unit on
one thread (the glue's `_launch_chunks`): no barrier, and the input projection a few steps at
a time, a product a step over the chunk's rows.

That needs a step whose units do not interact except through the products that start it:
exactly one element-wise group, products that read only state (complete after the barrier),
product values read by the group only at its own unit (a slice of the group's length, at any
offset), states read by the group only at its own unit, and every state update and output
stored from the group. `column_plan` checks this and returns None for anything else (a layer
norm, a second product inside the step, a projection), which keeps `_rows` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstmc.codegen.common import ir_comment, size_expr
from lstmc.codegen.cpu_ops import CpuAccess
from lstmc.codegen.schedule import Item, Schedule
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size

_PRODUCTS = ("matvec", "packed_matvec")


@dataclass
class ColumnPlan:
    group: Item  # the step's one element-wise group; its extent is split
    # product node name -> the offsets (in its output) of the slices the group reads, in the
    # order their blocks are packed: a thread's block holds, for each offset o, columns
    # [o + e0, o + e1) of the product's packed weight. Step products and hoisted ones (the
    # input projection, which each thread then computes for its own units before the loop).
    offsets: dict[str, list[Size]]
    hoisted: set[str]  # the hoisted ones among them


def column_plan(graph: Graph, sched: Schedule) -> ColumnPlan | None:
    """The split of the step's units across threads, or None when the step does not allow it."""
    step = sched.items["step"]
    groups = [it for it in step if it.kind == "group"]
    if len(groups) != 1:
        return None
    (group,) = groups
    members = {n.name for n in group.nodes}
    for item in step:
        if item.kind == "group":
            continue
        node = item.first
        if node.op in _PRODUCTS:
            vec = node.operands[-1] if node.op == "matvec" else node.operands[0]
            if sched.base(vec)[0].op != "state":
                return None  # reads a value of this step: needs a second barrier
        elif node.kind == "sink":
            if node.operands[0].name not in members:
                return None  # stored from elsewhere than the group
        else:
            return None  # a layer norm, a concat, a scalar of the step
    offsets: dict[str, list[Size]] = {}
    for n in group.nodes:
        for o in n.operands:
            if o.name in members or o.op in ("param", "const", "input") or not o.shape:
                continue
            base, offset = sched.base(o)
            if base.op == "state":
                if base is not o:
                    return None  # a state read at another unit than the group's own
                continue
            phase = sched.phase[base.name]
            splittable = base.op in _PRODUCTS and o.shape[0] == group.extent
            if phase == "step" and not splittable:
                return None
            if phase == "once" or not splittable:
                continue  # complete before the time loop: any unit may be read
            slots = offsets.setdefault(base.name, [])
            if offset not in slots:
                slots.append(offset)
    # A product is split only if the group is its only reader, through views of the group's
    # length; a hoisted one read elsewhere stays whole (computed by the prologue).
    for name in list(offsets):
        node = graph.node(name)
        readers = []
        for u in graph.users(node):
            readers += graph.users(u) if u.name in sched.view else [u]
        if any(r.name not in members for r in readers):
            if sched.phase[name] == "step":
                return None
            del offsets[name]  # a hoisted product read elsewhere: the prologue computes it
    for item in step:
        if item.kind == "node" and item.first.op in _PRODUCTS and item.first.name not in offsets:
            return None  # a product the group does not read (would be computed whole)
    hoisted = {name for name in offsets if sched.phase[name] == "seq"}
    if not offsets.keys() - hoisted:
        return None  # no product in the step: nothing worth a barrier a step
    return ColumnPlan(group, offsets, hoisted)


class ColumnAccess(CpuAccess):
    """Element access inside `_cols`: a split product's value is the thread's block, where
    slot s of the product holds units [e0, e1) at columns [s*ne, (s+1)*ne)."""

    def __init__(self, sched: Schedule, ns, fixed, plan: ColumnPlan):
        super().__init__(sched, ns, fixed)
        self.plan = plan

    def element(self, node: Node, t: str, b: str, j: str, in_group=None, row=None) -> str:
        base, offset = self.sched.base(node)
        slots = self.plan.offsets.get(base.name)
        if slots is None or (
            in_group is not None and self.sched.group_of.get(node.name) is in_group
        ):
            return super().element(node, t, b, j, in_group, row)
        s = slots.index(offset)
        col = "jj" if s == 0 else self.offset_index(f"{s} * ne", "jj")
        if base.name in self.plan.hoisted:  # made a chunk of steps at a time: `tl` in the chunk
            assert t == "t", t  # and for this call's rows: `r`
            return f"{self.array(base)}[tl, {b if row is None else row}, {col}]"
        return f"{self.array(base)}[{b if row is None else row}, {col}]"


def column_offsets_data(plan: ColumnPlan, sched: Schedule) -> dict:
    """What the run time needs to cut per-thread weight blocks: per packed weight, the group's
    extent and the slot offsets, as Size data."""
    return {
        sched.weights[name].name: {
            "extent": plan.group.extent.to_data(),
            "offsets": [o.to_data() for o in offs],
        }
        for name, offs in plan.offsets.items()
    }


def extent_expr(plan: ColumnPlan, fixed, ns) -> str:
    return size_expr(plan.group.extent, fixed, ns)


class ColumnsEmitter:
    """The `_cols` function of a CPU module, mixed into `CpuEmitter` (cpu.py). Needs from the
    emitter: columns (a ColumnPlan or None), graph, sched, acc, ns, fixed, states, outputs,
    size(), nxt(), y(), value_name(), prologue_values(), split_hoisted(), shared_args(),
    size_args(), vector_array(), emit_fixed_sizes(), emit_time_loop(), emit_item(),
    emit_swaps(), staged_group_lines(), stage_of(), emit_scratch(), sink_target()."""

    def cols_args(self) -> list[str]:
        args = ["k", "threads", "e0", "e1", "flags", "b0", "b1", "x"]
        for s in self.states:
            args += [self.acc.array(s), self.nxt(s.attrs["name"])]
        args += [self.value_name(n) for n in self.prologue_values(self.split_hoisted())]
        args += self.shared_args()
        args += [self.y(o.attrs["name"]) for o in self.outputs]
        return [*args, *self.size_args(), "work"]

    def emit_cols(self, L) -> None:
        plan = self.columns
        L.add('@njit(cache=_CACHE, error_model="numpy", nogil=True)')
        L.add(f"def _cols({', '.join(self.cols_args())}):")
        with L.indent():
            L.add('"""Run every timestep for units [e0, e1) of the step and batch rows [b0, b1),')
            L.add("as thread k of `threads`.")
            L.add("")
            L.add("State arguments are those rows, of which this thread writes its units'")
            L.add("columns; outputs are whole. The split weights are this thread's blocks. The")
            L.add("threads of a unit split (all rows) meet at a barrier after each step, before")
            L.add("the next step's product reads the whole state; a chunk of rows that runs all")
            L.add("units (the batch split: threads == 1, k its chunk) waits for nobody. Parts")
            L.add('k > 0 of a split call take part in its hand-shake (lstmc_runtime.sync)."""')
            L.add("started(flags, k)  # in compiled code, without the GIL: the caller goes on")
            self.emit_wide_vectors(L)
            L.add("T = x.shape[0]")
            L.add("B = x.shape[1]")
            L.add("nb = b1 - b0  # rows of this call")
            L.add("ne = e1 - e0  # units of this thread")
            self.emit_fixed_sizes(L)
            self.emit_scalar_casts(L, self.split_hoisted())
            if plan.hoisted:
                widths = " + ".join(self.hoisted_width(name) for name in sorted(plan.hoisted))
                weights = " + ".join(
                    f"{self.sched.weights[name].name}.size" for name in sorted(plan.hoisted)
                )
                L.add("# ---- hoisted: this thread's units of the input projection, made `tc`")
                L.add("# steps at a time in the time loop (lstmc_runtime.layout.chunk_steps)")
                L.add(f"tc = _chunk_steps(T, nb, {widths}, {weights}, x.itemsize)")
                L.add("# in `work`, this thread's buffer that the glue keeps for its next call:")
                L.add("# a [T, nb, n] one (weights too big for chunks) is no fresh memory a call")
                L.add(f"need = tc * nb * ({widths})")
                L.add("if work.size < need:")
                L.add("    work = np.empty(need, _F)")
                L.add("wo = 0")
            for name in sorted(plan.hoisted):
                n = self.graph.node(name)
                width = self.hoisted_width(name)
                L.add(ir_comment(n))
                L.add(
                    f"{self.acc.array(n)} = work[wo : wo + tc * nb * {width}]"
                    f".reshape((tc, nb, {width}))"
                )
                L.add(f"wo += tc * nb * {width}")
            L.add("# ---- buffers reused by every step: this thread's columns of each product")
            for name, slots in plan.offsets.items():
                if name in plan.hoisted:
                    continue
                n = self.graph.node(name)
                L.add(f"{self.acc.array(n)} = np.empty((nb, {len(slots)} * ne), _F)  # %{name}")
            for n in plan.group.nodes:
                if n.name in self.sched.materialized:
                    L.add(
                        f"{self.acc.array(n)} = np.empty((nb, {self.size(n.shape[0])}), _F)"
                        f"  # %{n.name}"
                    )
            self.emit_scratch(L, plan.group, "ne")
            self.emit_time_loop(L, self.emit_cols_step)
            L.add("until_caller_waits(flags, k)  # so that the GIL is free when this returns")
            L.add("return work")

    def hoisted_width(self, name: str) -> str:
        return f"{len(self.columns.offsets[name])} * ne"

    def emit_cols_step(self, L) -> None:
        plan = self.columns
        if plan.hoisted:
            L.add("tl = t % tc  # the step's place in the chunk of the hoisted projection")
            L.add("if tl == 0:  # the next chunk: steps [t, t + tn)")
            with L.indent():
                L.add("tn = min(tc, T - t)")
                for name in sorted(plan.hoisted):
                    n = self.graph.node(name)
                    vec_node = n.operands[-1] if n.op == "matvec" else n.operands[0]
                    vec = self.vector_array(vec_node, "seq")
                    width = self.hoisted_width(name)
                    weight = self.sched.weights[name].name
                    self.panel_weights.add(weight)
                    L.add(f"if nb == B:  # all rows: one product over the chunk's steps  %{name}")
                    L.add(
                        f"    _matmul({vec}[t : t + tn].reshape(tn * B, "
                        f"{self.size(vec_node.shape[0])}), {weight}, "
                        f"{self.acc.array(n)}[:tn].reshape(tn * B, {width}))"
                    )
                    L.add("else:  # a chunk of rows (the batch split): a product a step")
                    L.add(f"    src = {vec}")
                    L.add("    for s in range(tn):")
                    L.add(f"        _matmul(src[t + s, b0:b1], {weight}, {self.acc.array(n)}[s])")
        for item in self.sched.items["step"]:
            if item.kind != "group":
                self.emit_item(L, item)
                continue
            L.add(
                f"# element-wise group: {', '.join('%' + n.name for n in item.nodes)}; "
                "this thread's units"
            )
            plain, self.acc = self.acc, ColumnAccess(self.sched, self.ns, self.fixed, self.columns)
            try:
                stages = self.staged_group_lines(
                    item,
                    "cpu",
                    "t",
                    "b",
                    "j",
                    "r",
                    lambda s: self.sink_target(s, "j"),
                    self.stage_of(item),
                    "jj",
                )
            finally:
                self.acc = plain
            L.add("for r in range(nb):")
            with L.indent():
                L.add("b = b0 + r")
                for k, lines in enumerate(stages):
                    if len(stages) > 1:
                        L.add(f"# loop {k + 1} of {len(stages)} over the row (common.chain_stages)")
                    L.add("for jj in range(_U(ne)):")
                    with L.indent():
                        L.add("j = _U(e0) + jj")
                        for line in lines:
                            L.add(line)
        L.add("if threads > 1 and not barrier(flags, k, threads, t + 1):")
        L.add("    return work  # another thread failed")
        self.emit_swaps(L)

    def columns_data(self) -> dict | None:
        return None if self.columns is None else column_offsets_data(self.columns, self.sched)
