"""Sizes, data and comparisons shared by the CUDA tests (simulator: tiny; device: realistic).

Tolerances, against the float64 interpreter run on the very inputs the kernel got (float32
inputs are widened exactly), as max |kernel - reference| / (1 + |reference|):

- float64: 1e-10, as on the CPU target. Both sides evaluate the same formulas in float64 and can
  differ only by summation order in the products and by libdevice's exp/tanh/log (<= 2 ulp), a
  few 1e-16 per operation, growing at most linearly over T steps (gates contract errors: |sigmoid'|
  <= 1/4, |tanh'| <= 1; a cell state adds them up). layer_norm can amplify by 1/sqrt(var + eps),
  O(1) for these inputs.
- float32: 1e-3. The unit roundoff is 6e-8; a length-n dot product of O(1/sqrt(n))-scaled
  weights errs by about sqrt(n) u (n u at worst: 1.5e-5 for n = 256), the transcendentals by
  <= 2 ulp, and over T <= 12 steps an additive cell state accumulates that to ~1e-4 at worst:
  a tenfold margin, while a wrong gate, row offset or missed state update shows as 1e-2 or more.
"""

from __future__ import annotations

import numpy as np
from lstmc_runtime import cuda as rt

import lstmc

SIMULATOR = rt.SIMULATOR
DTYPES = ("float32", "float64")
VARIANTS = ("stepwise", "persistent")
TOL = {"float64": 1e-10, "float32": 1e-3}

if SIMULATOR:
    SIZES = {"input": 3, "hidden": 4, "proj": 3}
    T, B = 3, 2
else:
    SIZES = {"input": 48, "hidden": 96, "proj": 40}
    T, B = 12, 5

_KERNELS: dict = {}


def compiled(cell, dtype, **options):
    """A compiled CUDA kernel (memoized per cell name, dtype and options)."""
    if isinstance(cell, str):
        key = (cell, dtype, tuple(sorted(options.items())))
        if key not in _KERNELS:
            _KERNELS[key] = lstmc.compile(
                lstmc.builtin(cell), target="cuda", dtype=dtype, **options
            )
        return _KERNELS[key]
    return lstmc.compile(cell, target="cuda", dtype=dtype, **options)


def sizes_of(cell, **override) -> dict:
    out = {s: SIZES.get(s, 3) for s in cell.sizes}
    out.update(override)
    return out


def data(kernel, sizes, T, B, seed=0, zero_state=False):
    """(x, params, state) in the kernel's dtype, from a seed."""
    rng = np.random.default_rng(seed)
    dtype = kernel.dtype
    params = kernel.init_params(seed=seed, **sizes)
    # Nonzero gains/shifts too, so a layer_norm's affine part is exercised.
    params = {k: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for k, v in params.items()}
    n_in = kernel.signature.input.concrete(sizes)[0]
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    state = (
        None
        if zero_state
        else {
            s.name: rng.standard_normal((B, s.concrete(sizes)[0])).astype(dtype)
            for s in kernel.signature.state
        }
    )
    return x, params, state


def wide(d):
    if d is None:
        return None
    return {k: np.asarray(v, np.float64) for k, v in d.items()}


def host(a):
    if isinstance(a, dict):
        return {k: host(v) for k, v in a.items()}
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def error(got, ref) -> float:
    got, ref = np.asarray(host(got), np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if got.size == 0:
        return 0.0
    same_nan = np.isnan(got) & np.isnan(ref)
    diff = np.where(same_nan, 0.0, np.abs(got - ref) / (1.0 + np.abs(ref)))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff)))


def check(y, state, y_ref, state_ref, dtype, what=""):
    """Assert that outputs and final state match the reference within the dtype's tolerance."""
    tol = TOL[str(np.dtype(dtype))]
    ys = y if isinstance(y, dict) else {"y": y}
    refs = y_ref if isinstance(y_ref, dict) else {"y": y_ref}
    assert set(ys) == set(refs), (set(ys), set(refs))
    for name in refs:
        err = error(ys[name], refs[name])
        assert err <= tol, f"{what} output {name}: error {err:.3g} > {tol}"
    assert set(state) == set(state_ref)
    for name in state_ref:
        err = error(state[name], state_ref[name])
        assert err <= tol, f"{what} state {name}: error {err:.3g} > {tol}"


def reference(cell, x, params, state=None):
    return lstmc.interpret(cell, np.asarray(x, np.float64), wide(params), wide(state))
