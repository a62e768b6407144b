"""The persistent variant of the CUDA time loop (`PersistentEmitter`): one cooperative kernel
runs the whole sequence, the step's launches become phases separated by grid-wide syncs, and
each block keeps the weight columns of the units it owns in shared memory for all timesteps;
each group of lanes reduces one unit's dot products for ROWS batch rows with a butterfly of
warp shuffles."""

from __future__ import annotations

from lstmc.codegen.cuda_bodies import CudaBodies
from lstmc.codegen.cuda_common import Launch, Lines
from lstmc.ir.shapes import Size

ROWS = 4  # batch rows per lane group in the persistent kernel (its accumulators are unrolled)


class PersistentEmitter(CudaBodies):
    """Emits the one cooperative kernel of the persistent variant."""

    # -- the step: the persistent kernel -------------------------------------------------------

    def _emit_persistent(self, L: Lines) -> tuple[list[str], list[tuple[str, str]]]:
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
