"""lstmc.from_torch: a torch nn.LSTM / nn.GRU / nn.RNN, layer by layer and direction by
direction, compiled and run, gives the module's own outputs and final state.

The truth is the torch module itself (float64, so that the comparison sees the mapping and not
float32 rounding): a gate taken from the wrong rows, a bias dropped or a direction swapped is
off by 1e-2 or more, while the two float64 computations differ by ~1e-14 (summation order and
exp/tanh implementations, as in test_cells_torch.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import lstmc
from lstmc import LstmcError

TOL = 1e-10


def _run(module, x, h0=None, c0=None):
    """lstmc's version of `module(x, state)`: each layer and direction through its own kernel,
    the directions concatenated as torch does, each layer fed the one below."""
    directions = 2 if module.bidirectional else 1
    finals = {"h": [], "c": []}
    inp = x
    for layer in range(module.num_layers):
        outs = []
        for reverse in range(directions):
            cell, params = lstmc.from_torch(module, layer=layer, reverse=bool(reverse))
            kernel = lstmc.compile(cell, dtype="float64")
            k = layer * directions + reverse
            state = {"h": h0[k]} if h0 is not None else {}
            if c0 is not None:
                state["c"] = c0[k]
            seq = inp[::-1] if reverse else inp
            y, final = kernel(np.ascontiguousarray(seq), kernel.pack(params), state or None)
            outs.append(y[::-1] if reverse else y)
            for name in finals:
                if name in final:
                    finals[name].append(final[name])
        inp = np.concatenate(outs, axis=2)
    return inp, {k: np.stack(v) for k, v in finals.items() if v}


def _check(module, x, with_state, rng):
    directions = 2 if module.bidirectional else 1
    n = module.num_layers * directions
    B = x.shape[1]
    h_size = getattr(module, "proj_size", 0) or module.hidden_size
    is_lstm = isinstance(module, torch.nn.LSTM)
    h0 = c0 = None
    if with_state:
        h0 = 0.5 * rng.standard_normal((n, B, h_size))
        c0 = 0.5 * rng.standard_normal((n, B, module.hidden_size)) if is_lstm else None
    with torch.no_grad():
        if h0 is None:
            y_t, s_t = module(torch.from_numpy(x))
        else:
            s0 = (
                torch.from_numpy(h0) if c0 is None else (torch.from_numpy(h0), torch.from_numpy(c0))
            )
            y_t, s_t = module(torch.from_numpy(x), s0)
    s_t = s_t if isinstance(s_t, tuple) else (s_t,)
    y, final = _run(module, x, h0, c0)
    assert np.abs(y - y_t.numpy()).max() < TOL
    for name, t in zip(("h", "c"), s_t):
        assert np.abs(final[name] - t.numpy()).max() < TOL, name


modules = st.sampled_from(["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"])


@given(
    kind=modules,
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    T=st.integers(1, 6),
    B=st.integers(1, 3),
    I=st.integers(1, 6),
    H=st.integers(2, 7),
    with_state=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
# the most that can go wrong at once, which the CI profile's few examples might not draw
@example("lstm_proj", 2, True, False, 4, 2, 3, 5, True, 1)
@example("gru", 2, True, False, 3, 2, 4, 3, True, 2)
def test_a_torch_module_run_through_lstmc_gives_its_outputs(
    kind, layers, bidirectional, bias, T, B, I, H, with_state, seed
):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    common = dict(num_layers=layers, bidirectional=bidirectional, bias=bias, dtype=torch.float64)
    if kind.startswith("rnn"):
        module = torch.nn.RNN(I, H, nonlinearity=kind[4:], **common)
    elif kind == "gru":
        module = torch.nn.GRU(I, H, **common)
    else:
        module = torch.nn.LSTM(I, H, proj_size=H - 1 if kind == "lstm_proj" else 0, **common)
    _check(module, rng.standard_normal((T, B, I)), with_state, rng)


def test_the_cell_and_params_of_each_kind():
    torch.manual_seed(0)
    cases = [
        (torch.nn.LSTM(3, 4), "lstm"),
        (torch.nn.LSTM(3, 4, proj_size=2), "lstmp"),
        (torch.nn.GRU(3, 4), "gru"),
        (torch.nn.RNN(3, 4), "rnn_tanh"),
        (torch.nn.RNN(3, 4, nonlinearity="relu"), "rnn_relu"),
    ]
    for module, name in cases:
        cell, params = lstmc.from_torch(module)
        assert cell.name == name
        kernel = lstmc.compile(cell)
        assert set(params) == {p.name for p in kernel.signature.params}
        summed = {f"b_{g}" for g in "ifgo"} if name.startswith("lstm") else set()
        for p, a in params.items():  # an LSTM's biases: the exact sums of torch's two
            assert a.dtype == (np.float64 if p in summed else np.float32), p
    m = torch.nn.LSTM(3, 4)
    _, params = lstmc.from_torch(m)
    b = (m.bias_ih_l0.double() + m.bias_hh_l0.double()).detach().numpy()
    assert np.array_equal(params["b_f"], b[4:8])  # the forget gate: rows 4..8, both biases


@pytest.mark.parametrize("proj_size", [0, 3])
def test_a_float32_lstm_in_a_float64_kernel_matches_its_float64_module(proj_size):
    """A float32 module compiled for float64 computes what `module.double()` computes: its
    biases were summed in float32 and rounded (~1e-8 off the float64 sum, so y was 8e-9 off
    torch's float64 output; the GRU's, kept apart, were exact)."""
    torch.manual_seed(0)
    m = torch.nn.LSTM(7, 24, proj_size=proj_size)
    cell, params = lstmc.from_torch(m)
    x = torch.randn(5, 3, 7, dtype=torch.float64)
    y, _ = lstmc.compile(cell, dtype="float64")(x.numpy(), params)
    y_ref, _ = lstmc.interpret(cell, x.numpy(), params)
    with torch.no_grad():
        y_t, _ = m.double()(x)
    assert np.abs(y - y_t.numpy()).max() < 1e-13
    assert np.abs(y_ref - y_t.numpy()).max() < 1e-13
    # and for a float32 kernel, the float64 sum rounds to the float32 sum torch makes
    b32 = (m.bias_ih_l0.float() + m.bias_hh_l0.float()).detach().numpy()
    assert np.array_equal(np.float32(np.concatenate([params[f"b_{g}"] for g in "ifgo"])), b32)


def test_a_float32_kernel_matches_nn_lstm_to_float32_rounding():
    """The common case: torch's default float32 module, a float32 kernel. Each step's gate
    sums run over input + hidden = 64 terms: the bound is a few float32 ulps of the outputs
    (|h| < 1) per step, accumulated over T=20 steps: 2e-5 is ~170 ulps of 1.0."""
    torch.manual_seed(0)
    m = torch.nn.LSTM(32, 32)
    x = torch.randn(20, 4, 32)
    cell, params = lstmc.from_torch(m)
    kernel = lstmc.compile(cell)
    y, state = kernel(x.numpy(), kernel.pack(params))
    with torch.no_grad():
        y_t, (h_t, c_t) = m(x)
    assert np.abs(y - y_t.numpy()).max() < 2e-5
    assert np.abs(state["c"] - c_t[0].numpy()).max() < 2e-5


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: lstmc.from_torch(torch.nn.Linear(2, 3)),
            "nn.LSTM, nn.GRU or nn.RNN; got torch.nn.modules.linear.Linear",
        ),
        (lambda: lstmc.from_torch(torch.nn.LSTMCell(2, 3)), "copy its weight_ih, weight_hh"),
        (lambda: lstmc.from_torch(torch.nn.LSTM(2, 3), layer=1), "an integer in [0, 1)"),
        (lambda: lstmc.from_torch(torch.nn.GRU(2, 3), layer=True), "got True"),
        (lambda: lstmc.from_torch(torch.nn.GRU(2, 3), layer=0.0), "got 0.0"),
        (lambda: lstmc.from_torch(torch.nn.RNN(2, 3), reverse=True), "needs a bidirectional RNN"),
        (
            lambda: lstmc.from_torch(torch.nn.LSTM(2, 3, bidirectional=True), reverse="no"),
            "reverse must be True or False; got 'no'",
        ),
        (
            lambda: lstmc.from_torch(torch.nn.GRU(2, 3, device="meta")),
            "weight_ih_l0 is on the meta device (no values); materialize the module first",
        ),
    ],
)
def test_what_from_torch_refuses(call, message):
    with pytest.raises(LstmcError) as info:
        call()
    assert message in str(info.value)


def test_a_bfloat16_module_and_a_numpy_layer_index():
    """NumPy has no bfloat16: its weights come as float32 (each value exactly); a layer index
    from NumPy (np.int64, as from np.arange) is an integer like any other."""
    torch.manual_seed(0)
    m = torch.nn.GRU(3, 4, num_layers=2)
    _, want = lstmc.from_torch(m, layer=1)
    _, got = lstmc.from_torch(m.to(torch.bfloat16), layer=np.int64(1))
    assert set(got) == set(want)
    for name, a in got.items():
        assert a.dtype == np.float32
        exact = torch.from_numpy(want[name]).to(torch.bfloat16).float().numpy()
        assert np.array_equal(a, exact), name


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_a_half_precision_lstms_biases_are_summed_widened(half):
    """Kernels compute in float32 at least: the widened half-precision biases are summed
    exactly (summed in float16, the sum was rounded to ~5e-5 off)."""
    torch.manual_seed(0)
    m = torch.nn.LSTM(8, 16).to(getattr(torch, half))
    _, params = lstmc.from_torch(m)
    b_ih, b_hh = (getattr(m, n).detach().double().numpy() for n in ("bias_ih_l0", "bias_hh_l0"))
    bias = np.concatenate([params[f"b_{g}"] for g in "ifgo"])
    assert np.array_equal(bias, b_ih + b_hh)
    assert np.array_equal(np.float32(bias), np.float32(b_ih) + np.float32(b_hh))


def test_a_batch_first_module_is_warned_about():
    """Its [B, T, input] x would pass the kernel's shape check and give wrong numbers."""
    with pytest.warns(UserWarning, match=r"batch_first, but kernels take x as \[T, B, input\]"):
        lstmc.from_torch(torch.nn.GRU(2, 3, batch_first=True))


