"""The Numba CPU target: an optimized graph becomes one readable Python module.

The module's `@njit` functions run the sequence: `_prologue` computes the values that depend
only on params, and the hoisted values of a range of timesteps and batch rows (the input
projection is one product over those steps' rows when it covers all rows, a product a step
over a thread's rows when the batch split gives each thread its own); `_rows` (a chunk of
batch rows) or `_cols` (a thread's share of the units, for all rows or a chunk of them) runs
the time loop: each step's products, then each element-wise group as one loop nest over
(batch, unit), whose row is cut into a loop per link of its chain of transcendental
functions (common.chain_stages), and which also computes the layer norms that only it reads
(cpu_ops.fold_layer_norms). Every product goes
through lstmc_runtime.gemm's register-blocked kernel, transcendentals through
lstmc_runtime.vmath, written so that LLVM vectorizes these loops. State lives in two buffers
per variable, swapped after each step. Every block carries the IR it came from as a comment.
"""

from __future__ import annotations

import contextlib

from lstmc.codegen.common import (
    DTYPES,
    EmitterBase,
    chain_stages,
    elementwise_expr,
    helpers_and_constants,
    ir_comment,
    size_expr,
)
from lstmc.codegen.common import (
    Lines as _Lines,
)
from lstmc.codegen.cpu_columns import ColumnsEmitter, column_plan
from lstmc.codegen.cpu_glue import CpuGlue
from lstmc.codegen.cpu_ops import CpuAccess, CpuStructuralOps, fold_layer_norms, norm_stages
from lstmc.codegen.module import module_header, module_tail, runtime_check_lines
from lstmc.codegen.schedule import Item
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size

TARGET = "cpu"
_VMATH = ("sigmoid", "tanh", "exp", "softplus")


