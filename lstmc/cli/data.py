"""The random data `run` and `bench` feed the kernel: sizes, inputs, params and start state."""

from __future__ import annotations


def data_sizes(cell, given: dict, default: int) -> dict:
    """Every size of `cell`: the --size values given, `default` for the rest."""
    from lstmc.errors import LstmcError, did_you_mean

    for name in given:
        if name not in cell.sizes:
            raise LstmcError(
                f"unknown size `{name}`{did_you_mean(name, cell.sizes)}; "
                f"{cell.name} has sizes {', '.join(cell.sizes)}"
            )
    return {name: given.get(name, default) for name in cell.sizes}


def random_inputs(kernel, sizes: dict, T: int, B: int, seed: int, dtype: str):
    """x, params and a nonzero start state, reproducible from `seed`, in `dtype`."""
    import numpy as np
    from lstmc_runtime.signature import size_value

    rng = np.random.default_rng(seed)
    sig = kernel.signature
    params = kernel.init_params(seed=seed, **sizes)
    (n_in,) = sig.input.concrete(sizes)
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    state = {
        s.name: (0.5 * rng.standard_normal((B, size_value(s.shape[0], sizes)))).astype(dtype)
        for s in sig.state
    }
    return x, params, state
