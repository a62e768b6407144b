"""The reference interpreter against PyTorch, on the shipped cells that copy torch 1:1.

For `lstm`, `gru`, `rnn_tanh`, `rnn_relu` and `lstmp` a float64 torch module is built with
torch's own random initialization (seeded), its weights are copied into an lstmc params dict
(unpacking torch's stacked gate rows), and `lstmc.interpret` must reproduce torch's outputs and
final state, from the zero state and from a random nonzero state, to a max abs error < 1e-10.

torch packs the gates in the rows of weight_ih_l0 / weight_hh_l0 / bias_*_l0 as
i, f, g, o for nn.LSTM and r, z, n for nn.GRU. The lstmc LSTM has one bias per gate, so torch's
bias_ih + bias_hh are summed into it; the GRU and RNN cells keep both biases like torch.

Both sides compute the same float64 formulas, differing only in summation order and in the
implementation of exp/tanh (an ulp or two per operation); with torch's +-1/sqrt(hidden)
weights and T <= 50 the accumulated difference stays around 1e-13, so 1e-10 leaves ample room
while any real disagreement (a gate swapped, a bias dropped) shows up at 1e-3 or more.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lstmc

TOL = 1e-10

seqs = st.integers(1, 50)
batches = st.integers(1, 8)
sizes = st.integers(1, 64)
seeds = st.integers(0, 2**32 - 1)


def _np(t):
    return t.detach().numpy().copy()


def _max_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _split(w, n):
    """torch's stacked gate rows -> n equal blocks."""
    return np.split(_np(w), n, axis=0)


def _lstm_params(m, proj=False):
    W_i, W_f, W_g, W_o = _split(m.weight_ih_l0, 4)
    U_i, U_f, U_g, U_o = _split(m.weight_hh_l0, 4)
    b = _np(m.bias_ih_l0) + _np(m.bias_hh_l0)
    b_i, b_f, b_g, b_o = np.split(b, 4)
    p = {
        "W_i": W_i,
        "W_f": W_f,
        "W_g": W_g,
        "W_o": W_o,
        "U_i": U_i,
        "U_f": U_f,
        "U_g": U_g,
        "U_o": U_o,
        "b_i": b_i,
        "b_f": b_f,
        "b_g": b_g,
        "b_o": b_o,
    }
    if proj:
        p["W_hr"] = _np(m.weight_hr_l0)
    return p


def _gru_params(m):
    W_ir, W_iz, W_in = _split(m.weight_ih_l0, 3)
    W_hr, W_hz, W_hn = _split(m.weight_hh_l0, 3)
    b_ir, b_iz, b_in = _split(m.bias_ih_l0, 3)
    b_hr, b_hz, b_hn = _split(m.bias_hh_l0, 3)
    return {
        "W_ir": W_ir,
        "W_iz": W_iz,
        "W_in": W_in,
        "W_hr": W_hr,
        "W_hz": W_hz,
        "W_hn": W_hn,
        "b_ir": b_ir,
        "b_iz": b_iz,
        "b_in": b_in,
        "b_hr": b_hr,
        "b_hz": b_hz,
        "b_hn": b_hn,
    }


def _rnn_params(m):
    return {
        "W_ih": _np(m.weight_ih_l0),
        "W_hh": _np(m.weight_hh_l0),
        "b_ih": _np(m.bias_ih_l0),
        "b_hh": _np(m.bias_hh_l0),
    }


def _check(cell_name, module, params, x, state_sizes, rng):
    """Run torch and the interpreter from the zero state and from a random state; compare."""
    cell = lstmc.builtin(cell_name)
    B = x.shape[1]
    names = list(state_sizes)  # torch order: h (then c)
    xt = torch.from_numpy(x)
    random_state = {k: 0.5 * rng.standard_normal((B, n)) for k, n in state_sizes.items()}
    for state in (None, random_state):
        with torch.no_grad():
            if state is None:
                y_t, s_t = module(xt)
            else:
                s0 = tuple(torch.from_numpy(state[k][None].copy()) for k in names)
                y_t, s_t = module(xt, s0 if len(s0) > 1 else s0[0])
        s_t = s_t if isinstance(s_t, tuple) else (s_t,)
        final_t = {k: _np(v)[0] for k, v in zip(names, s_t)}

        y, final = lstmc.interpret(cell, x, params, state=state)
        where = "zero state" if state is None else "random state"
        err = _max_err(y, _np(y_t))
        assert err < TOL, f"{cell_name} ({where}): y max abs error {err:.3g}"
        assert set(final) == set(names), f"{cell_name}: state keys {sorted(final)}"
        for k in names:
            err = _max_err(final[k], final_t[k])
            assert err < TOL, f"{cell_name} ({where}): final {k} max abs error {err:.3g}"


@given(T=seqs, B=batches, I=sizes, H=sizes, seed=seeds)
def test_lstm_matches_torch(T, B, I, H, seed):
    torch.manual_seed(seed % 2**31)
    rng = np.random.default_rng(seed)
    m = torch.nn.LSTM(I, H, dtype=torch.float64)
    x = rng.standard_normal((T, B, I))
    _check("lstm", m, _lstm_params(m), x, {"h": H, "c": H}, rng)


@given(T=seqs, B=batches, I=sizes, H=sizes, seed=seeds)
def test_gru_matches_torch(T, B, I, H, seed):
    torch.manual_seed(seed % 2**31)
    rng = np.random.default_rng(seed)
    m = torch.nn.GRU(I, H, dtype=torch.float64)
    x = rng.standard_normal((T, B, I))
    _check("gru", m, _gru_params(m), x, {"h": H}, rng)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@given(T=seqs, B=batches, I=sizes, H=sizes, seed=seeds)
def test_rnn_matches_torch(nonlinearity, T, B, I, H, seed):
    torch.manual_seed(seed % 2**31)
    rng = np.random.default_rng(seed)
    m = torch.nn.RNN(I, H, nonlinearity=nonlinearity, dtype=torch.float64)
    x = rng.standard_normal((T, B, I))
    _check(f"rnn_{nonlinearity}", m, _rnn_params(m), x, {"h": H}, rng)


@given(T=seqs, B=batches, I=sizes, H=st.integers(2, 64), data=st.data(), seed=seeds)
def test_lstmp_matches_torch(T, B, I, H, data, seed):
    P = data.draw(st.integers(1, H - 1), label="proj")  # torch requires proj_size < hidden_size
    torch.manual_seed(seed % 2**31)
    rng = np.random.default_rng(seed)
    m = torch.nn.LSTM(I, H, proj_size=P, dtype=torch.float64)
    x = rng.standard_normal((T, B, I))
    _check("lstmp", m, _lstm_params(m, proj=True), x, {"h": P, "c": H}, rng)


def test_lstm_weight_copy_is_not_vacuous():
    """A guard on the harness itself: swapping two gates must break the match."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = torch.nn.LSTM(3, 5, dtype=torch.float64)
    x = rng.standard_normal((4, 2, 3))
    params = _lstm_params(m)
    params["W_i"], params["W_f"] = params["W_f"], params["W_i"]
    with pytest.raises(AssertionError):
        _check("lstm", m, params, x, {"h": 5, "c": 5}, rng)
