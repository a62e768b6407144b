"""Weight packing: the params a user holds, rearranged once into what a kernel reads.

A product weight is a list of blocks `(param, cols)`, where `cols` is None (the whole param) or
`(start, size)` as size data (a column block, for `W @ concat(h, x)` split in two). The blocks'
rows are stacked and the result is transposed to a contiguous `[in, out]` array, so the
kernel's product of a `[B, in]` batch is one GEMM with no copy. A CPU kernel then lays out the
weights its products read in panels (`lstmc_runtime.layout.to_panels`, the module's PANELS).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from lstmc_runtime.errors import KernelArgumentError, argument_name
from lstmc_runtime.layout import ALIGN_BYTES as _ALIGN_BYTES
from lstmc_runtime.signature import size_value


class PackedParams:
    """Params packed for one kernel: contiguous arrays in the kernel's dtype, plus the sizes
    they were packed for. Pass it to the kernel in place of the params dict."""

    def __init__(
        self,
        arrays: dict,
        sizes: dict,
        dtype,
        owner: int,
        widths: dict | None = None,
        origins: dict | None = None,
    ):
        self.arrays = arrays
        self.sizes = sizes
        # where each size came from ("param `W_i`", "the compiled size"), for the messages of
        # a call whose arrays disagree with them (Signature.bind)
        self.origins = dict(origins or {})
        # the column count of each weight packed in panels (lstmc_runtime.layout.to_panels)
        self.widths = dict(widths or {})
        self.dtype = np.dtype(dtype)
        self._owner = owner  # id of the weight layout it was packed for
        self._unit_blocks: dict[int, list[dict]] = {}  # thread count -> per-thread blocks
        # the sizes and plan of calls, by the shapes and settings that decide them
        # (Kernel._bind_and_plan)
        self.calls: dict[tuple, tuple] = {}

    def unit_blocks(self, threads: int, columns: dict) -> list[dict]:
        """Per-thread blocks of the split weights, cut once per thread count and kept."""
        blocks = self._unit_blocks.get(threads)
        if blocks is None:
            blocks = self._unit_blocks[threads] = split_units(
                self.arrays, self.sizes, columns, threads, self.widths
            )
        return blocks

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


# Thread boundaries between units fall on multiples of 128 bytes: two threads writing one
# 128-byte pair of cache lines slow each other down 10x (see lstmc_runtime.kernel.ALIGN), and
# each thread's element-wise loop runs whole vectors (layout.ALIGN_BYTES).
def unit_bounds(extent: int, threads: int, itemsize: int = 4) -> list[int]:
    """Split units [0, extent) into `threads` contiguous ranges of near-equal length, each cut
    moved to the nearest 128-byte boundary when that stays within a quarter share of the even
    cut (else the even cut), so no thread gets nothing while another gets two shares."""
    align = _ALIGN_BYTES // itemsize
    share = extent / threads
    bounds = [0]
    for i in range(1, threads):
        even = extent * i // threads
        cut = round(extent * i / threads / align) * align
        if abs(cut - even) > share / 4 or cut <= bounds[-1] or cut >= extent:
            cut = even
        bounds.append(max(cut, bounds[-1]))
    bounds.append(extent)
    return bounds


def split_units(
    arrays: dict,
    sizes: Mapping[str, int],
    columns: dict,
    threads: int,
    widths: Mapping[str, int] | None = None,
) -> list[dict]:
    """Thread k's units [e0, e1) of the split group and, for each split weight ([in, out]),
    the columns it reads at those units: [o + e0, o + e1) for each slice offset o, side by
    side, as one contiguous [in, slots * (e1 - e0)] array. Weights packed in panels (those
    in `widths`, their column counts) are cut from their row-major form and the blocks packed
    in panels again."""
    from lstmc_runtime.layout import from_panels, to_panels

    widths = widths or {}
    extent = {size_value(c["extent"], sizes) for c in columns.values()}
    if len(extent) != 1:  # the plan splits one group; its weights agree on its length
        raise KernelArgumentError(f"split weights disagree on the group's length: {extent}")
    itemsize = next(iter(arrays.values())).dtype.itemsize
    bounds = unit_bounds(extent.pop(), threads, itemsize)
    flat: dict = {}  # the row-major form of each weight, made when a block is first cut

    def row_major(name):
        if name not in flat:
            w = arrays[name]
            flat[name] = from_panels(w, widths[name]) if name in widths else w
        return flat[name]

    out = []
    for k in range(threads):
        e0, e1 = bounds[k], bounds[k + 1]
        block = {"units": (e0, e1)}
        for name, c in columns.items():
            offsets = [size_value(d, sizes) for d in c["offsets"]]
            whole = offsets == [s * e1 for s in range(len(offsets))]  # slots side by side
            width = widths[name] if name in widths else arrays[name].shape[1]
            if threads == 1 and whole and width == len(offsets) * e1:
                block[name] = arrays[name]  # one thread's block is the whole weight: no copy
                continue
            w = row_major(name)
            cols = [w[:, o + e0 : o + e1] for o in offsets]
            block[name] = np.ascontiguousarray(np.concatenate(cols, axis=1))
            if name in widths:
                block[name] = to_panels(block[name])
        out.append(block)
    return out


def _foreign(a) -> str | None:
    """How to name `a` where it is a tensor of another library, with the way to a NumPy
    array; None for anything else. A CPU kernel takes CPU torch tensors as NumPy views
    (lstmc_runtime.torch_tensors) before its checks, so a tensor met here is one it could
    not take (say, params given as one tensor)."""
    module = type(a).__module__.partition(".")[0]
    if module == "torch":
        return (
            f"a torch tensor ({type(a).__name__}); pass a NumPy array: `t.detach().cpu().numpy()`"
        )
    if module in ("cupy", "jax", "jaxlib", "tensorflow"):
        return f"a {module} array ({type(a).__name__}); pass a NumPy array"
    return None


def describe(a) -> str:
    """What `a` is, for an error message: its type, or what _foreign says of it."""
    return _foreign(a) or type(a).__name__


def check_float(name: str, a, dtype=None) -> None:
    """Raise KernelArgumentError unless `a` is a NumPy float array (of `dtype`, if given).
    `name` is an argument's name (`x`) or a phrase naming it (param `W_i`, state `h`)."""
    foreign = _foreign(a)
    if foreign or not (hasattr(a, "dtype") and hasattr(a, "shape")):
        raise KernelArgumentError(f"{argument_name(name)} must be a NumPy array, got {describe(a)}")
    kind = getattr(a.dtype, "kind", None)
    if kind != "f":
        raise KernelArgumentError(
            f"{argument_name(name)} must be a float array, got dtype {a.dtype}"
        )
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        other = np.dtype(a.dtype)
        # compile takes only the native byte order: a big-endian array's way is to convert
        compilable = other.name in ("float32", "float64") and other.isnative
        hint = f" or compile with dtype='{other}'" if compilable else ""
        raise KernelArgumentError(
            f"{argument_name(name)} has dtype {a.dtype} but the kernel was compiled for "
            f"{np.dtype(dtype)}; convert it (`.astype(np.{np.dtype(dtype)})`){hint}"
        )


def packing_sizes(signature, fixed_sizes: Mapping, params: Mapping, given: Mapping, origins: dict):
    """The sizes to pack `params` for (Signature.bind_params): the compiled ones, the `given`
    ones (pack's sizes, or a call's from its x and state), and what the params hold.
    `origins` receives where each size came from."""
    signature.check_sizes(given)
    fixed = dict(fixed_sizes)
    for name, value in given.items():
        if name in fixed and value != fixed[name]:
            raise KernelArgumentError(
                f"size {name} was fixed at {fixed[name]} when compiling; got {name}={value!r}"
            )
        fixed[name] = int(value)
    missing = signature.sizes_params_lack(fixed)
    if missing:
        raise KernelArgumentError(
            f"the params alone do not give the size(s) {', '.join(missing)} (they appear only "
            f"in sums); pack them with the sizes, "
            f"kernel.pack(params, {', '.join(f'{s}=...' for s in missing)})"
        )
    given_origin = {name: "the sizes given to pack" for name in given}
    return signature.bind_params(params, fixed, origins, given_origin)
