"""The CPU target's code for structural ops (products, concat, layer_norm, views, sinks),
one `emit_<op>` method each, mixed into `CpuEmitter` (cpu.py), which owns the module layout,
the loops and the element-wise groups. The op registry's STRUCTURAL marker points here."""

from __future__ import annotations

from lstmc.codegen.common import CHAIN_HELPERS, Access, ir_comment
from lstmc.codegen.schedule import Item
from lstmc.ir.graph import Node
from lstmc.ir.shapes import Size


class CpuAccess(Access):
    """Element access with unsigned unit indices: loops over units run `j` over
    `range(_U(n))` and offsets are added as `_U(offset) + j`.

    Numba wraps every signed array index in `j < 0 ? j + size : j`. LLVM drops that select
    only when it proves j >= 0, and when it cannot, the loads stop being plain strided
    accesses and the loop vectorizer refuses the whole element-wise loop (measured: the
    layernorm_lstm gate loop ran scalar at ~38 ns an element). Unsigned indices have no
    wraparound, so the loops vectorize whatever else the function holds. Every offset is cast
    whole, so the index arithmetic stays unsigned.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Layer norms computed inside the group that reads them (fold_layer_norms): node name
        # -> the names of its row statistics, set before the group's loop over units.
        self.folded: dict[str, tuple[str, str, str]] = {}

    def offset_index(self, offset: str, j: str) -> str:
        return f"_U({offset}) + {j}"

    def element(self, node, t, b, j, in_group=None, row=None):
        stats = self.folded.get(node.name)
        if stats is None:
            return super().element(node, t, b, j, in_group, row)
        return f"({self.normalized(node, stats, t, b, j, in_group, row)})"

    def normalized(self, node, stats, t, b, j, in_group=None, row=None) -> str:
        """Element j of layer norm `node` from its input, given its row statistics `stats`
        (the names of mean_hi, mean_lo and 1/std; see CpuStructuralOps.emit_row_stats)."""
        v, gamma, beta = (self.element(o, t, b, j, in_group, row) for o in node.operands)
        hi, lo, inv = stats
        return f"(({v} - {hi}) - {lo}) * {inv} * {gamma} + {beta}"


def fold_layer_norms(graph, sched, in_step: bool = True) -> dict[str, Item]:
    """The layer norms that the one element-wise group reading them computes, by name, with
    that group: every reader is in the group, which is of the norm's phase (step or hoisted)
    or, for a hoisted norm, of the step; and the norm's input has a row per batch row (state,
    the input, or a value of the hoisted or step phase, not a param's vector). Such a norm
    gets no buffer: the group's loop computes its row statistics before running over the
    units and normalizes each element where it reads it (CpuAccess.element), the same
    arithmetic as a materialized layer norm. layernorm_lstm's nine norms are all such: each
    step wrote [B, H] five times and read it back, and its prologue four [T, B, H] buffers.
    `in_step=False` keeps those the time loop would compute (a column split, whose threads
    hold only their units of a row, cannot). Updates `sched.materialized`."""
    folded: dict[str, Item] = {}
    for node in graph.find("layer_norm"):
        phase = sched.phase[node.name]
        users = graph.users(node)
        groups = {id(sched.group_of.get(u.name)) for u in users}
        group = sched.group_of.get(users[0].name) if users else None
        if phase not in ("step", "seq") or group is None or len(groups) != 1:
            continue
        base = sched.base(node.operands[0])[0]
        per_row = base.op in ("state", "input") or (
            base.op not in ("param", "const") and sched.phase[base.name] in ("seq", "step")
        )
        if not per_row:  # a param's vector, which -O0/-O1 keep in the step
            continue
        # A hoisted norm read in the step: its group normalizes the hoisted row [t, b] there,
        # and the prologue does not write (nor the step read back) a [T, B, n] buffer.
        if group.phase != phase and not (phase == "seq" and group.phase == "step"):
            continue
        if group.phase == "step" and not in_step:
            continue
        folded[node.name] = group
        sched.materialized.discard(node.name)
    return folded


def norm_stages(nodes: list, stage_of: dict[str, int], norms: set[str], target: str) -> dict:
    """`stage_of` (common.chain_stages) with loops of their own, before the others, for the
    values that the group's folded layer norms feed: each maximal tree of the group's
    arithmetic on norms (no chain function: a gate's `LN(W x) + LN(U h) + b`, not its
    sigmoid) gets one loop, whose root goes to the later loops through its row scratch. Only
    when there are two such trees or more; otherwise `stage_of` unchanged.

    Why: in one loop, layernorm_lstm's gate loop held eight normalizations (24 row scalars,
    20 param streams) beside the gates' sigmoid and tanh; its vectorized body spilled 42
    registers in ~260 instructions for 16 units. A loop per gate's pre-activation holds two
    normalizations and the gate loop is the plain LSTM's: H=64, B=16, in turns with the
    plain LSTM, 1.46x -> 1.36x its time on one thread, 1.44x -> 1.37x on two
    (benchmarks/RESULTS.md)."""
    in_group = {n.name for n in nodes}
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for o in n.operands:
            if o.name in users:
                users[o.name].append(n.name)
    on_norms: set[str] = set()  # group nodes computed from norms by arithmetic alone
    for n in nodes:  # in dependency order
        rule = n.opdef.codegen.get(target) if n.kind == "elementwise" else None
        if getattr(rule, "helper", None) in CHAIN_HELPERS:
            continue
        inner = [o for o in n.operands if o.name in in_group]
        if all(o.name in on_norms for o in inner) and (
            any(o.name in norms for o in n.operands) or inner
        ):
            on_norms.add(n.name)
    roots = [
        n.name
        for n in nodes
        if n.name in on_norms
        and (not users[n.name] or any(u not in on_norms for u in users[n.name]))
    ]
    if len(roots) < 2:
        return stage_of
    stages = {name: s + len(roots) for name, s in stage_of.items()}
    for k, name in enumerate(roots):
        stages[name] = k
    for n in reversed(nodes):  # the rest of a tree goes in the loop of its first root
        if n.name in on_norms and n.name not in roots:
            stages[n.name] = min(stages[u] for u in users[n.name])
    return stages


class CpuStructuralOps:
    """Needs from the emitter: sched, acc, size(), loops(), close(), alloc(), row_of(),
    sink_target()."""

    # -- structural ops ------------------------------------------------------------------------

    def vector_array(self, node: Node, phase: str) -> str:
        """A contiguous 2-D (or 1-D for once) array expression holding `node`'s value, for a
        product in `phase`."""
        base, offset = self.sched.base(node)
        arr = self.acc.array(base)
        base_phase = (
            "step"
            if base.op == "state"
            else ("once" if base.op == "param" else self.sched.phase[base.name])
        )
        if base.op == "input":
            full = "x" if phase == "seq" else "x[t, b0:b1]"
        elif base_phase == "seq" and phase == "step":
            full = f"{arr}[t, b0:b1]"
        else:
            full = arr
        if base is node:
            return full
        start = self.size(offset)
        stop = f"{start} + {self.size(node.shape[0])}"
        return f"np.ascontiguousarray({full}[..., {start}:{stop}])"

    def emit_matvec(self, L, node: Node) -> None:
        self.emit_packed_matvec(L, node)

    def emit_packed_matvec(self, L, node: Node) -> None:
        phase = self.sched.phase[node.name]
        vec = node.operands[-1] if node.op == "matvec" else node.operands[0]
        w = self.sched.weights[node.name].name
        out = self.acc.array(node)
        v = self.vector_array(vec, phase)
        L.add(ir_comment(node))
        vec_base = self.sched.base(vec)[0]
        constant = vec_base.op == "param" or (
            vec_base.op not in ("input", "state") and self.sched.phase[vec_base.name] == "once"
        )
        if constant and phase != "once":  # W @ (a param vector), not hoisted (-O0, -O1)
            m = self.size(node.shape[0])
            self.dot_weights.add(w)
            L.add(f"row = np.dot({v}, {w})  # the same for every row and step")
            self.alloc(L, node, phase)
            ctxs = self.loops(L, phase, m)
            L.add(f"{self.acc.element(node, 't', 'b', 'j', row=self.row_of(phase))} = row[j]")
            self.close(ctxs)
        elif phase == "seq":
            rows = f"T * B, {self.size(vec.shape[0])}"
            m = self.size(node.shape[0])
            if self.work_terms is None:
                self.dot_weights.add(w)
                L.add(f"{out} = np.dot({v}.reshape({rows}), {w}).reshape(T, B, {m})")
            else:  # into the prologue's workspace, steps [t0, t1) of rows [b0, b1) only
                self.panel_weights.add(w)
                self.hoisted_weights.add(w)
                self.take_work(L, out, m)
                part = f"(t1 - t0) * B, {self.size(vec.shape[0])}"
                L.add("if b0 == 0 and b1 == B:  # all rows: one product over the steps' rows")
                L.add(
                    f"    _matmul({v}[t0:t1].reshape({part}), {w}, "
                    f"{out}[t0:t1].reshape((t1 - t0) * B, {m}))"
                )
                L.add("else:  # a thread's chunk of rows (the batch split): a product a step")
                L.add(f"    src = {v}")
                L.add("    for t in range(t0, t1):")
                L.add(f"        _matmul(src[t, b0:b1], {w}, {out}[t, b0:b1])")
        elif phase == "once":
            self.dot_weights.add(w)
            L.add(f"{out} = np.dot({v}, {w})")
        else:  # a step's product: the register-blocked kernel, not a BLAS call
            self.panel_weights.add(w)
            L.add(f"_matmul({v}, {w}, {out})")

    def emit_concat(self, L, node: Node) -> None:
        phase = self.sched.phase[node.name]
        L.add(ir_comment(node))
        self.alloc(L, node, phase)
        start = Size()
        out = self.acc.array(node)
        for part in node.operands:
            ctxs = self.loops(L, phase, self.size(part.shape[0]))
            idx = "j" if start == Size() else f"{self.size(start)} + j"
            dest = {"once": f"{out}[{idx}]", "seq": f"{out}[t, b, {idx}]"}.get(
                phase, f"{out}[r, {idx}]"
            )
            L.add(f"{dest} = {self.acc.element(part, 't', 'b', 'j', row='r')}")
            self.close(ctxs)
            start = start + part.shape[0]

    def emit_layer_norm(self, L, node: Node) -> None:
        if node.name in self.acc.folded:
            L.add(f"# %{node.name}: layer_norm, computed in the group that reads it")
            return
        phase = self.sched.phase[node.name]
        n = self.size(node.shape[0])
        L.add(ir_comment(node))
        self.alloc(L, node, phase)
        ctxs = self.loops(L, phase, None)  # one row at a time
        row = "r" if phase == "step" else "b"
        stats = ("mean_hi", "mean_lo", "inv_f")
        self.emit_row_stats(L, node, phase, stats)
        L.add(f"for k in range(_U({n})):")
        L.add(
            f"    {self.acc.element(node, 't', 'b', 'k', row=row)} = "
            f"{self.acc.normalized(node, stats, 't', 'b', 'k', row=row)}"
        )
        self.close(ctxs)

    def emit_row_stats(self, L, node: Node, phase: str, names: tuple[str, str, str]) -> None:
        """The row statistics of layer norm `node` in the current row, as (mean_hi, mean_lo,
        1/std) locals `names`."""
        v = node.operands[0]
        n = self.size(node.shape[0])
        hi, lo, inv = names
        # Row statistics in float64, as the reference does (lstmc_runtime.rows); in the time
        # loop, emit_rows_stats computed them for all rows of the chunk.
        if phase == "step" and node.name in self.acc.folded:
            buf = self.stats_buffer(node)
            L.add(f"mean, inv = {buf}[0, r], {buf}[1, r]  # %{node.name}")
        else:
            base, offset = self.sched.base(v)
            L.add(
                f"mean, inv = _mean_inv_std({self.row_array(base, phase)}, "
                f"{self.size(offset)}, {n}, {node.attrs['eps']!r})  # %{node.name}"
            )
        # The normalization in the kernel's type: float64 arithmetic would halve the SIMD lanes
        # and add two conversions an element (measured 1.4-1.7x the time of the whole hoisted
        # part at H=64..128). The mean goes in as hi + lo so that x - mean keeps its accuracy
        # when it cancels (rows with a large mean): x - hi is then exact (Sterbenz).
        L.add(f"{hi} = _F(mean)")
        L.add(f"{lo} = _F(mean - {hi})")
        L.add(f"{inv} = _F(inv)")

    def stats_buffer(self, node: Node) -> str:
        return self.ns.get("m", node.name)

    def emit_rows_stats(self, L, node: Node) -> None:
        """The row statistics of layer norm `node` for every row of the chunk, in the time
        loop, into its [3, nb] buffer (lstmc_runtime.rows.rows_mean_inv_std)."""
        base, offset = self.sched.base(node.operands[0])
        arr = self.acc.array(base)
        if base.op == "input" or (base.op != "state" and self.sched.phase[base.name] == "seq"):
            arr = f"{arr}[t, b0:b1]"
        L.add(
            f"_rows_mean_inv_std({arr}, {self.size(offset)}, {self.size(node.shape[0])}, "
            f"{node.attrs['eps']!r}, {self.stats_buffer(node)})  # %{node.name}'s statistics"
        )

    def row_array(self, base: Node, phase: str) -> str:
        """The 1-D array holding one row of `base` (a materialized or source node) where a
        loop of `phase` runs: rows are [t, b] of seq values and the input, [r] of step values
        and state (this chunk's rows), the whole array of once values and params."""
        arr = self.acc.array(base)
        if base.op == "param":
            return arr
        if base.op == "state":
            return f"{arr}[r]"
        if base.op == "input":
            return f"{arr}[t, b]" if phase == "seq" else f"{arr}[t, b0 + r]"
        base_phase = self.sched.phase[base.name]
        if base_phase == "once":
            return arr
        if base_phase == "seq":
            return f"{arr}[t, b]"
        return f"{arr}[r]"

    def emit_slice(self, L, node: Node) -> None:  # views are read in place
        pass

    def emit_param_cols(self, L, node: Node) -> None:  # packed with the weights
        pass

    def emit_output(self, L, node: Node) -> None:
        self._emit_sink_copy(L, node)

    def emit_update(self, L, node: Node) -> None:
        self._emit_sink_copy(L, node)

    def _emit_sink_copy(self, L, sink: Node) -> None:
        src = sink.operands[0]
        item = self.sched.group_of.get(src.name)
        if item is not None and item.phase == "step":
            return  # stored from inside the group's loop
        L.add(ir_comment(sink))
        ctxs = self.loops(L, "step", self.size(sink.shape[0]))
        L.add(f"{self.sink_target(sink, 'j')} = {self.acc.element(src, 't', 'b', 'j', row='r')}")
        self.close(ctxs)

    # sources are arguments of _sequence
    def emit_input(self, L, node):
        pass

    emit_state = emit_param = emit_const = emit_input
