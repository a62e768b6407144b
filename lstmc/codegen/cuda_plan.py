"""The plan of a CUDA module (`CudaPlan`, the base of the CUDA emitter): which launches a
timestep makes (products fused with the element-wise group that reads them, merged where no
value crosses between (b, j)s), which values live in device buffers, and which host variables a
kernel may take. Before: an optimized graph; after: `launches`, `buffers`, `host_vars`."""

from __future__ import annotations

from lstmc.codegen.common import EmitterBase, size_expr
from lstmc.codegen.cuda_common import PRODUCTS, CudaAccess, Launch, Source
from lstmc.codegen.schedule import Item
from lstmc.errors import CodegenError
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size


class CudaPlan(EmitterBase):
    """The graph, its schedule and the step's launches; the small helpers every part of the
    CUDA emitter names values with."""

    access_class = CudaAccess

    def __init__(
        self,
        graph: Graph,
        dtype: str = "float32",
        fixed: dict | None = None,
        info: dict | None = None,
    ):
        if dtype not in ("float32", "float64"):
            raise CodegenError(f"the CUDA target supports float32 and float64, not {dtype}")
        EmitterBase.__init__(self, graph, dtype, fixed, info)
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
            if n.op not in PRODUCTS or self.sched.phase[n.name] != "step":
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
            if node.op in PRODUCTS:
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

    def buffer_shape(self, n: Node) -> str:
        size = self.size(n.shape[0])
        return {"once": f"({size},)", "seq": f"(T, B, {size})", "step": f"(B, {size})"}[
            self.sched.phase[n.name]
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