def test_a_cpu_kernel_takes_and_returns_torch_tensors():
    """Called with a CPU tensor for x, a kernel returns tensors (y and the state), viewing the
    arrays it computed, and takes tensors for the state and the params too: the same numbers
    as with NumPy arrays, and nn.LSTM's to float32 rounding."""
    torch.manual_seed(0)
    m = torch.nn.LSTM(8, 16)
    cell, params = lstmc.from_torch(m)
    kernel = lstmc.compile(cell)
    x, h0, c0 = torch.randn(5, 3, 8), torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    y, state = kernel(x, params, {"h": h0[0], "c": c0[0]})
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (5, 3, 16)
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    y_np, state_np = kernel(x.numpy(), params, {"h": h0[0].numpy(), "c": c0[0].numpy()})
    assert np.array_equal(y.numpy(), y_np) and np.array_equal(state["c"].numpy(), state_np["c"])
    with torch.no_grad():
        y_t, (h_t, c_t) = m(x, (h0, c0))
    assert (y - y_t).abs().max() < 1e-6 and (state["c"] - c_t[0]).abs().max() < 1e-6
    tensors = {name: torch.from_numpy(a) for name, a in params.items()}
    packed = kernel.pack(tensors)
    assert np.array_equal(kernel(x, packed, {"h": h0[0], "c": c0[0]})[0].numpy(), y_np)
    y64, _ = lstmc.compile(cell, dtype="float64")(x.double(), params)
    assert y64.dtype == torch.float64


