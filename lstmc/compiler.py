"""`lstmc.compile`: spec -> IR -> passes -> code -> a loaded kernel."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from lstmc.errors import LstmcError
from lstmc.ir.graph import Graph
from lstmc.ir.printer import print_graph
from lstmc.passes import pipeline, run_passes
from lstmc.spec.cell import Cell

TARGETS = ("cpu", "cuda")
DEFAULT_OPT = 2
# The largest size fixed at compile time (and given on the command line): generated code
# multiplies sizes in 64-bit integers (4 * hidden * input), and a size past 2**31 - 1
# elements is an 8 GB row of float32 already; larger is surely a typo.
MAX_SIZE = 2**31 - 1


def equations_text(cell: Cell) -> str:
    """The cell's equations as written, for generated docstrings: the sections' lines with
    their comments, or, for a section written on one line (`update: {h: h_next}`), its
    equations one a line."""
    import re

    lines = []
    text = cell.source
    for section, equations in (("equations", cell.equations), ("update", cell.update)):
        m = re.search(rf"^{section}:(.*?)\n((?:[ \t]+.*\n?|\s*\n)*)", text, re.MULTILINE)
        block = m is not None and not m.group(1).partition("#")[0].strip()
        written = [ln.strip() for ln in m.group(2).splitlines() if ln.strip()] if block else []
        if not written:
            written = [f"{eq.name}: {' '.join(eq.text.split())}" for eq in equations.values()]
        if written:
            lines.append(f"{section}:")
            lines += ["  " + ln for ln in written]
    return "\n".join(lines)


def optimize(
    cell: Cell | Graph,
    opt: int = DEFAULT_OPT,
    unroll: int | None = None,
    constants: Mapping | None = None,
    verify_each: bool = True,
    keep_text=False,
):
    """The optimized graph and the pass records."""
    from lstmc.api import to_ir

    graph = cell if isinstance(cell, Graph) else to_ir(cell, constants)
    options = {"unroll": unroll} if unroll else None
    return run_passes(
        graph, pipeline(opt, unroll), verify_each=verify_each, keep_text=keep_text, options=options
    )


def dtype_name(dtype) -> str:
    """ "float32" or "float64" from any name NumPy has for them ("float32", "f4", "single"),
    a NumPy type (np.float32) or dtype, or a torch dtype (torch.float32), in the machine's
    byte order."""
    given = dtype
    if type(dtype).__module__ == "torch":  # torch.float32: its name, without importing torch
        dtype = str(dtype).removeprefix("torch.")
    try:  # (not None, which NumPy reads as float64, nor "float": torch's is float32)
        unclear = dtype is None or (isinstance(dtype, str) and dtype == "float")
        resolved = None if unclear else np.dtype(dtype)
    except TypeError:
        resolved = None
    name = resolved.name if resolved is not None and resolved.isnative else None
    if isinstance(dtype, bool) or name not in ("float32", "float64"):
        dtype = given
        raise LstmcError(f"unknown dtype {dtype!r}; choose float32 or float64")
    return name


def generate_source(
    cell: Cell,
    target: str = "cpu",
    dtype: str = "float32",
    opt: int = DEFAULT_OPT,
    unroll: int | None = None,
    sizes: Mapping[str, int] | None = None,
    constants: Mapping[str, float] | None = None,
    name: str | None = None,
) -> tuple[str, Graph, list]:
    """Generate a module's source. Returns (source, optimized graph, pass records)."""
    from lstmc.api import as_cell

    cell = as_cell(cell)
    if target not in TARGETS:
        raise LstmcError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    dtype = dtype_name(dtype)
    if isinstance(opt, bool) or not isinstance(opt, (int, np.integer)) or not 0 <= opt <= 3:
        raise LstmcError(f"opt must be 0, 1, 2 or 3, got {opt!r}")
    if unroll is not None and (
        isinstance(unroll, bool) or not isinstance(unroll, (int, np.integer)) or unroll < 1
    ):
        raise LstmcError(f"unroll must be an int >= 1 (1: no unrolling), got {unroll!r}")
    opt, unroll = int(opt), None if unroll is None else int(unroll)
    fixed = dict(sizes or {})
    for size, value in fixed.items():
        if size not in cell.sizes:
            raise LstmcError(
                f"unknown size {size!r} in sizes; {cell.name} has {', '.join(cell.sizes)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise LstmcError(f"size {size} must be a positive integer, got {value!r}")
        if value > MAX_SIZE:
            raise LstmcError(f"size {size} must be at most {MAX_SIZE}, got {value!r}")
    graph, records = optimize(cell, opt, unroll, constants)
    from lstmc.codegen.common import spec_hash

    info = {
        "spec_hash": spec_hash(cell.source),
        "opt": opt,
        "pipeline": [r.name for r in records],
        "fixed": fixed,
        "doc": cell.doc,
        "equations": equations_text(cell),
        "name": name or cell.name,
    }
    if target == "cpu":
        from lstmc.codegen.cpu import generate
    else:
        from lstmc.codegen.cuda import generate
    source = generate(graph, dtype, fixed, info)
    return source, graph, records


def compile(
    cell: Cell,
    target: str = "cpu",
    dtype: str = "float32",
    opt: int = DEFAULT_OPT,
    unroll: int | None = None,
    sizes: Mapping[str, int] | None = None,
    constants: Mapping[str, float] | None = None,
    cache: bool = True,
    **options,
):
    """Compile a cell into a kernel: `y, state = kernel(x, params, state=None)`.

    target: "cpu" or "cuda"; dtype: "float32" (default, as PyTorch) or "float64"; opt: 0-3;
    unroll: time-loop unroll factor; sizes: sizes fixed at compile time (the kernel then
    accepts only those); constants: values for the spec's `constants:`; cache: reuse compiled
    kernels across processes.
    """
    from lstmc.api import as_cell
    from lstmc.codegen.cache import cache_key, load_generated

    cell = as_cell(cell)  # a Cell, or a spec file's path or a shipped cell's name
    dtype = dtype_name(dtype)
    # Target options (the CUDA kernel's variant and grid) pick among one module's compiled
    # code, so they are checked before anything is generated or cached, and are not part of
    # the cache key: every variant shares one module on disk and one compile.
    known = {"variant", "blocks"} if target == "cuda" else set()
    unknown = sorted(set(options) - known)
    if unknown and target in TARGETS:  # (an unknown target: generate_source says so)
        raise LstmcError(
            f"unknown option(s) {', '.join(unknown)} for target {target!r}"
            + (f"; known: {', '.join(sorted(known))}" if known else "")
        )
    if target == "cuda":  # and their values (CudaKernel.with_options checks them alike)
        from lstmc_runtime.cuda_config import check_blocks, check_variant

        if options.get("variant") is not None:
            check_variant(options["variant"])
        if options.get("blocks") is not None:
            check_blocks(options["blocks"])
    source, graph, records = generate_source(cell, target, dtype, opt, unroll, sizes, constants)
    key = cache_key({"source": source})
    module = load_generated(source, key, cell.name, use_cache=cache)
    # A kernel object of its own per compile() (the module, and its machine code, are shared
    # by every compile of the same spec and compile options in a process, whatever the
    # target options), so settings such as
    # `kernel.threads` made on one don't leak into another.
    kernel = copy.copy(module.kernel)
    if options:
        kernel = kernel.with_options(**options)
    kernel.source = source
    kernel.graph = graph
    kernel.ir = print_graph(graph)
    kernel.passes = records
    kernel.module = module
    return kernel
