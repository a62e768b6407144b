"""PyTorch's recurrent modules as shipped cells and their params (`lstmc.from_torch`).

torch stacks the gates in the rows of `weight_ih_l{k}` / `weight_hh_l{k}` / `bias_*_l{k}`:
i, f, g, o for nn.LSTM and r, z, n for nn.GRU. The shipped `lstm` keeps one bias a gate, so
torch's two are summed into it; `gru`, `rnn_tanh` and `rnn_relu` keep both, like torch; an
LSTM with `proj_size` is `lstmp`, its projection `W_hr`. torch is imported only by the call.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np

from lstmc.errors import LstmcError

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


def from_torch(module, layer: int = 0, reverse: bool = False):
    """(cell, params) for one layer and direction of a torch nn.LSTM, nn.GRU or nn.RNN: the
    shipped cell that computes it and its params as NumPy arrays of the module's dtype
    (float32 for a float16 or bfloat16 module), for `lstmc.compile(cell)` and
    `kernel(x, params)`, but an LSTM's biases: the sums of torch's two in float64 (exact
    unless their magnitudes differ by more than ~2**29; `kernel.pack` rounds them to the
    float32 sum torch makes for a float32 kernel).

    `layer` picks a layer of a stacked module (its input is the layer below's output);
    `reverse` the backward direction of a bidirectional one (run it on x reversed in time).
    A module without biases gets zero biases. The kernel's x is [T, B, input] as torch's
    default (`batch_first=False`; a batch-first module is warned about, since its [B, T, input]
    x would pass the kernel's shape check); its state is `{"h": h0[k], "c": c0[k]}` for torch's
    [layers * directions, B, n] h0, c0, k = layer * directions + reverse.
    """
    import torch

    from lstmc.api import builtin

    kinds = {torch.nn.LSTM: "LSTM", torch.nn.GRU: "GRU", torch.nn.RNN: "RNN"}
    kind = next((name for cls, name in kinds.items() if isinstance(module, cls)), None)
    if kind is None:
        got = f"{type(module).__module__}.{type(module).__qualname__}"
        hint = ""
        if type(module).__name__.endswith("Cell"):
            hint = (
                " (a *Cell holds the weights of a one-layer module: copy its weight_ih, "
                "weight_hh, bias_ih and bias_hh into an nn.LSTM/GRU/RNN's weight_ih_l0, ...)"
            )
        raise LstmcError(f"from_torch takes a torch.nn.LSTM, nn.GRU or nn.RNN; got {got}{hint}")
    try:
        index = None if isinstance(layer, bool) else operator.index(layer)
    except TypeError:
        index = None
    if index is None or not 0 <= index < module.num_layers:
        raise LstmcError(
            f"layer must be an integer in [0, {module.num_layers}) for this {kind} "
            f"(num_layers={module.num_layers}); got {layer!r}"
        )
    layer = index
    if getattr(module, "batch_first", False):
        warnings.warn(
            f"this {kind} is batch_first, but kernels take x as [T, B, input]: pass "
            "x.transpose(0, 1) (and transpose y back)",
            UserWarning,
            stacklevel=2,
        )
    if not isinstance(reverse, (bool, np.bool_)):
        raise LstmcError(f"reverse must be True or False; got {reverse!r}")
    if reverse and not module.bidirectional:
        raise LstmcError(f"reverse=True needs a bidirectional {kind}; this one is not")
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")

    def get(name):
        t = getattr(module, name + suffix, None)
        if t is None:
            return None
        if t.is_meta:
            raise LstmcError(
                f"{name + suffix} is on the meta device (no values); materialize the module "
                "first (module.to_empty(device='cpu') and load its state_dict)"
            )
        # Kernels compute in float32 or float64: half-precision weights are widened (float32
        # holds each value exactly), so that an LSTM's two biases are summed in float32, not
        # rounded to half precision (~5e-5 from the float32 sum for float16). And NumPy has
        # no bfloat16.
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.detach().cpu().numpy().copy()

    w_ih, w_hh, b_ih, b_hh = (get(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    rows = w_hh.shape[0]
    b_ih = np.zeros(rows, w_ih.dtype) if b_ih is None else b_ih
    b_hh = np.zeros(rows, w_ih.dtype) if b_hh is None else b_hh
    if kind == "RNN":
        name = "rnn_tanh" if module.nonlinearity == "tanh" else "rnn_relu"
        return builtin(name), {"W_ih": w_ih, "W_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    if kind == "GRU":
        params = {}
        for g, w, u, bi, bh in zip(
            _GRU_GATES, *(np.split(a, 3) for a in (w_ih, w_hh, b_ih, b_hh)), strict=True
        ):
            params |= {f"W_i{g}": w, f"W_h{g}": u, f"b_i{g}": bi, f"b_h{g}": bh}
        return builtin("gru"), params
    params = {}
    # Summed in float64: a float64 kernel (or the interpreter) then gets what torch's
    # float64 module adds, and packing for a float32 kernel rounds the sum to the float32
    # sum torch makes (rounding twice, to 53 bits then 24, is as rounding once: 53 >= 2*24+2).
    bias = b_ih.astype(np.float64) + b_hh.astype(np.float64)
    for g, w, u, b in zip(_LSTM_GATES, *(np.split(a, 4) for a in (w_ih, w_hh, bias)), strict=True):
        params |= {f"W_{g}": w, f"U_{g}": u, f"b_{g}": b}
    if getattr(module, "proj_size", 0):
        params["W_hr"] = get("weight_hr")
        return builtin("lstmp"), params
    return builtin("lstm"), params
