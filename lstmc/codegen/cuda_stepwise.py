"""The stepwise variant of the CUDA time loop (`StepwiseEmitter`): the host runs the step's
launches once per timestep, the state double buffered on the device. A launch with products is
a register-tiled product with the element-wise code of its group as the epilogue."""

from __future__ import annotations

from lstmc.codegen.cuda_bodies import CudaBodies
from lstmc.codegen.cuda_common import Launch, Lines
from lstmc.ir.shapes import Size


class StepwiseEmitter(CudaBodies):
    """Emits one kernel per launch of the step and the host calls that run them."""

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

    def _emit_stepwise(self, L: Lines) -> list[str]:
        """Emit the step's kernels (and the step buffers into the host code); returns the host
        calls that run one timestep."""
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
        return calls
