"""A cell's calling convention as plain data, and the argument checks done at every call.

Both the compiler (interpreter, compiled kernels) and standalone artifacts use this module, so
a kernel written to disk checks its arguments exactly as the in-process one does. Sizes are
plain data: `(((symbol, coef), ...), const)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from lstmc_runtime.errors import KernelArgumentError, argument_name

SizeData = tuple  # ((symbol, coef), ...), const


def size_value(size: SizeData, sizes: Mapping[str, int]) -> int:
    terms, const = size
    return const + sum(c * sizes[s] for s, c in terms)


def size_text(size: SizeData) -> str:
    terms, const = size
    parts = [s if c == 1 else f"{c}*{s}" for s, c in terms]
    if const or not parts:
        parts.append(str(const))
    return "+".join(parts)


def as_dict(value, what: str, holds: str):
    """`value` if it is a mapping (a dict of `holds`), {} for None; else the KernelArgumentError
    that names `what`. Tested before anything else reads it: an array's or a tensor's truth
    value raises NumPy's or torch's own error, and an empty list would pass as no state."""
    if type(value) is dict:  # the common case, without the ABC's isinstance (~0.3 us)
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise KernelArgumentError(
            f"{what} must be a dict {{name: {holds}}}, got {type(value).__name__}"
        )
    return value


def _single_symbol(size: SizeData) -> str | None:
    terms, const = size
    return terms[0][0] if const == 0 and len(terms) == 1 and terms[0][1] == 1 else None


@dataclass(frozen=True)
class ArraySpec:
    name: str
    shape: tuple  # of SizeData
    init: str = "uniform"

    def text(self) -> str:
        return "[" + ", ".join(size_text(s) for s in self.shape) + "]"

    def concrete(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(size_value(s, sizes) for s in self.shape)


def _bound_text(symbols, sizes: dict, origin: dict) -> str:
    """`hidden=16 (from param `U`), ...`: the bound sizes among `symbols`, for an error."""
    return ", ".join(f"{s}={sizes[s]} (from {origin[s]})" for s in sorted(symbols) if s in sizes)


@dataclass(frozen=True)
class Signature:
    """What a kernel takes and returns: sizes, the input, state, params and outputs."""

    cell: str
    sizes: tuple[str, ...]
    input: ArraySpec
    state: tuple[ArraySpec, ...]
    params: tuple[ArraySpec, ...]
    outputs: tuple[tuple[str, SizeData], ...]

    # -- binding ---------------------------------------------------------------------------

    def bind_params(
        self,
        params: Mapping,
        fixed: Mapping[str, int] | None = None,
        origins_out: dict[str, str] | None = None,
        origins: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Bind the sizes from the params alone (for packing) and check their shapes;
        `origins` says where a size in `fixed` came from (default: the compiled size);
        `origins_out` receives where each size came from, as `bind` gives it."""
        return self.bind(None, params, None, fixed, origins=origins, origins_out=origins_out)

    def sizes_params_lack(self, known=()) -> list[str]:
        """The sizes in the params' shapes that binding from the params alone can't find,
        given the `known` ones. It finds those a param dimension holds alone, then those
        alone unknown in a sum ([hidden + input] once hidden is known); a size only in sums
        with another unknown one ([hidden + input] alone) needs the sizes of a call's x
        and state (Kernel.pack). Sizes of no param are x's and the state's to give."""
        found = set(known)
        for p in self.params:
            found.update(s for s in map(_single_symbol, p.shape) if s is not None)
        progress = True
        while progress:
            progress = False
            for p in self.params:
                for terms, _const in p.shape:
                    unknown = {s for s, _ in terms} - found
                    if len(unknown) == 1:
                        found |= unknown
                        progress = True
        used = {s for p in self.params for terms, _ in p.shape for s, _ in terms}
        return [s for s in self.sizes if s in used and s not in found]

    def bind(
        self,
        x,
        params: Mapping | None,
        state: Mapping | None = None,
        fixed: Mapping[str, int] | None = None,
        origins: Mapping[str, str] | None = None,
        origins_out: dict[str, str] | None = None,
    ) -> dict[str, int]:
        """Bind every size symbol from the arrays and check every shape.

        `x=None` checks params alone; `params=None` checks x and state against `fixed` sizes
        (params already packed). `origins` says where a fixed size came from (default: the
        compiled size), for the message; `origins_out`, if given, receives where every size
        came from (kernel.pack keeps it with the packed params for those messages). Raises
        KernelArgumentError naming the argument and the expected and received shapes, whole.
        """
        x_shape = _shape_of(x, "x") if x is not None else None
        if x_shape is not None and len(x_shape) != 3:
            raise KernelArgumentError(
                f"x must be [T, B, {size_text(self.input.shape[0])}] (time, batch, features); "
                f"got shape {x_shape}"
            )
        if params is not None:
            if not isinstance(params, Mapping):
                raise KernelArgumentError(
                    f"params must be a dict {{name: array}}, got {type(params).__name__}"
                )
            declared = {p.name for p in self.params}
            for name in params:
                if name not in declared:
                    raise KernelArgumentError(
                        f"unexpected param `{name}`; {self.cell} takes "
                        f"{', '.join(sorted(declared))}"
                    )
            for p in self.params:
                if p.name not in params:
                    raise KernelArgumentError(f"missing param `{p.name}` (expected {p.text()})")
        state = as_dict(state, "state", "[B, n] array")
        state_names = {s.name for s in self.state}
        for name in state:
            if name not in state_names:
                raise KernelArgumentError(
                    f"unexpected state `{name}`; {self.cell}'s state is "
                    f"{', '.join(sorted(state_names))}"
                )

        sizes: dict[str, int] = dict(fixed or {})
        origin: dict[str, str] = {k: (origins or {}).get(k, "the compiled size") for k in sizes}
        B = x_shape[1] if x_shape is not None else None
        # (what, the dims checked, their spec, the whole shape, the dims before the checked)
        arrays = [("x", x_shape[2:], self.input, x_shape, ("T", "B"))] if x_shape else []
        if params is not None:
            for p in self.params:
                shape = _shape_of(params[p.name], f"param `{p.name}`")
                arrays.append((f"param `{p.name}`", shape, p, shape, ()))
        for s in self.state:
            if s.name in state and B is not None:
                shape = _shape_of(state[s.name], f"state `{s.name}`")
                if len(shape) != 2 or shape[0] != B:
                    raise KernelArgumentError(
                        f"state `{s.name}` must be [B, {size_text(s.shape[0])}] with B={B} "
                        f"(from x); got shape {shape}"
                    )
                arrays.append((f"state `{s.name}`", shape[1:], s, shape, ("B",)))
        try:
            sizes = self._bind_arrays(arrays, sizes, origin, x_shape is not None, vote=False)
        except KernelArgumentError as first_error:
            # Sizes bound from the first array that has them made one bad W_i blame every
            # other param: now that the call fails anyway, bind each size to what most
            # arrays give it, so that the error names the one wrong array.
            need_all = x_shape is not None
            fixed_origin = {k: (origins or {}).get(k, "the compiled size") for k in fixed or {}}
            try:
                self._bind_arrays(arrays, dict(fixed or {}), fixed_origin, need_all, vote=True)
            except KernelArgumentError as voted_error:
                raise voted_error from None
            raise first_error from None
        if origins_out is not None:
            origins_out.update(origin)
        return sizes

    def _bind_arrays(self, arrays, sizes, origin, need_all: bool, vote: bool) -> dict[str, int]:
        """`bind`'s work on the arrays' shapes, `sizes` holding the fixed ones: bind the
        single symbols (each from the first array that has it, or, with `vote`, to the value
        most arrays give it, the first array's on a tie), then the sums, then check every
        dimension. Fills and returns `sizes`, and fills `origin`."""
        fixed = set(sizes)
        votes: dict[str, dict[int, list[str]]] = {}
        for where, shape, spec, whole, lead in arrays:
            if len(shape) != len(spec.shape):
                raise KernelArgumentError(f"{where} must be {_text(lead, spec)}; got shape {whole}")
            for dim, size in zip(shape, spec.shape):
                sym = _single_symbol(size)
                if sym is None or sym in fixed:
                    continue
                if vote:
                    votes.setdefault(sym, {}).setdefault(dim, []).append(where)
                elif sym not in sizes:
                    sizes[sym] = dim
                    origin[sym] = where
        for sym, by_value in votes.items():
            sizes[sym], givers = max(by_value.items(), key=lambda item: len(item[1]))
            origin[sym] = givers[0]
        progress = True
        while progress:  # then sums with one unknown symbol (`hidden + input`) bind it
            progress = False
            for where, shape, spec, _whole, _lead in arrays:
                for dim, (terms, const) in zip(shape, spec.shape):
                    unknown = [(s, c) for s, c in terms if s not in sizes]
                    if len(unknown) != 1:
                        continue
                    sym, coef = unknown[0]
                    rest = dim - const - sum(c * sizes[s] for s, c in terms if s in sizes)
                    if rest > 0 and rest % coef == 0:
                        sizes[sym] = rest // coef
                        origin[sym] = where
                        progress = True
        missing = [s for s in self.sizes if s not in sizes]
        if missing and need_all:
            raise KernelArgumentError(f"cannot infer size(s) {', '.join(missing)} from the arrays")
        for where, shape, spec, whole, lead in arrays:  # second: every dimension must agree
            symbols = {sym for size in spec.shape for sym, _ in size[0]}
            unbound = sorted(symbols - sizes.keys())
            if unbound:  # e.g. [hidden, hidden + input] no wider than hidden: input <= 0
                bound = _bound_text(symbols, sizes, origin)
                raise KernelArgumentError(
                    f"{where} has shape {tuple(whole)} but expected {_text(lead, spec)}"
                    + (f" with {bound}" if bound else "")
                    + f": no size {', '.join(unbound)} >= 1 fits it"
                )
            want = spec.concrete(sizes)
            if tuple(shape) != want:
                bound = _bound_text(symbols, sizes, origin)
                expected = tuple(whole[: len(lead)]) + want
                raise KernelArgumentError(
                    f"{where} has shape {tuple(whole)} but expected {_text(lead, spec)} = "
                    f"{expected} with {bound}"
                )
        for s, v in sizes.items():
            if v <= 0:
                raise KernelArgumentError(
                    f"size {s} must be an int >= 1, got {v} (from {origin[s]})"
                )
        return sizes

    # -- parameters ------------------------------------------------------------------------

    def uniform_bound_size(self, sizes: Mapping[str, int]) -> int:
        """PyTorch initializes RNN weights U(-1/sqrt(hidden), 1/sqrt(hidden)): `hidden` if
        the cell has that size, else the first state variable's size."""
        if "hidden" in sizes:
            return sizes["hidden"]
        return size_value(self.state[0].shape[0], sizes)

    def check_sizes(self, sizes: Mapping[str, int]) -> None:
        """Sizes given by name (init_params, pack): each one of the cell's, a positive int."""
        unknown = [s for s in sizes if s not in self.sizes]
        if unknown:
            hints = "".join(
                f" (did you mean `{close[0]}`?)"
                for s in unknown
                for close in [difflib.get_close_matches(s, self.sizes, n=1)]
                if close
            )
            raise KernelArgumentError(
                f"unknown size(s) {', '.join(f'`{s}`' for s in unknown)}{hints}; "
                f"{self.cell} has {', '.join(self.sizes)}"
            )
        for s, v in sizes.items():  # what a call accepts: a positive whole number
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise KernelArgumentError(f"size {s} must be an int >= 1, got {v!r}")

    def init_params(
        self, sizes: Mapping[str, int], seed=0, dtype=np.float64
    ) -> dict[str, np.ndarray]:
        self.check_sizes(sizes)
        missing = [s for s in self.sizes if s not in sizes]
        if missing:
            raise KernelArgumentError(
                f"init_params needs every size: missing {', '.join(missing)} "
                f"(call it as init_params({', '.join(f'{s}=...' for s in self.sizes)}))"
            )
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.uniform_bound_size(sizes))
        out = {}
        for p in self.params:
            shape = p.concrete(sizes)
            if p.init == "zeros":
                out[p.name] = np.zeros(shape, dtype)
            elif p.init == "ones":
                out[p.name] = np.ones(shape, dtype)
            else:
                out[p.name] = rng.uniform(-bound, bound, shape).astype(dtype)
        return out


def _text(lead: tuple[str, ...], spec: ArraySpec) -> str:
    """An array's expected shape in symbols: [T, B, input] for x, [B, hidden] for a state."""
    return "[" + ", ".join([*lead, *(size_text(d) for d in spec.shape)]) + "]"


def _shape_of(a, name: str) -> tuple[int, ...]:
    shape = getattr(a, "shape", None)
    if shape is None:
        raise KernelArgumentError(f"{argument_name(name)} must be an array, got {type(a).__name__}")
    return tuple(int(d) for d in shape)
