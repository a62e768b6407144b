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

The emitter is split by job: `cuda_common` (line buffer, launch records, access), `cuda_plan`
(the step's launches, buffers, kernel arguments), `cuda_bodies` (kernel bodies every part
uses), `cuda_hoisted` (once and seq phases), `cuda_stepwise` and `cuda_persistent` (the two
variants of the time loop); this module joins them into the module text and the host glue.
"""

from __future__ import annotations

from lstmc.codegen.common import helpers_and_constants
from lstmc.codegen.cuda_common import TARGET, CudaAccess, Launch, Lines, Source
from lstmc.codegen.cuda_hoisted import HoistedEmitter
from lstmc.codegen.cuda_persistent import ROWS, PersistentEmitter
from lstmc.codegen.cuda_stepwise import StepwiseEmitter
from lstmc.codegen.module import module_header, module_tail, runtime_check_lines
from lstmc.ir.graph import Graph

__all__ = ["ROWS", "TARGET", "CudaAccess", "CudaEmitter", "Launch", "Source", "generate"]

_VMATH = ("sigmoid", "tanh", "exp", "log", "softplus")


class CudaEmitter(HoistedEmitter, StepwiseEmitter, PersistentEmitter):
    """The CUDA module of one optimized graph: the planning (`CudaPlan`), the shared kernel
    bodies (`CudaBodies`), the once/seq phases, and both variants of the time loop, joined
    by the host's `_launch`."""

    # -- the module ----------------------------------------------------------------------------

    def source(self) -> str:
        L = Lines()
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
        L.lines += runtime_check_lines()
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
        L.lines += helpers_and_constants(
            nodes, TARGET, '@cuda.jit(device=True, inline="always")', self.ns
        )
        self.scalars = self._scalar_lines()
        self.host: list[str] = []  # the body of _launch, built with the kernels
        self._emit_prologue(L)
        self._emit_step(L)
        L.lines += module_tail(self, TARGET)
        return "\n".join(L.lines).rstrip("\n") + "\n"

    # -- the step: both variants, the host picks one at run time ------------------------------

    def _emit_step(self, L: Lines) -> None:
        """The time loop: the persistent kernel if the run-time can launch it, else the
        stepwise launches once per timestep; both swap the state buffers every step."""
        calls = self._emit_stepwise(L)
        H = self.host
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