def test_what_a_cpu_kernel_refuses_of_torch_tensors():
    torch.manual_seed(0)
    cell, params = lstmc.from_torch(torch.nn.GRU(4, 6))
    kernel = lstmc.compile(cell)
    x = torch.randn(3, 2, 4)
    weight = torch.from_numpy(params["W_ir"]).clone().requires_grad_()
    cases = [
        (lambda: kernel(x.clone().requires_grad_(), params), "`x` requires grad"),
        (lambda: kernel(x, {**params, "W_ir": weight}), "param `W_ir` requires grad"),
        (lambda: kernel(x.to(torch.bfloat16), params), "float64 tensor (this kernel's: float32)"),
        (lambda: kernel(torch.empty(3, 2, 4, device="meta"), params), "tensor on meta"),
        # float64 to a float32 kernel: no silent cast, and torch's way to convert
        (
            lambda: kernel(x.double(), params),
            "`x` is a torch.float64 tensor but the kernel was compiled for float32; convert it "
            "(`t.float()`) or compile with dtype='float64'",
        ),
        (
            lambda: kernel(x, params, {"h": torch.zeros(2, 6, dtype=torch.float64)}),
            "state `h` is a torch.float64 tensor but the kernel was compiled for float32",
        ),
        (
            lambda: kernel(x, params, {"h": torch.zeros(2, 6).requires_grad_()}),
            "state `h` requires grad",
        ),
    ]
    for call, message in cases:
        with pytest.raises(lstmc.KernelArgumentError) as info:
            call()
        assert message in str(info.value)
    assert "no backward pass" in str(_error_of(cases[0][0]))
    with torch.no_grad():  # autograd off: nothing to refuse
        y, _ = kernel(x, {**params, "W_ir": weight})
    assert isinstance(y, torch.Tensor)


