"""The Numba CPU target: an optimized graph becomes one readable Python module.

The module holds one `@njit` function, `_sequence`, that runs the whole sequence: values that
depend only on params are computed once, hoisted values for all timesteps at once (the input
projection is one GEMM over T*B rows), then the time loop runs each step's products as BLAS
calls (`np.dot` into preallocated buffers) and each element-wise group as one loop nest over
(batch, unit). Transcendentals come from `lstmc_runtime.vmath`, written so that LLVM vectorizes
these loops. State lives in two buffers per variable, swapped after each step. Every block
carries the IR it came from as a comment.
"""

from __future__ import annotations

from lstmc.codegen.common import (
    DTYPES,
    EmitterBase,
    elementwise_expr,
    helpers_and_constants,
    ir_comment,
    size_expr,
)
from lstmc.codegen.cpu_ops import CpuStructuralOps
from lstmc.codegen.module import lookup, module_header, module_tail
from lstmc.codegen.schedule import Item
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size

TARGET = "cpu"
_VMATH = ("sigmoid", "tanh", "exp", "softplus")


class _Lines:
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


class CpuEmitter(CpuStructuralOps, EmitterBase):
    def __init__(
        self,
        graph: Graph,
        dtype: str = "float32",
        fixed: dict | None = None,
        info: dict | None = None,
    ):
        super().__init__(graph, dtype, fixed, info)
        self.unroll = int(graph.attrs.get("unroll", 1) or 1)

    # -- small helpers -------------------------------------------------------------------------

    def size(self, s: Size) -> str:
        return size_expr(s, self.fixed, self.ns)

    def sink_target(self, sink: Node, j: str) -> str:
        if sink.op == "output":
            return f"{self.y(sink.attrs['name'])}[t, b, {j}]"
        return f"{self.nxt(sink.attrs['name'])}[r, {j}]"

    # -- the module ----------------------------------------------------------------------------

    def source(self) -> str:
        L = _Lines()
        suffix = DTYPES[self.dtype]
        nodes = self.graph.nodes()
        L.lines += module_header(self.graph, self.info, TARGET, self.dtype)
        L.add("import numpy as np")
        L.add("from numba import njit")
        L.add()
        L.add("from lstmc_runtime import vmath as _vmath")
        L.add("from lstmc_runtime.kernel import CpuKernel")
        L.add("from lstmc_runtime.signature import ArraySpec, Signature")
        L.add()
        L.add(f"_F = np.{self.dtype}")
        L.add("_ZERO = _F(0.0)")
        L.add("_ONE = _F(1.0)")
        L.add("_INF = _F(np.inf)")
        for fn in _VMATH:
            L.add(f"_vm_{fn} = _vmath.{fn}_{suffix}")
        L.add("_vm_log = np.log")
        L.lines += helpers_and_constants(
            nodes, TARGET, '@njit(inline="always", error_model="numpy")', self.ns
        )
        L.add()
        L.add()
        self.emit_sequence(L)
        L.lines += module_tail(self, TARGET)
        return "\n".join(L.lines).rstrip("\n") + "\n"

    # -- the two compiled functions -----------------------------------------------------------

    def prologue_values(self) -> list[Node]:
        """What `_prologue` computes and `_rows` reads: materialized once/seq values and
        scalars computed from constants."""
        values = []
        for phase in ("once", "seq"):
            for item in self.sched.items[phase]:
                for n in item.nodes:
                    if n.name in self.sched.materialized:
                        values.append(n)
                    elif not n.shape and n.kind == "elementwise":
                        values.append(n)
        return values

    def value_name(self, n: Node) -> str:
        return self.acc.array(n) if n.shape else self.acc.scalar_var(n)

    def shared_args(self) -> list[str]:
        args = [w.name for w in self.sched.weights.values()]
        args += [self.ns.get("p", p) for p in self.sched.vector_params]
        return args

    def size_args(self) -> list[str]:
        return [
            self.ns.get("n", s) for s in self.graph.attrs.get("sizes", ()) if s not in self.fixed
        ]

    def prologue_args(self) -> list[str]:
        return ["x", *self.shared_args(), *self.size_args()]

    def rows_args(self) -> list[str]:
        args = ["b0", "b1", "x"]
        for s in self.states:
            args += [self.acc.array(s), self.nxt(s.attrs["name"])]
        args += [self.value_name(n) for n in self.prologue_values()]
        args += self.shared_args()
        args += [self.y(o.attrs["name"]) for o in self.outputs]
        return args + self.size_args()

    def emit_fixed_sizes(self, L: _Lines) -> None:
        for sym, value in self.fixed.items():
            L.add(f"{self.ns.get('n', sym)} = {value}  # fixed at compile time")

    def emit_sequence(self, L: _Lines) -> None:
        L.add('@njit(cache=True, error_model="numpy", nogil=True)')
        L.add(f"def _prologue({', '.join(self.prologue_args())}):")
        with L.indent():
            L.add(
                '"""What does not depend on the state: computed once per call, before the '
                'time loop."""'
            )
            L.add("T = x.shape[0]")
            L.add("B = x.shape[1]")
            self.emit_fixed_sizes(L)
            L.add("# ---- once: values of params and constants only")
            for item in self.sched.items["once"]:
                self.emit_item(L, item)
            L.add("# ---- hoisted: values of the input alone, for all timesteps at once")
            for item in self.sched.items["seq"]:
                self.emit_item(L, item)
            values = [self.value_name(n) for n in self.prologue_values()]
            L.add("return (" + ", ".join(values) + ("," if len(values) == 1 else "") + ")")
        L.add()
        L.add()
        L.add('@njit(cache=True, error_model="numpy", nogil=True)')
        L.add(f"def _rows({', '.join(self.rows_args())}):")
        with L.indent():
            L.add(
                '"""Run every timestep for batch rows [b0, b1). State arguments are those rows; the'
            )
            L.add(
                'final state is in the first buffer of each pair if T is even, else the second."""'
            )
            L.add("T = x.shape[0]")
            L.add("nb = b1 - b0")
            self.emit_fixed_sizes(L)
            L.add("# ---- buffers reused by every step")
            for item in self.sched.items["step"]:
                for n in item.nodes:
                    if n.name in self.sched.materialized:
                        L.add(
                            f"{self.acc.array(n)} = np.empty((nb, {self.size(n.shape[0])}), _F)"
                            f"  # %{n.name}"
                        )
            L.add("# ---- the time loop")
            if self.unroll > 1:
                L.add(f"t_main = T - T % {self.unroll}")
                L.add(f"for t0 in range(0, t_main, {self.unroll}):  # unrolled x{self.unroll}")
                with L.indent():
                    for k in range(self.unroll):
                        L.add(f"t = t0 + {k}" if k else "t = t0")
                        self.emit_step(L)
                L.add("for t in range(t_main, T):")
            else:
                L.add("for t in range(T):")
            with L.indent():
                self.emit_step(L)

    def emit_step(self, L: _Lines) -> None:
        for item in self.sched.items["step"]:
            self.emit_item(L, item)
        for s in self.states:
            cur, nxt = self.acc.array(s), self.nxt(s.attrs["name"])
            L.add(f"{cur}, {nxt} = {nxt}, {cur}  # the new state becomes the current one")

    def launch_lines(self) -> list[str]:
        """`_launch`: the run-time glue from checked, packed arguments to the two functions."""
        ns = self.ns

        def arg(a: str, rows: bool) -> str:
            if a == "x":
                return "x"
            if (key := lookup(ns, "st", a)) is not None:
                return f"state[{key!r}][b0:b1]"
            if (key := lookup(ns, "nx", a)) is not None:
                return f"spare[{key!r}][b0:b1]"
            if a in {w.name for w in self.sched.weights.values()}:
                return f"arrays[{a!r}]"
            if (key := lookup(ns, "p", a)) is not None:
                return f"arrays[{key!r}]"
            if (key := lookup(ns, "y", a)) is not None:
                return f"outputs[{key!r}]"
            if (key := lookup(ns, "n", a)) is not None:
                return f"sizes[{key!r}]"
            raise AssertionError(a)

        pro = [self.value_name(n) for n in self.prologue_values()]
        lines = [
            "def _launch(x, state, arrays, outputs, sizes, run_chunks):",
            '    """Run the prologue, then the time loop on chunks of batch rows (in parallel when',
            '    `run_chunks` splits the batch), and return the final state. Run-time glue."""',
            "    pro = _prologue(" + ", ".join(arg(a, False) for a in self.prologue_args()) + ")",
            "    spare = {name: np.empty_like(a) for name, a in state.items()}",
            "",
            "    def rows(b0, b1):",
            "        _rows(",
        ]
        for a in self.rows_args():
            if a in ("b0", "b1"):
                lines.append(f"            {a},")
            elif a in pro:
                lines.append(f"            pro[{pro.index(a)}],")
            else:
                lines.append(f"            {arg(a, True)},")
        lines += [
            "        )",
            "",
            "    run_chunks(rows, x.shape[1])",
            "    return state if x.shape[0] % 2 == 0 else spare",
        ]
        return lines

    # -- items ---------------------------------------------------------------------------------

    def emit_item(self, L: _Lines, item: Item) -> None:
        if item.kind == "group":
            self.emit_group(L, item)
            return
        node = item.first
        if not node.shape and node.kind == "elementwise":
            ops = [self.acc.element(o, "0", "0", "0") for o in node.operands]
            L.add(
                f"{self.acc.scalar_var(node)} = {elementwise_expr(node, ops, TARGET)}"
                f"  {ir_comment(node)}"
            )
            return
        getattr(self, f"emit_{node.op}")(L, node)

    def loops(self, L: _Lines, phase: str, extent: str | None) -> list:
        """Open the loops of a phase (and over j < extent unless None); returns the context
        managers to close."""
        ctxs = []
        if phase == "seq":
            L.add("for t in range(T):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        if phase == "seq":
            L.add("for b in range(B):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        if phase == "step":  # rows of this chunk: r indexes state and buffers, b the batch
            L.add("for r in range(nb):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
            L.add("b = b0 + r")
        if extent is not None:
            L.add(f"for j in range({extent}):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        return ctxs

    def close(self, ctxs) -> None:
        for c in reversed(ctxs):
            c.__exit__(None, None, None)

    def alloc(self, L: _Lines, node: Node, phase: str) -> None:
        n = self.size(node.shape[0])
        shape = {"once": f"({n},)", "seq": f"(T, B, {n})"}.get(phase)
        if shape:  # step buffers are allocated once, before the time loop
            L.add(f"{self.acc.array(node)} = np.empty({shape}, _F)")

    @staticmethod
    def row(item: Item) -> str:
        return "r" if item.phase == "step" else "b"

    @staticmethod
    def row_of(phase: str) -> str:
        return "r" if phase == "step" else "b"

    def emit_group(self, L: _Lines, item: Item) -> None:
        L.add(f"# element-wise group: {', '.join('%' + n.name for n in item.nodes)}")
        for n in item.nodes:
            if n.name in self.sched.materialized:
                self.alloc(L, n, item.phase)
        ctxs = self.loops(L, item.phase, self.size(item.extent))
        row = self.row(item)
        for line in self.group_lines(
            item, TARGET, "t", "b", "j", row, lambda sink: self.sink_target(sink, "j")
        ):
            L.add(line)
        self.close(ctxs)


def generate(
    graph: Graph, dtype: str = "float32", fixed: dict | None = None, info: dict | None = None
) -> str:
    """Python source of the CPU module for an optimized graph."""
    return CpuEmitter(graph, dtype, fixed, info).source()
