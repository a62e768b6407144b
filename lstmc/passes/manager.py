"""The pass manager: named passes, optimization levels, verification between passes.

A pass is a function `Graph -> PassResult(graph, modified)` registered under a kebab-case name.
It may change the graph it is given (the manager hands it a copy). Clean-up passes repeat to a
fixed point; after every pass the verifier runs (in tests and in `lstmc show` always; when
compiling by default too, since it is cheap), and a failure names the pass and those before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lstmc.errors import PassError, VerifyError
from lstmc.ir.graph import Graph
from lstmc.ir.verify import verify


@dataclass
class PassResult:
    graph: Graph
    modified: bool


PassFn = Callable[[Graph], PassResult]
PASSES: dict[str, PassFn] = {}
CLEANUP = ["constant-fold", "simplify", "cse", "dce"]


def register(name: str):
    def wrap(fn: PassFn) -> PassFn:
        PASSES[name] = fn
        fn.pass_name = name
        return fn

    return wrap


def pipeline(level: int, unroll: int | None = None) -> list[str]:
    """The pass names of an optimization level.

    -O0 nothing; -O1 clean-ups; -O2 adds gate fusion, input hoisting and element-wise fusion;
    -O3 adds unrolling.
    """
    if level <= 0:
        return []
    names = list(CLEANUP)
    if level >= 2:
        names += [
            "split-concat-matvec",
            *CLEANUP,
            "fuse-gates",
            "reassociate",
            "dce",
            "hoist",
            "fuse-elementwise",
        ]
    if level >= 3 or unroll:
        names += ["unroll"]
    return names


@dataclass
class PassRecord:
    name: str
    modified: bool
    seconds: float
    text: str | None = None  # IR after the pass, when asked for


def run_passes(
    graph: Graph,
    names: list[str],
    *,
    verify_each: bool = True,
    keep_text: bool = False,
    options: dict | None = None,
    fixed_point: bool = True,
) -> tuple[Graph, list[PassRecord]]:
    """Run `names` in order on a copy of `graph`. Consecutive clean-up passes are repeated
    until none changes the graph. Returns the new graph and what each pass did."""
    from lstmc.ir.printer import print_graph

    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise PassError(f"unknown pass(es) {', '.join(unknown)}; known: {', '.join(PASSES)}")
    graph = graph.copy()
    records: list[PassRecord] = []
    done: list[str] = []
    i = 0
    while i < len(names):
        # A run of clean-up passes repeats as a block until a fixed point.
        j = i
        while j < len(names) and names[j] in CLEANUP and fixed_point:
            j += 1
        block = names[i:j] if j > i else [names[i]]
        for _round in range(50):
            changed = False
            for name in block:
                start = time.perf_counter()
                try:
                    result = PASSES[name](graph, **_options_for(name, options))
                except (PassError, VerifyError):
                    raise
                except Exception as exc:
                    raise PassError(
                        f"pass `{name}` failed: {exc} (after: {', '.join(done) or 'no passes'})"
                    ) from exc
                graph = result.graph
                if verify_each:
                    try:
                        verify(graph)
                    except VerifyError as exc:
                        raise PassError(
                            f"pass `{name}` broke the IR (after: "
                            f"{', '.join(done) or 'no passes'}): {exc}"
                        ) from None
                records.append(
                    PassRecord(
                        name,
                        result.modified,
                        time.perf_counter() - start,
                        print_graph(graph) if keep_text else None,
                    )
                )
                done.append(name)
                changed |= result.modified
            if len(block) == 1 and block[0] not in CLEANUP or not changed:
                break
        i += len(block)
    return graph, records


def _options_for(name: str, options: dict | None) -> dict:
    if not options:
        return {}
    fn = PASSES[name]
    import inspect

    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in accepted}
