"""The `once` and `seq` phases of the CUDA module (`HoistedEmitter`): values of params alone,
and of the input alone for all timesteps at once, as element-wise, layer_norm and concat kernels
over all rows, and the hoisted products as one tiled matrix product over all T*B rows."""

from __future__ import annotations

from lstmc.codegen.common import ir_comment
from lstmc.codegen.cuda_bodies import CudaBodies
from lstmc.codegen.cuda_common import PRODUCTS, Launch, Lines
from lstmc.errors import CodegenError
from lstmc.ir.graph import Node

_PHASE_TITLES = {
    "once": "# ---- once: values of params and constants only",
    "seq": "# ---- hoisted: values of the input alone, for all timesteps at once",
}


class HoistedEmitter(CudaBodies):
    """Emits the kernels and host calls of the phases before the time loop."""

    # -- once and seq phases -------------------------------------------------------------------

    def _emit_prologue(self, L: Lines) -> None:
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
                elif node.op in PRODUCTS:
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
