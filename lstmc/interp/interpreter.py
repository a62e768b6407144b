"""The reference interpreter: the living definition of what a cell computes.

It runs a graph one op at a time in float64 NumPy, vectorized over the batch, step after step.
Every pass and every code-generation target is tested against it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lstmc.errors import LstmcError
from lstmc.ir.graph import Graph
from lstmc.ir.interface import signature_of
from lstmc.ir.printer import format_node


class InterpreterError(LstmcError):
    """An op's interpreter rule failed; names the node."""


class _Context:
    def __init__(self, sizes, params, state, x_t=None):
        self.sizes = sizes
        self.params = params
        self.state = state
        self.x_t = x_t

    def source(self, attrs):
        raise AssertionError("sources are bound by the driver loop")


def run_graph(
    graph: Graph,
    x: np.ndarray,
    params: Mapping,
    state: Mapping | None = None,
    sizes: Mapping[str, int] | None = None,
):
    """Run `graph` over `x: [T, B, n]`. Returns ({output: [T, B, n]}, {state: [B, n]})."""
    sig = signature_of(graph)
    x = np.asarray(x, dtype=np.float64)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    given = {k: np.asarray(v, dtype=np.float64) for k, v in (state or {}).items()}
    if sizes is None:
        sizes = sig.bind(x, params, given)
    T, B = x.shape[:2]
    current = {
        s.name: given.get(s.name, np.zeros((B, s.concrete(sizes)[0]))).copy() for s in sig.state
    }
    outputs = {name: np.empty((T, B, _size(size, sizes))) for name, size in sig.outputs}
    nodes = graph.nodes()
    ctx = _Context(sizes, params, current)
    with np.errstate(all="ignore"):  # overflow to inf, log(-1) = NaN: IEEE results, no noise
        for t in range(T):
            env: dict[str, np.ndarray] = {}
            nxt = {}
            for node in nodes:
                op = node.op
                if op == "input":
                    env[node.name] = x[t]
                elif op == "state":
                    env[node.name] = current[node.attrs["name"]]
                elif op == "param":
                    env[node.name] = params[node.attrs["name"]]
                else:
                    args = [env[o.name] for o in node.operands]
                    try:
                        value = node.opdef.interp(args, node.attrs, ctx)
                    except Exception as exc:  # name the node, keep the cause
                        raise InterpreterError(
                            f"interpreting `{format_node(node)}` failed: {exc}"
                        ) from exc
                    env[node.name] = value
                    if op == "output":
                        outputs[node.attrs["name"]][t] = value
                    elif op == "update":
                        nxt[node.attrs["name"]] = np.broadcast_to(
                            value, current[node.attrs["name"]].shape
                        ).copy()
            current.update(nxt)
    return outputs, current


def _size(size, sizes):
    from lstmc_runtime.signature import size_value

    return size_value(size, sizes)
