"""The Numba CUDA target: an optimized graph becomes one readable Python module of CUDA kernels.

It reads the same schedule as the CPU target (lstmc.codegen.schedule) and emits:

- for the `once` and `seq` phases (values of params alone, and of the input alone for all
  timesteps at once): element-wise kernels over all rows, layer_norm/concat kernels, and the
  hoisted products as one tiled matrix product over all T*B rows (`lstmc_runtime.cuda`);
- for each timestep, *launches*: a step's products fused with the element-wise group that reads
  them (a thread computes rows `off_k + j` of each packed product for its (b, j), then the
  group's scalar code, then the stores to the next state and the outputs), as a register-tiled
  product with the element-wise code as its epilogue. A product whose users are not all in one
  group is stored by a launch of its own; layer_norm, concat and leftover sink copies get
  theirs. Adjacent launches over the same units merge when no value crosses between (b, j)s;
- the stepwise variant: the host runs those launches once per timestep, the state double
  buffered on the device;
- the persistent variant: one cooperative kernel runs the whole sequence, the launches become
  phases separated by grid-wide syncs, and each block keeps the weight columns of the units it
  owns in shared memory for all timesteps; each group of lanes reduces one unit's dot products
  for ROWS batch rows with a butterfly of warp shuffles.

The run-time object (`lstmc_runtime.cuda.CudaKernel`) picks the variant and the launch shapes
from the sizes and the device. Element-wise code comes from the ops' "cuda" rules; every kernel
carries the IR it computes as comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lstmc.codegen.common import (
    Access,
    Namespace,
    elementwise_expr,
    helper_source,
    helpers_used,
    ir_comment,
    size_expr,
)
from lstmc.codegen.module import module_header, module_tail
from lstmc.codegen.schedule import Item, Schedule, schedule
from lstmc.errors import CodegenError
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size

TARGET = "cuda"
ROWS = 4  # batch rows per lane group in the persistent kernel (its accumulators are unrolled)
_VMATH = ("sigmoid", "tanh", "exp", "log", "softplus")
_PRODUCTS = ("matvec", "packed_matvec")
_PHASE_TITLES = {
    "once": "# ---- once: values of params and constants only",
    "seq": "# ---- hoisted: values of the input alone, for all timesteps at once",
}


class _Lines:
    def __init__(self, depth: int = 0):
        self.lines: list[str] = []
        self.depth = depth

    def add(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    def extend(self, lines: list[str]) -> None:
        for ln in lines:
            self.add(ln)

    def indent(self, n: int = 1):
        lines = self

        class _Ctx:
            def __enter__(self):
                lines.depth += n

            def __exit__(self, *a):
                lines.depth -= n

        return _Ctx()


@dataclass
class Source:
    """The products of one launch that share a right operand: their dot products run over the
    same vector, `cols` are (product, first row) column blocks of their packed weights."""

    vec: Node
    cols: list[tuple[Node, Size]] = field(default_factory=list)


@dataclass
class Launch:
    """One kernel launch of a step (one phase of the persistent kernel)."""

    kind: str  # "fused" | "norm" | "concat" | "copy"
    extent: Size | None = None
    groups: list[Item] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    stores: list[Node] = field(default_factory=list)  # products stored whole (+ their sinks)
    node: Node | None = None  # layer_norm / concat
    sinks: list[Node] = field(default_factory=list)  # copies

    def ncols(self) -> int:
        return sum(len(s.cols) for s in self.sources)

    def columns(self) -> list[tuple[Source, Node, Size]]:
        return [(s, p, off) for s in self.sources for p, off in s.cols]


class CudaAccess(Access):
    """Access that reads fused products from the dot-product locals of the current launch."""

    def __init__(self, sched: Schedule, ns: Namespace, fixed: dict | None):
        super().__init__(sched, ns, fixed)
        self.dots: dict[tuple[str, Size], str] = {}

    def element(self, node: Node, t: str, b: str, j: str, in_group=None, **kw) -> str:
        if node.kind != "source":
            base, off = self.sched.base(node)
            var = self.dots.get((base.name, off))
            if var is not None:
                return var
        return super().element(node, t, b, j, in_group, **kw)


class CudaEmitter:
    def __init__(
        self,
        graph: Graph,
        dtype: str = "float32",
        fixed: dict | None = None,
        info: dict | None = None,
    ):
        if dtype not in ("float32", "float64"):
            raise CodegenError(f"the CUDA target supports float32 and float64, not {dtype}")
        self.graph = graph
        self.sched: Schedule = schedule(graph)
        self.dtype = dtype
        self.fixed = dict(fixed or {})
        self.info = dict(info or {})
        self.ns = Namespace()
        self.acc = CudaAccess(self.sched, self.ns, self.fixed)
        self.states = graph.find("state")
        self.outputs = graph.find("output")
        self.kernels: dict[str, tuple[list[str], str]] = {}  # name -> (args, type codes)
        self.fused_into: dict[str, Item] = self._fusable_products()
        self.launches: list[Launch] = self._plan_step()
        self.buffers = self._buffers()
        self.host_vars = self._host_vars()

    # -- small helpers -------------------------------------------------------------------------

    def size(self, s: Size) -> str:
        """A size as an expression that is safe as an operand anywhere (`(3 * n_input)`)."""
        text = size_expr(s, self.fixed, self.ns)
        return f"({text})" if " " in text and not text.startswith("(") else text

    def nxt(self, state_name: str) -> str:
        return self.ns.get("nx", state_name)

    def y(self, out_name: str) -> str:
        return self.ns.get("y", out_name)

    def weight(self, product: Node) -> str:
        return self.sched.weights[product.name].name

    def sink_target(self, sink: Node, b: str, j: str) -> str:
        if sink.op == "output":
            return f"{self.y(sink.attrs['name'])}[t, {b}, {j}]"
        return f"{self.nxt(sink.attrs['name'])}[{b}, {j}]"

    def phase_of(self, node: Node) -> str:
        if node.op == "state":
            return "step"
        if node.op == "param":
            return "once"
        return self.sched.phase[node.name]

    # -- planning ------------------------------------------------------------------------------

    def _fusable_products(self) -> dict[str, Item]:
        """Step products whose every user (through slices) is an element-wise node of one
        step group: that group's launch computes the rows it reads, nothing stores them."""
        out = {}
        for n in self.graph.nodes():
            if n.op not in _PRODUCTS or self.sched.phase[n.name] != "step":
                continue
            groups, ok, stack = set(), True, [n]
            while stack and ok:
                for u in self.graph.users(stack.pop()):
                    if u.op == "slice":
                        stack.append(u)
                    elif u.kind == "elementwise" and u.name in self.sched.group_of:
                        groups.add(id(self.sched.group_of[u.name]))
                        item = self.sched.group_of[u.name]
                    else:
                        ok = False
            if ok and len(groups) == 1 and item.phase == "step":
                out[n.name] = item
        return out

    def _group_launch(self, item: Item) -> Launch:
        launch = Launch("fused", item.extent, groups=[item])
        by_vec: dict[str, Source] = {}
        seen = set()
        for n in item.nodes:
            for o in n.operands:
                base, off = self.sched.base(o)
                if self.fused_into.get(base.name) is not item or (base.name, off) in seen:
                    continue
                seen.add((base.name, off))
                vec = base.operands[-1] if base.op == "matvec" else base.operands[0]
                src = by_vec.get(vec.name)
                if src is None:
                    src = by_vec[vec.name] = Source(vec)
                    launch.sources.append(src)
                src.cols.append((base, off))
        return launch

    def _plan_step(self) -> list[Launch]:
        launches: list[Launch] = []
        copies: list[Node] = []
        stored = set()
        for item in self.sched.items["step"]:
            if item.kind == "group":
                launches.append(self._group_launch(item))
                continue
            node = item.first
            if node.op in _PRODUCTS:
                if node.name in self.fused_into:
                    continue
                vec = node.operands[-1] if node.op == "matvec" else node.operands[0]
                launches.append(
                    Launch(
                        "fused",
                        node.shape[0],
                        sources=[Source(vec, [(node, Size())])],
                        stores=[node],
                    )
                )
                stored.add(node.name)
            elif node.op in ("layer_norm", "concat"):
                launches.append(Launch("norm" if node.op == "layer_norm" else "concat", node=node))
            elif node.kind == "sink":
                src = node.operands[0]
                item_of = self.sched.group_of.get(src.name)
                if (item_of is not None and item_of.phase == "step") or src.name in stored:
                    continue  # stored by the launch that computes it
                copies.append(node)
            elif node.op in ("slice", "param_cols") or node.kind == "source":
                continue
            elif node.kind == "elementwise" and not node.shape:
                continue  # scalars are computed at the top of every kernel
            else:
                raise CodegenError(
                    f"the CUDA target can not emit %{node.name} ({node.op}) in the time loop"
                )
        merged: list[Launch] = []
        for launch in launches:
            if merged and self._can_merge(merged[-1], launch):
                prev = merged[-1]
                prev.groups += launch.groups
                prev.stores += launch.stores
                for src in launch.sources:
                    same = next((s for s in prev.sources if s.vec is src.vec), None)
                    if same is None:
                        prev.sources.append(src)
                    else:
                        same.cols += src.cols
            else:
                merged.append(launch)
        if copies:
            merged.append(Launch("copy", sinks=copies))
        return merged

    def _produced(self, launch: Launch) -> set[str]:
        names = {n.name for g in launch.groups for n in g.nodes}
        return names | {p.name for p in launch.stores}

    def _can_merge(self, a: Launch, b: Launch) -> bool:
        """b can run in a's kernel when both cover the same (b, j)s and b reads a's values only
        at its own (b, j): no product of b multiplies a value a computes."""
        if a.kind != "fused" or b.kind != "fused" or a.extent != b.extent:
            return False
        made = self._produced(a)
        for src in b.sources:
            if self.sched.base(src.vec)[0].name in made:
                return False
        for g in b.groups:
            for n in g.nodes:
                for o in n.operands:
                    if self.sched.group_of.get(o.name) is g:
                        continue
                    base, off = self.sched.base(o)
                    if base.name in made and off != Size():
                        return False
        return True

    def _buffers(self) -> list[Node]:
        """Values that live in device buffers, in order: materialized ones that no launch
        computes in registers."""
        return [
            n
            for n in self.graph.nodes()
            if n.name in self.sched.materialized
            and n.name not in self.fused_into
            and n.shape
            and n.kind != "source"
        ]

    def _host_vars(self) -> list[tuple[str, str]]:
        """Every array or integer a kernel may take, with its type code, in argument order."""
        out = [("x", "a3")]
        for s in self.states:
            out += [(self.acc.array(s), "a2"), (self.nxt(s.attrs["name"]), "a2")]
        out += [(w.name, "a2") for w in self.sched.weights.values()]
        out += [(self.ns.get("p", p), "a1") for p in self.sched.vector_params]
        ndim = {"once": "a1", "seq": "a3", "step": "a2"}
        out += [(self.acc.array(n), ndim[self.sched.phase[n.name]]) for n in self.buffers]
        out += [(self.y(o.attrs["name"]), "a3") for o in self.outputs]
        out += [("t", "i"), ("T", "i"), ("B", "i")]
        out += [
            (self.ns.get("n", s), "i")
            for s in self.graph.attrs.get("sizes", ())
            if s not in self.fixed
        ]
        return out

    # -- the module ----------------------------------------------------------------------------

    def source(self) -> str:
        L = _Lines()
        nodes = self.graph.nodes()
        L.lines += module_header(self.graph, self.info, TARGET, self.dtype)
        L.add("import math")
        L.add()
        L.add("import numpy as np")
        L.add("from numba import cuda")
        L.add()
        L.add("from lstmc_runtime import cuda as _rt")
        L.add("from lstmc_runtime.cuda import CudaKernel")
        L.add("from lstmc_runtime.signature import ArraySpec, Signature")
        L.add()
        L.add(f"_F = np.{self.dtype}")
        L.add("_NT = _rt.numba_type(_F)  # the kernel's float type, for shared and local arrays")
        L.add("_F64 = _rt.F64")
        L.add("_ITEM = np.dtype(_F).itemsize")
        L.add("_ZERO = _F(0.0)")
        L.add("_ONE = _F(1.0)")
        L.add("_INF = _F(np.inf)")
        L.add("# stepwise tile: batch rows x units per block, reduction chunk, per thread")
        L.add("_BM, _BN, _BK, _TM, _TN = _rt.STEP_TILE")
        L.add("_DM = _rt.device_math(_F)")
        for fn in _VMATH:
            L.add(f"_vm_{fn} = _DM.{fn}")
        for name in helpers_used(nodes, TARGET):
            L.add()
            L.add()
            L.add('@cuda.jit(device=True, inline="always")')
            L.lines += helper_source(name).rstrip("\n").split("\n")
        L.add()
        L.add()
        L.add("# Constants of the cell, in the kernel's float type.")
        for n in nodes:
            if n.op == "const":
                L.add(f"{self.ns.get('k', n.name)} = _F({n.attrs['value']!r})  {ir_comment(n)}")
        self.scalars = self._scalar_lines()
        self.host: list[str] = []  # the body of _launch, built with the kernels
        self._emit_prologue(L)
        self._emit_step(L)
        L.lines += module_tail(self, TARGET)
        return "\n".join(L.lines).rstrip("\n") + "\n"

    def _scalar_lines(self) -> list[str]:
        out = []
        for item in self.sched.items["once"]:
            n = item.first
            if item.kind == "node" and n.kind == "elementwise" and not n.shape:
                ops = [self.acc.element(o, "0", "0", "0") for o in n.operands]
                out.append(
                    f"{self.acc.scalar_var(n)} = {elementwise_expr(n, ops, TARGET)}"
                    f"  {ir_comment(n)}"
                )
        return out

    # -- kernels -------------------------------------------------------------------------------

    def kernel(
        self,
        L: _Lines,
        name: str,
        doc: str,
        body: list[str],
        exclude: tuple = (),
        extra: tuple = (),
    ) -> list[str]:
        """Emit `@cuda.jit def name(args)` whose arguments are the host variables its body
        uses; returns the argument names."""
        code = "\n".join(ln.split("#", 1)[0] for ln in body)
        args, codes = [], []
        for ident, kind in self.host_vars:
            if ident not in exclude and re.search(rf"(?<![\w.]){re.escape(ident)}\b", code):
                args.append(ident)
                codes.append(kind)
        for ident, kind in extra:
            args.append(ident)
            codes.append(kind)
        self.kernels[name] = (args, " ".join(codes))
        L.add()
        L.add()
        L.add("@cuda.jit(cache=True)")
        L.add(f"def {name}({', '.join(args)}):")
        with L.indent():
            L.add(f'"""{doc}"""')
            L.extend(body)
        return args

    def epilogue(self, launch: Launch, t: str = "t", b: str = "b", j: str = "j") -> list[str]:
        """The scalar code of a launch for one (b, j): its groups, then stores."""
        out = []
        for item in launch.groups:
            out.append(f"# element-wise group: {', '.join('%' + n.name for n in item.nodes)}")
            for n in item.nodes:
                ops = [self.acc.element(o, t, b, j, item) for o in n.operands]
                var = self.acc.scalar_var(n)
                out.append(f"{var} = {elementwise_expr(n, ops, TARGET)}  {ir_comment(n)}")
                if n.name in self.sched.materialized:
                    out.append(f"{self.acc.element(n, t, b, j)} = {var}")
                if item.phase == "step":
                    for user in self.graph.users(n):
                        if user.kind == "sink":
                            out.append(
                                f"{self.sink_target(user, b, j)} = {var}  # {user.op} "
                                f"{user.attrs['name']}"
                            )
        for p in launch.stores:
            var = self.acc.dots[(p.name, Size())]
            out.append(f"{self.acc.array(p)}[{b}, {j}] = {var}  {ir_comment(p)}")
            for user in self.graph.users(p):
                if user.kind == "sink":
                    out.append(
                        f"{self.sink_target(user, b, j)} = {var}  # {user.op} {user.attrs['name']}"
                    )
        return out

    def bind_dots(self, launch: Launch) -> list[str]:
        """Name the launch's dot products (d_...) and return their IR comments."""
        self.acc.dots = {}
        comments = []
        for m, (_src, p, off) in enumerate(launch.columns()):
            self.acc.dots[(p.name, off)] = self.ns.get("d", f"{p.name}_{m}")
        for p in dict.fromkeys(p for _s, p, _o in launch.columns()):
            comments.append(ir_comment(p))
        return comments

    def row_decomp(self, phase: str, idx: str, extent: str) -> list[str]:
        if phase == "once":
            return [f"j = {idx}"]
        if phase == "seq":
            return [
                f"r = {idx} // {extent}",
                f"j = {idx} - r * {extent}",
                "t = r // B",
                "b = r - t * B",
            ]
        return [f"b = {idx} // {extent}", f"j = {idx} - b * {extent}"]

    def rows_expr(self, phase: str) -> str:
        return {"once": "1", "seq": "T * B", "step": "B"}[phase]

    def pointwise_body(self, launch: Launch, phase: str) -> list[str]:
        E = self.size(launch.extent)
        body = list(self.scalars)
        body.append(
            f"for idx in range(cuda.grid(1), {self.rows_expr(phase)} * {E}, cuda.gridsize(1)):"
        )
        body += ["    " + ln for ln in self.row_decomp(phase, "idx", E)]
        body += ["    " + ln for ln in self.epilogue(launch)]
        return body

    def ln_lines(self, node: Node, t: str, b: str) -> list[str]:
        """layer_norm of one row by the threads of a block (tid < nthr, a power of two),
        statistics in float64 through the shared scratch `red`."""
        v, gamma, beta = node.operands
        n = self.size(node.shape[0])
        self.acc.dots = {}
        el = self.acc.element

        def tree():
            return [
                "red[tid] = s",
                "cuda.syncthreads()",
                "h = nthr // 2",
                "while h > 0:",
                "    if tid < h:",
                "        red[tid] += red[tid + h]",
                "    cuda.syncthreads()",
                "    h //= 2",
            ]

        return [
            ir_comment(node),
            "s = 0.0",
            f"for k in range(tid, {n}, nthr):",
            f"    s += np.float64({el(v, t, b, 'k')})",
            *tree(),
            f"mean = red[0] / {n}",
            "cuda.syncthreads()",
            "s = 0.0",
            f"for k in range(tid, {n}, nthr):",
            f"    d = np.float64({el(v, t, b, 'k')}) - mean",
            "    s += d * d",
            *tree(),
            f"inv = 1.0 / math.sqrt(red[0] / {n} + {node.attrs['eps']!r})",
            "cuda.syncthreads()",
            f"for k in range(tid, {n}, nthr):",
            (
                f"    {el(node, t, b, 'k')} = _F((np.float64({el(v, t, b, 'k')}) - mean) * inv) "
                f"* {el(gamma, t, b, 'k')} + {el(beta, t, b, 'k')}"
            ),
        ]

    def norm_body(self, node: Node, phase: str, first: str, step: str) -> list[str]:
        body = list(self.scalars)
        body += [f"for r in range({first}, {self.rows_expr(phase)}, {step}):"]
        if phase == "seq":
            body += ["    t = r // B", "    b = r - t * B"]
        elif phase == "step":
            body += ["    b = r"]
        body += ["    " + ln for ln in self.ln_lines(node, "t", "b")]
        return body

    def concat_lines(self, node: Node, phase: str, first: str, step: str) -> list[str]:
        self.acc.dots = {}
        out = [ir_comment(node)]
        start = Size()
        for part in node.operands:
            n = self.size(part.shape[0])
            out.append(f"for idx in range({first}, {self.rows_expr(phase)} * {n}, {step}):")
            out += ["    " + ln for ln in self.row_decomp(phase, "idx", n)]
            dest = self.acc.element(
                node, "t", "b", "j" if start == Size() else f"{self.size(start)} + j"
            )
            out.append(f"    {dest} = {self.acc.element(part, 't', 'b', 'j')}")
            start = start + part.shape[0]
        return out

    def copy_lines(self, launch: Launch, first: str, step: str) -> list[str]:
        self.acc.dots = {}
        out = []
        for sink in launch.sinks:
            src = sink.operands[0]
            n = self.size(sink.shape[0])
            out.append(ir_comment(sink))
            out.append(f"for idx in range({first}, B * {n}, {step}):")
            out += ["    " + ln for ln in self.row_decomp("step", "idx", n)]
            out.append(
                f"    {self.sink_target(sink, 'b', 'j')} = {self.acc.element(src, 't', 'b', 'j')}"
            )
        return out

    # -- once and seq phases -------------------------------------------------------------------

    def _emit_prologue(self, L: _Lines) -> None:
        H = self.host
        count = 0
        for phase in ("once", "seq"):
            H.append(_PHASE_TITLES[phase])
            for item in self.sched.items[phase]:
                node = item.first
                if item.kind == "node" and node.kind == "elementwise" and not node.shape:
                    continue
                if item.kind == "node" and node.op in ("slice", "param_cols"):
                    continue
                for n in item.nodes:
                    if n in self.buffers:
                        H.append(
                            f"{self.acc.array(n)} = run.empty({self.buffer_shape(n)})  # %{n.name}"
                        )
                name = f"_k_{phase}_{count}"
                if item.kind == "group":
                    count += 1
                    launch = Launch("fused", item.extent, groups=[item])
                    self.acc.dots = {}
                    args = self.kernel(
                        L,
                        name,
                        f"{phase}: element-wise group over all rows",
                        self.pointwise_body(launch, phase),
                        exclude=("t", "b", "j") if phase == "seq" else (),
                    )
                    total = f"{self.rows_expr(phase)} * {self.size(item.extent)}"
                    H.append(f"run.pointwise({name!r}, {total}, {', '.join(args)})")
                elif node.op in _PRODUCTS:
                    H.append(ir_comment(node))
                    H.append(self.host_product(node, phase))
                elif node.op == "layer_norm":
                    count += 1
                    args = self.kernel(
                        L,
                        name,
                        f"{phase}: layer_norm, a block per row",
                        self.block_prelude()
                        + self.norm_body(node, phase, "cuda.blockIdx.x", "cuda.gridDim.x"),
                        exclude=("t",) if phase == "seq" else (),
                    )
                    H.append(f"run.rows({name!r}, {self.rows_expr(phase)}, {', '.join(args)})")
                elif node.op == "concat":
                    count += 1
                    args = self.kernel(
                        L,
                        name,
                        f"{phase}: concat",
                        list(self.scalars)
                        + self.concat_lines(node, phase, "cuda.grid(1)", "cuda.gridsize(1)"),
                        exclude=("t",) if phase == "seq" else (),
                    )
                    total = f"{self.rows_expr(phase)} * {self.size(node.shape[0])}"
                    H.append(f"run.pointwise({name!r}, {total}, {', '.join(args)})")
                else:
                    raise CodegenError(
                        f"the CUDA target can not emit %{node.name} "
                        f"({node.op}) in the {phase} phase"
                    )

    def buffer_shape(self, n: Node) -> str:
        size = self.size(n.shape[0])
        return {"once": f"({size},)", "seq": f"(T, B, {size})", "step": f"(B, {size})"}[
            self.sched.phase[n.name]
        ]

    def matrix(self, node: Node, phase: str) -> str:
        """A host expression of `node`'s value as a 2-D device array [rows, n]: rows are T*B
        for seq values, 1 for once values (a view, never a copy)."""
        base, offset = self.sched.base(node)
        rows = "T * B" if phase == "seq" else "1"
        total = self.size(base.shape[0])
        arr = self.acc.array(base)
        full = f"{arr}.reshape({rows}, {total})"
        if base is node:
            return full
        start = self.size(offset)
        return f"{full}[:, {start}:{start} + {self.size(node.shape[0])}]"

    def host_product(self, node: Node, phase: str) -> str:
        vec = node.operands[-1] if node.op == "matvec" else node.operands[0]
        if phase == "step":
            raise AssertionError(node)
        return (
            f"run.gemm({self.matrix(vec, phase)}, {self.weight(node)}, {self.matrix(node, phase)})"
        )

    def block_prelude(self) -> list[str]:
        return [
            "tid = cuda.threadIdx.x",
            "nthr = cuda.blockDim.x",
            "red = cuda.shared.array(0, _F64)  # float64 scratch, one slot per thread",
        ]

    # -- the step: stepwise kernels ------------------------------------------------------------

    def tiled_body(self, launch: Launch) -> list[str]:
        """The stepwise fused kernel: a register-tiled product of each source with the column
        blocks its group reads, then the group's code for each (b, j) of the thread's tile."""
        comments = self.bind_dots(launch)
        E = self.size(launch.extent)
        K = launch.ncols()
        kmax = max(len(s.cols) for s in launch.sources)
        body = (
            list(self.scalars)
            + comments
            + [
                f"# shared: the operand tile [_BK, _BM], then {kmax} weight tile(s) [_BK, _BN]",
                "sh = cuda.shared.array(0, _NT)",
                "ws = _BK * _BM",
                f"acc = cuda.local.array(({K}, _TM, _TN), _NT)",
                "tx = cuda.threadIdx.x",
                "ty = cuda.threadIdx.y",
                "nthr = cuda.blockDim.x * cuda.blockDim.y",
                "tid = ty * cuda.blockDim.x + tx",
                "j0 = cuda.blockIdx.x * _BN",
                "b0 = cuda.blockIdx.y * _BM",
                f"for kk in range({K}):",
                "    for p in range(_TM):",
                "        for q in range(_TN):",
                "            acc[kk, p, q] = _ZERO",
            ]
        )
        k = 0
        for src in launch.sources:
            n = self.size(src.vec.shape[0])
            cols = ", ".join(f"%{p.name}[{self.size(off)}:]" for p, off in src.cols)
            body += [
                f"# operand {self.describe(src.vec)} times rows {cols}",
                f"for i0 in range(0, {n}, _BK):",
                "    for e in range(tid, _BM * _BK, nthr):",
                "        r = e // _BK",
                "        c = e - r * _BK",
                "        b = b0 + r",
                "        i = i0 + c",
                (
                    f"        sh[c * _BM + r] = {self.acc.element(src.vec, 't', 'b', 'i')} "
                    f"if (b < B and i < {n}) else _ZERO"
                ),
                "    for e in range(tid, _BN * _BK, nthr):",
                "        r = e // _BK",
                "        c = e - r * _BK",
                "        j = j0 + r",
                "        i = i0 + c",
                f"        ok = j < {E} and i < {n}",
            ]
            for m, (p, off) in enumerate(src.cols):
                row = "j" if off == Size() else f"{self.size(off)} + j"
                body.append(
                    f"        sh[ws + ({m} * _BK + c) * _BN + r] = {self.weight(p)}[{row}, i] "
                    "if ok else _ZERO"
                )
            body += [
                "    cuda.syncthreads()",
                "    for c in range(_BK):",
                "        for p in range(_TM):",
                "            vv = sh[c * _BM + ty * _TM + p]",
                "            for q in range(_TN):",
                "                col = tx * _TN + q",
            ]
            for m in range(len(src.cols)):
                body.append(
                    f"                acc[{k + m}, p, q] += vv * sh[ws + ({m} * _BK + c) * _BN + col]"
                )
            body.append("    cuda.syncthreads()")
            k += len(src.cols)
        body += [
            "for p in range(_TM):",
            "    b = b0 + ty * _TM + p",
            "    for q in range(_TN):",
            "        j = j0 + tx * _TN + q",
            f"        if b < B and j < {E}:",
        ]
        for m, (_s, p, off) in enumerate(launch.columns()):
            body.append(f"            {self.acc.dots[(p.name, off)]} = acc[{m}, p, q]")
        body += ["            " + ln for ln in self.epilogue(launch)]
        return body

    def describe(self, node: Node) -> str:
        base, off = self.sched.base(node)
        return f"%{node.name}" if base is node else f"%{node.name} (%{base.name}[{off}:])"

    def _emit_step(self, L: _Lines) -> None:
        H = self.host
        H.append("# ---- buffers reused by every step")
        for n in self.buffers:
            if self.sched.phase[n.name] == "step":
                H.append(f"{self.acc.array(n)} = run.empty({self.buffer_shape(n)})  # %{n.name}")
        calls = []
        for k, launch in enumerate(self.launches):
            name = f"_k_step_{k}"
            if launch.kind == "fused" and launch.sources:
                args = self.kernel(
                    L,
                    name,
                    f"step launch {k}: products fused with element-wise code (register-tiled)",
                    self.tiled_body(launch),
                )
                calls.append(
                    f"run.fused({name!r}, B, {self.size(launch.extent)}, "
                    f"{max(len(s.cols) for s in launch.sources)}, {', '.join(args)})"
                )
            elif launch.kind == "fused":
                self.acc.dots = {}
                args = self.kernel(
                    L, name, f"step launch {k}: element-wise", self.pointwise_body(launch, "step")
                )
                calls.append(
                    f"run.pointwise({name!r}, B * {self.size(launch.extent)}, {', '.join(args)})"
                )
            elif launch.kind == "norm":
                args = self.kernel(
                    L,
                    name,
                    f"step launch {k}: layer_norm, a block per row",
                    self.block_prelude()
                    + self.norm_body(launch.node, "step", "cuda.blockIdx.x", "cuda.gridDim.x"),
                )
                calls.append(f"run.rows({name!r}, B, {', '.join(args)})")
            elif launch.kind == "concat":
                args = self.kernel(
                    L,
                    name,
                    f"step launch {k}: concat",
                    list(self.scalars)
                    + self.concat_lines(launch.node, "step", "cuda.grid(1)", "cuda.gridsize(1)"),
                )
                total = f"B * {self.size(launch.node.shape[0])}"
                calls.append(f"run.pointwise({name!r}, {total}, {', '.join(args)})")
            else:
                args = self.kernel(
                    L,
                    name,
                    f"step launch {k}: copies to sinks",
                    list(self.scalars)
                    + self.copy_lines(launch, "cuda.grid(1)", "cuda.gridsize(1)"),
                )
                total = " + ".join(f"B * {self.size(s.shape[0])}" for s in launch.sinks)
                calls.append(f"run.pointwise({name!r}, {total}, {', '.join(args)})")
        pargs, phases = self._emit_persistent(L)
        H.append("# ---- the time loop: one cooperative launch, or launches per step")
        H.append(f"phases = [{', '.join(f'({e}, {w})' for e, w in phases)}]")
        H.append(f"if not run.persistent('_persistent', phases, T, B, {', '.join(pargs)}):")
        H.append("    for t in range(T):")
        for c in calls:
            H.append("        " + c)
        swap = [
            f"{self.acc.array(s)}, {self.nxt(s.attrs['name'])} = "
            f"{self.nxt(s.attrs['name'])}, {self.acc.array(s)}"
            for s in self.states
        ]
        H += ["        " + s for s in swap]
        H.append("elif T % 2 == 1:  # the kernel swapped the buffers T times")
        H += ["    " + s for s in swap] or ["    pass"]

    # -- the step: the persistent kernel -------------------------------------------------------

    def _emit_persistent(self, L: _Lines) -> tuple[list[str], list[tuple[str, str]]]:
        body = list(self.scalars) + [
            "grid = cuda.cg.this_grid()",
            "nblk = cuda.gridDim.x",
            "g = cuda.blockIdx.x",
            "tid = cuda.threadIdx.x",
            "nthr = cuda.blockDim.x",
            "gtid = g * nthr + tid",
            "gsize = nblk * nthr",
            "lane = tid % nlanes",
            "grp = tid // nlanes",
            "ngrp = nthr // nlanes",
            "red = cuda.shared.array(0, _F64)  # float64 scratch: nthr slots",
            "smem = cuda.shared.array(0, _NT)  # then the weight slabs",
            "sw = nthr * 8 // _ITEM",
        ]
        phases = []
        prod = [la for la in self.launches if la.kind == "fused" and la.sources]
        for k, launch in enumerate(prod):
            E = self.size(launch.extent)
            width = " + ".join(
                f"{len(s.cols)} * {self.size(s.vec.shape[0])}" for s in launch.sources
            )
            phases.append((E, width))
            body += [
                f"# weight slab {k}: the columns of units [u{k}, u{k} + jb{k}) of this block",
                f"jb{k} = ({E} + nblk - 1) // nblk",
                f"u{k} = g * jb{k}",
                f"sw{k} = sw",
                f"sw = sw + jb{k} * ({width})",
            ]
            cb = []
            for src in launch.sources:
                n = self.size(src.vec.shape[0])
                for p, off in src.cols:
                    base = " + ".join(cb) if cb else "0"
                    row = "j" if off == Size() else f"{self.size(off)} + j"
                    body += [
                        f"for e in range(tid, jb{k} * {n}, nthr):",
                        f"    jl = e // {n}",
                        f"    i = e - jl * {n}",
                        f"    j = u{k} + jl",
                        (
                            f"    smem[sw{k} + ({base}) * jb{k} + e] = "
                            f"{self.weight(p)}[{row}, i] if j < {E} else _ZERO"
                        ),
                    ]
                    cb.append(n)
        body += ["cuda.syncthreads()", "for t in range(T):"]
        step = []
        k = 0
        for launch in self.launches:
            if launch.kind == "fused" and launch.sources:
                step += self.persistent_fused(launch, k)
                k += 1
            elif launch.kind == "fused":
                self.acc.dots = {}
                E = self.size(launch.extent)
                step += [f"for idx in range(gtid, B * {E}, gsize):"]
                step += ["    " + ln for ln in self.row_decomp("step", "idx", E)]
                step += ["    " + ln for ln in self.epilogue(launch)]
            elif launch.kind == "norm":
                step += self.norm_body(launch.node, "step", "g", "nblk")[len(self.scalars) :]
            elif launch.kind == "concat":
                step += self.concat_lines(launch.node, "step", "gtid", "gsize")
            else:
                step += self.copy_lines(launch, "gtid", "gsize")
            step.append("grid.sync()")
        for s in self.states:
            a, n = self.acc.array(s), self.nxt(s.attrs["name"])
            step.append(f"{a}, {n} = {n}, {a}")
        body += ["    " + ln for ln in step]
        args = self.kernel(
            L,
            "_persistent",
            "The whole sequence in one cooperative launch; "
            "launches of a step are phases between grid-wide syncs.",
            body,
            exclude=("t",),
            extra=(("nlanes", "i"),),
        )
        return args[:-1], phases

    def persistent_fused(self, launch: Launch, k: int) -> list[str]:
        """One product phase: each lane group takes (unit jl of this block, ROWS batch rows),
        splits the dot products over its lanes, reduces them with shuffles, and lane r runs
        the element-wise code of row r."""
        comments = self.bind_dots(launch)
        E = self.size(launch.extent)
        cols = launch.columns()
        out = comments + [
            f"nit = jb{k} * ((B + {ROWS - 1}) // {ROWS})",
            "for it0 in range(0, nit, ngrp):  # uniform over the block: shuffles inside",
            "    it = it0 + grp",
            f"    jl = it % jb{k}",
            f"    bb = (it // jb{k}) * {ROWS}",
            f"    j = u{k} + jl",
        ]
        for r in range(ROWS):
            out.append(f"    bc{r} = min(bb + {r}, B - 1)")
        for m in range(len(cols)):
            for r in range(ROWS):
                out.append(f"    a{m}x{r} = _ZERO")
        m = 0
        cb = []
        for src in launch.sources:
            n = self.size(src.vec.shape[0])
            for _p, _off in src.cols:
                base = " + ".join(cb) if cb else "0"
                out.append(f"    o{m} = sw{k} + ({base}) * jb{k} + jl * {n}")
                cb.append(n)
                m += 1
            first = m - len(src.cols)
            out.append(f"    for i in range(lane, {n}, nlanes):  # {self.describe(src.vec)}")
            for r in range(ROWS):
                out.append(f"        v{r} = {self.acc.element(src.vec, 't', f'bc{r}', 'i')}")
            for c in range(first, m):
                out.append(f"        w{c} = smem[o{c} + i]")
                for r in range(ROWS):
                    out.append(f"        a{c}x{r} += v{r} * w{c}")
        for c in range(len(cols)):
            for r in range(ROWS):
                out.append(f"    a{c}x{r} = _rt.lane_sum(a{c}x{r}, nlanes)")
        out += ["    b = bb + lane", f"    if it < nit and j < {E} and lane < {ROWS} and b < B:"]
        for c, (_s, p, off) in enumerate(cols):
            pick = f"a{c}x{ROWS - 1}"
            for r in range(ROWS - 2, -1, -1):
                pick = f"a{c}x{r} if lane == {r} else ({pick})"
            out.append(f"        {self.acc.dots[(p.name, off)]} = {pick}")
        out += ["        " + ln for ln in self.epilogue(launch)]
        return out

    # -- the host glue -------------------------------------------------------------------------

    def launch_lines(self) -> list[str]:
        lines = [
            "# Each kernel's arguments: a<ndim> float arrays (C-contiguous), i integers.",
            "_KERNELS = {",
        ]
        for name, (_args, codes) in self.kernels.items():
            lines.append(f"    {name!r}: {codes!r},")
        lines += ["}", "", ""]
        lines += [
            "def _launch(run, x, state, spare, arrays, outputs, sizes):",
            '    """Run the sequence on the device and return the final state (run-time glue:',
            '    `run` is an lstmc_runtime.cuda.Run; all arrays are device arrays)."""',
            "    T = x.shape[0]",
            "    B = x.shape[1]",
        ]
        for s in self.graph.attrs.get("sizes", ()):
            if s in self.fixed:
                lines.append(
                    f"    {self.ns.get('n', s)} = {self.fixed[s]}  # fixed at compile time"
                )
            else:
                lines.append(f"    {self.ns.get('n', s)} = sizes[{s!r}]")
        for s in self.states:
            name = s.attrs["name"]
            lines.append(f"    {self.acc.array(s)} = state[{name!r}]")
            lines.append(f"    {self.nxt(name)} = spare[{name!r}]")
        for w in self.sched.weights.values():
            lines.append(f"    {w.name} = arrays[{w.name!r}]")
        for p in self.sched.vector_params:
            lines.append(f"    {self.ns.get('p', p)} = arrays[{p!r}]")
        for o in self.outputs:
            lines.append(f"    {self.y(o.attrs['name'])} = outputs[{o.attrs['name']!r}]")
        lines.append("    t = 0")
        lines += ["    " + ln if ln else "" for ln in self.host]
        lines.append(
            "    return {"
            + ", ".join(f"{s.attrs['name']!r}: {self.acc.array(s)}" for s in self.states)
            + "}"
        )
        return lines


def generate(
    graph: Graph, dtype: str = "float32", fixed: dict | None = None, info: dict | None = None
) -> str:
    """Python source of the CUDA module for an optimized graph."""
    return CudaEmitter(graph, dtype, fixed, info).source()