class CpuEmitter(CpuGlue, ColumnsEmitter, CpuStructuralOps, EmitterBase):
    access_class = CpuAccess

    def __init__(
        self,
        graph: Graph,
        dtype: str = "float32",
        fixed: dict | None = None,
        info: dict | None = None,
    ):
        super().__init__(graph, dtype, fixed, info)
        self.unroll = int(graph.attrs.get("unroll", 1) or 1)
        self.columns = column_plan(graph, self.sched)
        # Layer norms that their reading group computes (cpu_ops.fold_layer_norms). Not in the
        # time loop of a column split: a thread there holds only its units of a row.
        folded = fold_layer_norms(graph, self.sched, in_step=self.columns is None)
        self.norms_of: dict[int, list[Node]] = {}  # id(group) -> the norms it computes
        for node in graph.find("layer_norm"):
            if node.name in folded:
                self.norms_of.setdefault(id(folded[node.name]), []).append(node)
                self.acc.folded[node.name] = tuple(
                    self.ns.get(prefix, node.name) for prefix in ("mhi", "mlo", "inv")
                )
        self.work_terms: list[str] | None = None  # set while the prologue is emitted
        # Packed weights by how the code reads them: through _matmul (lstmc_runtime.gemm),
        # which takes them in panels (kernel.pack lays them out so), or through np.dot, which
        # takes them row-major (products of constants, made once).
        self.panel_weights: set[str] = set()
        self.dot_weights: set[str] = set()
        self.hoisted_weights: set[str] = set()  # of the prologue's products over the steps

    # -- small helpers -------------------------------------------------------------------------

    def emit_wide_vectors(self, L) -> None:
        L.add("_wide_vectors()  # loops in 512-bit vectors on AVX-512 (lstmc_runtime.vmath)")

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
        L.add("from lstmc_runtime.step_products import load_step_products")
        L.add("from lstmc_runtime.step_products import matmul_step as _matmul")
        if self.columns is not None and self.columns.hoisted:
            L.add("from lstmc_runtime.layout import chunk_steps as _chunk_steps")
        L.add("from lstmc_runtime.layout import L2_BYTES as _L2_BYTES")
        L.add("from lstmc_runtime.layout import ALIGN_SLACK as _ALIGN_SLACK")
        L.add("from lstmc_runtime.layout import aligned_index as _aligned_index")
        L.add("from lstmc_runtime.kernel import CpuKernel, aligned_like")
        if self.graph.find("layer_norm"):
            L.add("from lstmc_runtime.rows import mean_inv_std as _mean_inv_std")
            L.add("from lstmc_runtime.rows import rows_mean_inv_std as _rows_mean_inv_std")
        L.add("from lstmc_runtime.signature import ArraySpec, Signature")
        if self.columns is not None:
            L.add("from lstmc_runtime.sync import barrier, started, until_caller_waits")
        L.lines += runtime_check_lines()
        L.add()
        L.add(f"_F = np.{self.dtype}")
        L.add("load_step_products(_F)  # products call it by name: before any function compiles")
        L.add("_U = np.uint64  # unit indices: see lstmc.codegen.cpu.CpuAccess")
        L.add("_ZERO = _F(0.0)")
        L.add("_ONE = _F(1.0)")
        L.add("_INF = _F(np.inf)")
        L.add("_NO_WORK = np.empty(0, _F)  # a workspace to grow on the first call")
        for fn in _VMATH:
            L.add(f"_vm_{fn} = _vmath.{fn}_{suffix}")
        L.add("_vm_log = np.log")
        L.add("_wide_vectors = _vmath.wide_vectors")
        L.lines += helpers_and_constants(
            nodes, TARGET, '@njit(inline="always", error_model="numpy")', self.ns, True
        )
        L.add()
        L.add()
        self.emit_sequence(L)
        L.lines += module_tail(self, TARGET)
        return "\n".join(L.lines).rstrip("\n") + "\n"

    # -- the two compiled functions -----------------------------------------------------------

    def split_hoisted(self) -> set[str]:
        """Hoisted products that `_cols` computes per thread (so `_prologue_units` skips)."""
        return set() if self.columns is None else self.columns.hoisted

    def prologue_values(self, skip: set[str] = frozenset()) -> list[Node]:
        """What `_prologue` computes and `_rows` reads: materialized once/seq values and
        scalars computed from constants (less the nodes in `skip`)."""
        values = []
        for phase in ("once", "seq"):
            for item in self.sched.items[phase]:
                for n in item.nodes:
                    if n.name in skip:
                        continue
                    if n.name in self.sched.materialized or not n.shape and n.kind == "elementwise":
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
        return ["x", *self.shared_args(), *self.size_args(), "work", "t0", "t1", "b0", "b1"]

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

    def emit_scalar_casts(self, L: _Lines, skip: set[str] = frozenset()) -> None:
        """Scalars that `_prologue` computed reach `_rows`/`_cols` through the Python glue as
        float64: back to the kernel's float type, so that a float32 step stays float32."""
        for n in self.prologue_values(skip):
            if not n.shape and n.name not in self.sched.materialized:
                name = self.value_name(n)
                L.add(f"{name} = _F({name})  # %{n.name}, a float64 after the glue")

    def emit_prologue(self, L: _Lines, name: str, skip: set[str]) -> None:
        L.add('@njit(cache=_CACHE, error_model="numpy", nogil=True)')
        L.add(f"def {name}({', '.join(self.prologue_args())}):")
        with L.indent():
            L.add(
                '"""What does not depend on the state, for steps [t0, t1) of rows [b0, b1): '
                'before the time loop."""'
                if not skip
                else '"""`_prologue` less the hoisted products that `_cols` computes per thread."""'
            )
            self.emit_wide_vectors(L)
            L.add("T = x.shape[0]")
            L.add("B = x.shape[1]")
            self.emit_fixed_sizes(L)
            body = _Lines()
            body.depth = L.depth
            self.work_terms = []  # the [T, B, n] buffers' n, as take_work carves them
            try:
                body.add("# ---- once: values of params and constants only")
                for item in self.sched.items["once"]:
                    self.emit_item(body, item)
                body.add("# ---- hoisted: values of the input alone, for all timesteps at once")
                for item in self.sched.items["seq"]:
                    if item.first.name not in skip:
                        self.emit_item(body, item)
            finally:
                terms, self.work_terms = self.work_terms, None
            if terms:
                L.add("# ---- the hoisted [T, B, n] buffers live in `work`, which the glue keeps")
                L.add("# for the next call on this thread: no allocation (and no page faults) a")
                L.add("# call. This call fills steps [t0, t1) of rows [b0, b1) of them: the glue")
                L.add("# calls it once with no steps to size `work`, then for all steps of its")
                L.add("# threads' chunks of rows.")
                L.add("# Each buffer starts on 128 bytes (the batch split's threads write their")
                L.add("# rows of it side by side): ALIGN_SLACK elements of room each.")
                L.add(f"need = T * B * ({' + '.join(terms)}) + {len(terms)} * _ALIGN_SLACK")
                L.add("if work.size < need:")
                L.add("    work = np.empty(need, _F)")
                L.add("wo = _aligned_index(work, 0)")
            L.lines += body.lines
            values = [self.value_name(n) for n in self.prologue_values(skip)] + ["work"]
            L.add("return (" + ", ".join(values) + ("," if len(values) == 1 else "") + ")")
        L.add()
        L.add()

    def emit_sequence(self, L: _Lines) -> None:
        self.emit_prologue(L, "_prologue", set())
        if self.split_hoisted() and self.prologue_values(self.split_hoisted()):
            self.emit_prologue(L, "_prologue_units", self.split_hoisted())
        L.add('@njit(cache=_CACHE, error_model="numpy", nogil=True)')
        L.add(f"def _rows({', '.join(self.rows_args())}):")
        with L.indent():
            L.add(
                '"""Run every timestep for batch rows [b0, b1). State arguments are those rows; the'
            )
            L.add(
                'final state is in the first buffer of each pair if T is even, else the second."""'
            )
            self.emit_wide_vectors(L)
            L.add("T = x.shape[0]")
            L.add("nb = b1 - b0")
            self.emit_fixed_sizes(L)
            self.emit_scalar_casts(L)
            L.add("# ---- buffers reused by every step")
            for item in self.sched.items["step"]:
                for n in item.nodes:
                    if n.name in self.sched.materialized:
                        L.add(
                            f"{self.acc.array(n)} = np.empty((nb, {self.size(n.shape[0])}), _F)"
                            f"  # %{n.name}"
                        )
                for n in self.norms_of.get(id(item), []):
                    L.add(
                        f"{self.stats_buffer(n)} = np.empty((3, nb))"
                        f"  # %{n.name}'s (mean, 1/std) per row, float64"
                    )
                if item.kind == "group":
                    self.emit_scratch(L, item, self.size(item.extent))
            self.emit_time_loop(L, self.emit_step)
        if self.columns is not None:
            L.add()
            L.add()
            self.emit_cols(L)

    def emit_time_loop(self, L: _Lines, emit_step) -> None:
        L.add("# ---- the time loop")
        if self.unroll > 1:
            L.add(f"t_main = T - T % {self.unroll}")
            L.add(f"for t0 in range(0, t_main, {self.unroll}):  # unrolled x{self.unroll}")
            with L.indent():
                for k in range(self.unroll):
                    L.add(f"t = t0 + {k}" if k else "t = t0")
                    emit_step(L)
            L.add("for t in range(t_main, T):")
        else:
            L.add("for t in range(T):")
        with L.indent():
            emit_step(L)

    def emit_step(self, L: _Lines) -> None:
        for item in self.sched.items["step"]:
            self.emit_item(L, item)
        self.emit_swaps(L)

    def emit_swaps(self, L: _Lines) -> None:
        for s in self.states:
            cur, nxt = self.acc.array(s), self.nxt(s.attrs["name"])
            L.add(f"{cur}, {nxt} = {nxt}, {cur}  # the new state becomes the current one")

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
        if phase == "seq":  # in the prologue: the steps [t0, t1) and rows [b0, b1) it computes
            L.add(
                "for t in range(t0, t1):" if self.work_terms is not None else "for t in range(T):"
            )
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        if phase == "seq":
            L.add(
                "for b in range(b0, b1):" if self.work_terms is not None else "for b in range(B):"
            )
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        if phase == "step":  # rows of this chunk: r indexes state and buffers, b the batch
            L.add("for r in range(nb):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
            L.add("b = b0 + r")
        if extent is not None:
            L.add(f"for j in range(_U({extent})):")
            ctxs.append(L.indent())
            ctxs[-1].__enter__()
        return ctxs

    def close(self, ctxs) -> None:
        for c in reversed(ctxs):
            c.__exit__(None, None, None)

    def alloc(self, L: _Lines, node: Node, phase: str) -> None:
        n = self.size(node.shape[0])
        if phase == "seq" and self.work_terms is not None:
            self.take_work(L, self.acc.array(node), n)
            return
        shape = {"once": f"({n},)", "seq": f"(T, B, {n})"}.get(phase)
        if shape:  # step buffers are allocated once, before the time loop
            L.add(f"{self.acc.array(node)} = np.empty({shape}, _F)")

    def take_work(self, L: _Lines, name: str, n: str) -> None:
        """`name` = the next [T, B, n] block of the prologue's workspace (emit_prologue)."""
        n = n if n.replace("_", "").replace(" * ", "").isalnum() else f"({n})"
        L.add(f"{name} = work[wo : wo + T * B * {n}].reshape((T, B, {n}))")
        L.add(f"wo = _aligned_index(work, wo + T * B * {n})")
        self.work_terms.append(n)

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
        norms = self.norms_of.get(id(item), [])
        # The row statistics of the layer norms this group computes: in the time loop, for
        # all of the chunk's rows at once into a small buffer (emit_rows_stats), else a row
        # at a time in the loop over rows.
        if item.phase == "step":
            for node in norms:
                self.emit_rows_stats(L, node)
        stages = self.staged_group_lines(
            item,
            TARGET,
            "t",
            "b",
            "j",
            self.row(item),
            lambda sink: self.sink_target(sink, "j"),
            self.stage_of(item),
            "j",
        )
        whole_loop = not norms and len(stages) == 1
        ctxs = self.loops(L, item.phase, self.size(item.extent) if whole_loop else None)
        for node in norms:
            self.emit_row_stats(L, node, item.phase, self.acc.folded[node.name])
        for k, lines in enumerate(stages):
            if not whole_loop:
                if len(stages) > 1:
                    L.add(f"# loop {k + 1} of {len(stages)} over the row ({self.stages_why(item)})")
                L.add(f"for j in range(_U({self.size(item.extent)})):")
            with contextlib.nullcontext() if whole_loop else L.indent():
                for line in lines:
                    L.add(line)
        self.close(ctxs)

    def stage_of(self, item: Item) -> dict[str, int] | None:
        """The loops a time-loop group's row is cut into (common.chain_stages, after a loop
        for each tree of arithmetic on its layer norms: cpu_ops.norm_stages); None elsewhere:
        the prologue's groups run over long rows of steps without a chain to hide."""
        if item.phase != "step":
            return None
        stages = chain_stages(item.nodes, TARGET)
        norms = self.norms_of.get(id(item))
        if norms:
            stages = norm_stages(item.nodes, stages, {n.name for n in norms}, TARGET)
        return stages

    def stages_why(self, item: Item) -> str:
        """The function that cut a group's row into its loops, for the loops' comments."""
        by_chains = chain_stages(item.nodes, TARGET)
        return "common.chain_stages" if self.stage_of(item) == by_chains else "cpu_ops.norm_stages"

    def emit_scratch(self, L: _Lines, item: Item, extent: str) -> None:
        """The row scratch of the values that a later loop of the group's row reads."""
        stage_of = self.stage_of(item)
        for n in self.crossing(item, stage_of) if stage_of else []:
            L.add(f"{self.scratch_name(n)} = np.empty({extent}, _F)  # %{n.name}, a row of it")


def generate(
    graph: Graph, dtype: str = "float32", fixed: dict | None = None, info: dict | None = None
) -> str:
    """Python source of the CPU module for an optimized graph."""
    return CpuEmitter(graph, dtype, fixed, info).source()
