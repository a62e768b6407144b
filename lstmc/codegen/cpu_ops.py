"""The CPU target's code for structural ops (products, concat, layer_norm, views, sinks),
one `emit_<op>` method each, mixed into `CpuEmitter` (cpu.py), which owns the module layout,
the loops and the element-wise groups. The op registry's STRUCTURAL marker points here."""

from __future__ import annotations

from lstmc.codegen.common import Access, ir_comment
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

    def offset_index(self, offset: str, j: str) -> str:
        return f"_U({offset}) + {j}"


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
            else:  # into the prologue's workspace, steps [t0, t1) only
                self.panel_weights.add(w)
                self.take_work(L, out, m)
                part = f"(t1 - t0) * B, {self.size(vec.shape[0])}"
                L.add(
                    f"_matmul({v}[t0:t1].reshape({part}), {w}, "
                    f"{out}[t0:t1].reshape((t1 - t0) * B, {m}))"
                )
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
        phase = self.sched.phase[node.name]
        v, gamma, beta = node.operands
        n = self.size(node.shape[0])
        L.add(ir_comment(node))
        self.alloc(L, node, phase)
        ctxs = self.loops(L, phase, None)  # one row at a time
        row = "r" if phase == "step" else "b"

        def el(node, t, b, j):
            return self.acc.element(node, t, b, j, row=row)

        # Row statistics in float64, as the reference does (lstmc_runtime.rows).
        base, offset = self.sched.base(v)
        L.add(
            f"mean, inv = _mean_inv_std({self.row_array(base, phase)}, "
            f"{self.size(offset)}, {n}, {node.attrs['eps']!r})"
        )
        # The normalization in the kernel's type: float64 arithmetic would halve the SIMD lanes
        # and add two conversions an element (measured 1.4-1.7x the time of the whole hoisted
        # part at H=64..128). The mean goes in as hi + lo so that x - mean keeps its accuracy
        # when it cancels (rows with a large mean): x - hi is then exact (Sterbenz).
        L.add("mean_hi = _F(mean)")
        L.add("mean_lo = _F(mean - mean_hi)")
        L.add("inv_f = _F(inv)")
        L.add(f"for k in range(_U({n})):")
        L.add(
            f"    {el(node, 't', 'b', 'k')} = (({el(v, 't', 'b', 'k')} - mean_hi) - mean_lo) * "
            f"inv_f * {el(gamma, 't', 'b', 'k')} + {el(beta, 't', 'b', 'k')}"
        )
        self.close(ctxs)

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