def _error_of(call):
    with pytest.raises(lstmc.KernelArgumentError) as info:
        call()
    return info.value


def test_torch_tensors_of_every_kind_a_user_hands_in():
    """A state in any Mapping, a tensor with its negation bit set (a lazy `-t`), a state
    that keeps y's memory alive no longer than y: each as with plain arrays."""
    import types as pytypes
    from collections import OrderedDict

    torch.manual_seed(0)
    cell, params = lstmc.from_torch(torch.nn.GRU(4, 64))
    kernel = lstmc.compile(cell)
    x, h = torch.randn(6, 16, 4), torch.randn(16, 64)
    want, want_state = kernel(x.numpy(), params, {"h": h.numpy()})
    for state in (OrderedDict(h=h), pytypes.MappingProxyType({"h": h})):
        y, got = kernel(x, params, state)
        assert np.array_equal(y.numpy(), want) and np.array_equal(got["h"].numpy(), want_state["h"])
    y_np, _ = kernel(x.numpy(), params, OrderedDict(h=h))  # NumPy x, a tensor in the state
    assert np.array_equal(y_np, want)
    lazy = torch._neg_view(x)  # -x, as a view with the negation bit (numpy() refuses it)
    assert lazy.is_neg()
    np.testing.assert_array_equal(
        kernel(lazy, params, {"h": h})[0].numpy(), kernel(-x, params, {"h": h})[0].numpy()
    )
    kernel.threads, kernel.split = 2, "units"
    for T in (4, 5):  # the final state is either buffer of the pair
        y, st = kernel(
            np.random.default_rng(T).standard_normal((T, 16, 4)).astype(np.float32), params
        )
        assert kernel.last_plan.mode == "units"
        assert st["h"].base.nbytes < 2 * st["h"].nbytes + 1024  # not y's allocation


def test_interpret_takes_cpu_tensors_as_the_kernels_do():
    """The reference takes what a kernel takes: CPU tensors, and refuses one that requires
    grad with the kernels' message (it was torch's RuntimeError from np.asarray)."""
    torch.manual_seed(0)
    cell, params = lstmc.from_torch(torch.nn.LSTM(3, 4))
    x = torch.randn(2, 1, 3)
    y_tensor, _ = lstmc.interpret(cell, x, params)
    y_array, _ = lstmc.interpret(cell, x.numpy(), params)
    assert np.array_equal(y_tensor, y_array)
    with pytest.raises(lstmc.KernelArgumentError, match="`x` requires grad"):
        lstmc.interpret(cell, x.clone().requires_grad_(), params)
