"""The PyTorch modules equivalent to the shipped cells, which `lstmc bench` times the kernel
against."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass


def _cat(params, names, np):
    return np.concatenate([params[n] for n in names], axis=0)


def _torch_lstm(torch, np, p, sizes, proj=False):
    m = torch.nn.LSTM(sizes["input"], sizes["hidden"], proj_size=sizes["proj"] if proj else 0)
    w = {
        "weight_ih_l0": _cat(p, ["W_i", "W_f", "W_g", "W_o"], np),
        "weight_hh_l0": _cat(p, ["U_i", "U_f", "U_g", "U_o"], np),
        "bias_ih_l0": _cat(p, ["b_i", "b_f", "b_g", "b_o"], np),  # lstmc keeps one bias a gate
        "bias_hh_l0": np.zeros(4 * sizes["hidden"], p["b_i"].dtype),
    }
    if proj:
        w["weight_hr_l0"] = p["W_hr"]
    return m, w, ("h", "c")


def _torch_gru(torch, np, p, sizes):
    m = torch.nn.GRU(sizes["input"], sizes["hidden"])
    w = {
        "weight_ih_l0": _cat(p, ["W_ir", "W_iz", "W_in"], np),
        "weight_hh_l0": _cat(p, ["W_hr", "W_hz", "W_hn"], np),
        "bias_ih_l0": _cat(p, ["b_ir", "b_iz", "b_in"], np),
        "bias_hh_l0": _cat(p, ["b_hr", "b_hz", "b_hn"], np),
    }
    return m, w, ("h",)


def _torch_rnn(nonlinearity):
    def build(torch, np, p, sizes):
        m = torch.nn.RNN(sizes["input"], sizes["hidden"], nonlinearity=nonlinearity)
        w = {
            "weight_ih_l0": p["W_ih"],
            "weight_hh_l0": p["W_hh"],
            "bias_ih_l0": p["b_ih"],
            "bias_hh_l0": p["b_hh"],
        }
        return m, w, ("h",)

    return build


# cell name -> (description, builder). A spec only counts as equivalent when its outputs match
# the torch module's on the benchmark data, so an edited `lstm` is never compared as nn.LSTM.
TORCH_EQUIVALENTS = {
    "lstm": ("nn.LSTM", lambda t, np, p, s: _torch_lstm(t, np, p, s)),
    "lstmp": ("nn.LSTM(proj_size)", lambda t, np, p, s: _torch_lstm(t, np, p, s, proj=True)),
    "gru": ("nn.GRU", _torch_gru),
    "rnn_tanh": ("nn.RNN(tanh)", _torch_rnn("tanh")),
    "rnn_relu": ("nn.RNN(relu)", _torch_rnn("relu")),
}


@dataclass
class Contender:
    """A way to run the same computation: `call()` runs it, `sync` waits for a device."""

    name: str
    call: Callable | None = None  # None: not available, `name` says why
    sync: Callable | None = None
    undo: Callable | None = None  # gives back what making it changed (torch's threads)


def torch_contender(cell, kernel, params, state, x, target, threads=None) -> Contender:
    """The PyTorch module equivalent to `cell`, with the kernel's weights, on the same data."""
    entry = TORCH_EQUIVALENTS.get(cell.name)
    if entry is None:
        return Contender(f"PyTorch has no module equivalent to `{cell.name}`")
    try:
        import torch
    except ImportError:
        return Contender("PyTorch is not installed (pip install torch)")
    import numpy as np

    desc, build = entry
    device = "cuda" if target == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return Contender("PyTorch has no CUDA device here")
    sizes = kernel.signature.bind_params(params)
    try:
        module, weights, state_names = build(torch, np, params, sizes)
        module = module.to(dtype=getattr(torch, str(kernel.dtype)))  # before copying weights in
        module.load_state_dict(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
        )
        # (a spec edited under a shipped cell's name may lack the module's state)
        s0 = tuple(torch.from_numpy(state[k][None].copy()) for k in state_names)
    except (KeyError, RuntimeError, ValueError) as exc:
        return Contender(f"the spec is not PyTorch's {desc} ({type(exc).__name__}: {exc})")
    module = module.to(device=device).eval()
    xt = torch.from_numpy(x).to(device)
    s0 = tuple(s.to(device) for s in s0)
    s0 = s0 if len(s0) > 1 else s0[0]

    def call():
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not supported with oneDNN" etc.
            return module(xt, s0)[0].detach().cpu().numpy()

    undo = None
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)

        def undo() -> None:
            torch.set_num_threads(before)

    n = torch.get_num_threads()
    threads = f"{n} thread{'s' * (n != 1)}" if device == "cpu" else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else None
    return Contender(f"torch {desc} ({threads})", call, sync, undo)
