"""Kernel bodies shared by every phase and both step variants (`CudaBodies`): emitting a
`@cuda.jit` kernel with the host variables it uses as arguments, the element-wise epilogue of a
launch, grid-stride loops, layer_norm, concat and sink copies."""

from __future__ import annotations

import re

from lstmc.codegen.common import elementwise_expr, ir_comment
from lstmc.codegen.cuda_common import TARGET, Launch, Lines
from lstmc.codegen.cuda_plan import CudaPlan
from lstmc.ir.graph import Node
from lstmc.ir.shapes import Size


class CudaBodies(CudaPlan):
    """The pieces of kernel source that the once/seq phases, the stepwise kernels and the
    persistent kernel all use."""

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
        L: Lines,
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
        L.add("@cuda.jit(cache=_CACHE)")
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
            out += self.group_lines(
                item, TARGET, t, b, j, None, lambda sink: self.sink_target(sink, b, j)
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

    def block_prelude(self) -> list[str]:
        return [
            "tid = cuda.threadIdx.x",
            "nthr = cuda.blockDim.x",
            "red = cuda.shared.array(0, _F64)  # float64 scratch, one slot per thread",
        ]

    def describe(self, node: Node) -> str:
        base, off = self.sched.base(node)
        return f"%{node.name}" if base is node else f"%{node.name} (%{base.name}[{off}:])"
