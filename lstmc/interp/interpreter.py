"""The reference interpreter: the living definition of what a cell computes.

It runs a graph one op at a time in float64 NumPy, vectorized over the batch, step after step.
Every pass and every code-generation target is tested against it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from lstmc_runtime.signature import as_dict
from lstmc_runtime.torch_tensors import as_numpy

from lstmc.errors import LstmcError
from lstmc.ir.graph import Graph
from lstmc.ir.interface import signature_of
from lstmc.ir.printer import format_node


class InterpreterError(LstmcError):
    """An op's interpreter rule failed; names the node."""


class _Context:
    """What op rules may read: the bound sizes and, for sources, this step's values of the
    input, the state and the params, by name (names are unique across a cell)."""

    def __init__(self, sizes, params):
        self.sizes = sizes
        self.params = params
        self.values: dict[str, np.ndarray] = dict(params)

    def source(self, attrs):
        return self.values[attrs["name"]]


def run_graph(
    graph: Graph,
    x: np.ndarray,
    params: Mapping,
    state: Mapping | None = None,
    sizes: Mapping[str, int] | None = None,
):
    """Run `graph` over `x: [T, B, n]`. Returns ({output: [T, B, n]}, {state: [B, n]})."""
    sig = signature_of(graph)
    # CPU torch tensors as the kernels take them (one that requires grad is refused with
    # the kernels' message, not torch's RuntimeError from np.asarray), in float64
    x = np.asarray(as_numpy("x", x), dtype=np.float64)
    params = {
        k: np.asarray(as_numpy(f"param `{k}`", v), np.float64)
        for k, v in as_dict(params, "params", "array").items()
    }
    given = {
        k: np.asarray(as_numpy(f"state `{k}`", v), np.float64)
        for k, v in as_dict(state, "state", "[B, n] array").items()
    }
    if sizes is None:
        sizes = sig.bind(x, params, given)
    T, B = x.shape[:2]
    current = {
        s.name: given.get(s.name, np.zeros((B, s.concrete(sizes)[0]))).copy() for s in sig.state
    }
    outputs = {name: np.empty((T, B, _size(size, sizes))) for name, size in sig.outputs}
    nodes = graph.nodes()
    ctx = _Context(sizes, params)
    input_name = sig.input.name
    with np.errstate(all="ignore"):  # overflow to inf, log(-1) = NaN: IEEE results, no noise
        for t in range(T):
            ctx.values.update(current)
            ctx.values[input_name] = x[t]
            env: dict[str, np.ndarray] = {}
            for node in nodes:
                args = [env[o.name] for o in node.operands]
                try:
                    env[node.name] = node.opdef.interp(args, node.attrs, ctx)
                except Exception as exc:  # name the node, keep the cause
                    raise InterpreterError(
                        f"interpreting `{format_node(node)}` failed: {exc}"
                    ) from exc
            for node in nodes:  # sinks: emit outputs, then advance the state
                if node.op == "output":
                    outputs[node.attrs["name"]][t] = env[node.name]
                elif node.op == "update":
                    name = node.attrs["name"]
                    current[name] = np.broadcast_to(env[node.name], current[name].shape).copy()
    return outputs, current


def _size(size, sizes):
    from lstmc_runtime.signature import size_value

    return size_value(size, sizes)
