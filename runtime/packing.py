"""Weight packing: the params a user holds, rearranged once into what a kernel reads.

A product weight is a list of blocks `(param, cols)`, where `cols` is None (the whole param) or
`(start, size)` as size data (a column block, for `W @ concat(h, x)` split in two). The blocks'
rows are stacked and the result is transposed to a contiguous `[in, out]` array, so the
kernel's product of a `[B, in]` batch is one GEMM with no copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from lstmc_runtime.errors import KernelArgumentError
from lstmc_runtime.signature import size_value


class PackedParams:
    """Params packed for one kernel: contiguous arrays in the kernel's dtype, plus the sizes
    they were packed for. Pass it to the kernel in place of the params dict."""

    def __init__(self, arrays: dict, sizes: dict, dtype, owner: int):
        self.arrays = arrays
        self.sizes = sizes
        self.dtype = np.dtype(dtype)
        self._owner = owner  # id of the weight layout it was packed for

    def __repr__(self) -> str:
        return f"<PackedParams {self.dtype} sizes={self.sizes}>"


def pack_weights(
    params: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    weights: dict,
    vector_params: list[str],
    dtype,
    xp=np,
) -> dict:
    arrays = {}
    for name, blocks in weights.items():
        rows = []
        for param, cols in blocks:
            w = params[param]
            if cols is not None:
                start = size_value(cols[0], sizes)
                w = w[:, start : start + size_value(cols[1], sizes)]
            rows.append(w)
        arrays[name] = xp.ascontiguousarray(xp.concatenate(rows, axis=0).T.astype(dtype))
    for name in vector_params:
        arrays[name] = xp.ascontiguousarray(xp.asarray(params[name]).astype(dtype))
    return arrays


def check_float(name: str, a, dtype=None) -> None:
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise KernelArgumentError(f"`{name}` must be an array, got {type(a).__name__}")
    kind = getattr(a.dtype, "kind", None)
    if kind != "f":
        raise KernelArgumentError(
            f"`{name}` must be a float array, got dtype {getattr(a, 'dtype', type(a).__name__)}"
        )
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        raise KernelArgumentError(
            f"`{name}` has dtype {a.dtype} but the kernel was compiled for {np.dtype(dtype)}; "
            f"convert it (`.astype(np.{np.dtype(dtype)})`) or compile with "
            f"dtype='{np.dtype(a.dtype)}'"
        )
