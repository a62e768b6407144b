"""The shipped cells against independent hand-written NumPy step functions.

Every shipped cell that has no exact PyTorch counterpart (those are in test_cells_torch.py) is
re-implemented here in plain float64 NumPy, written from the cell's published equations (the
comments name them), not from lstmc's IR or spec, and run over a sequence batch-vectorized
(x_t is [B, input], so `W @ x` is `x @ W.T`). `lstmc.interpret` must agree to a max abs error
below 1e-12, from the zero state and from a random nonzero state.

Why 1e-12 is a fair bound: both sides evaluate the same float64 formulas; they can differ only
by summation order inside the matrix products and by the exp/tanh/sqrt implementations (or an
algebraically equal form of sigmoid), i.e. by a few ulps per operation. Params use fan-in
scaling (+-1/sqrt(fan_in)), so every pre-activation is O(1); the gated states stay O(1) too
(the LSTM cell state grows by at most 1 per step, IndRNN has |u| <= 0.9), and layer_norm's
amplification of a rounding error is at most 1/sqrt(eps) ~ 316. Over T <= 50 steps that adds
up to ~1e-14..1e-13, one to two orders below the bound, while any real difference (a gate, a
bias, a concat order, a peephole on the wrong c) shows up at 1e-3 or more.

The file also checks that every shipped spec loads through `lstmc.builtin` with a docstring
naming its source, and that lstm.yaml is exactly the spec printed in DESIGN.md.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import lstmc

TOL = 1e-12
EPS = 1e-5  # layer_norm epsilon, as torch.nn.functional.layer_norm

REPO = Path(__file__).resolve().parents[1]
CELLS_DIR = REPO / "lstmc" / "cells"
DESIGN = REPO.parent / "shared" / "DESIGN.md"

SHIPPED = [
    "lstm",
    "peephole_lstm",
    "cifg_lstm",
    "gru",
    "gru_cho",
    "mgu",
    "rnn_tanh",
    "rnn_relu",
    "lstmp",
    "layernorm_lstm",
    "indrnn",
]


# ---------------------------------------------------------------------------------------------
# plain NumPy building blocks


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def relu(v):
    return np.maximum(v, 0.0)


def mv(W, v):
    """W @ v for a batch of row vectors v: [B, in] -> [B, out]."""
    return v @ W.T


def layer_norm(v, gamma, beta):
    """Normalize each row over its features: biased variance, eps inside the sqrt."""
    mean = v.mean(axis=-1, keepdims=True)
    d = v - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + EPS) * gamma + beta


def mat(rng, out, fan_in):
    k = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-k, k, size=(out, fan_in))


def vec(rng, n, scale=0.5):
    return rng.uniform(-scale, scale, size=n)


# ---------------------------------------------------------------------------------------------
# the cells: params(rng, I, H) -> dict, step(p, x, s) -> (y_t, new state), state sizes


def peephole_lstm_params(rng, I, H):
    p = {}
    for g in "ifgo":
        p[f"W_{g}"] = mat(rng, H, I)
        p[f"U_{g}"] = mat(rng, H, H)
        p[f"b_{g}"] = vec(rng, H)
    for g in "ifo":
        p[f"p_{g}"] = vec(rng, H)
    return p


def peephole_lstm_step(p, x, s):
    # Gers & Schmidhuber 2000: i, f peek at c_{t-1}; o peeks at c_t.
    h, c = s["h"], s["c"]
    i = sigmoid(mv(p["W_i"], x) + mv(p["U_i"], h) + p["p_i"] * c + p["b_i"])
    f = sigmoid(mv(p["W_f"], x) + mv(p["U_f"], h) + p["p_f"] * c + p["b_f"])
    g = np.tanh(mv(p["W_g"], x) + mv(p["U_g"], h) + p["b_g"])
    c2 = f * c + i * g
    o = sigmoid(mv(p["W_o"], x) + mv(p["U_o"], h) + p["p_o"] * c2 + p["b_o"])
    h2 = o * np.tanh(c2)
    return h2, {"h": h2, "c": c2}


def cifg_lstm_params(rng, I, H):
    p = {}
    for g in "fgo":
        p[f"W_{g}"] = mat(rng, H, H + I)  # acts on [h; x]
        p[f"b_{g}"] = vec(rng, H)
    return p


def cifg_lstm_step(p, x, s, forget_bias=0.0):
    # Greff et al. 2017, CIFG: i = 1 - f.
    h, c = s["h"], s["c"]
    hx = np.concatenate([h, x], axis=-1)
    f = sigmoid(mv(p["W_f"], hx) + p["b_f"] + forget_bias)
    g = np.tanh(mv(p["W_g"], hx) + p["b_g"])
    o = sigmoid(mv(p["W_o"], hx) + p["b_o"])
    c2 = f * c + (1.0 - f) * g
    h2 = o * np.tanh(c2)
    return h2, {"h": h2, "c": c2}


def gru_cho_params(rng, I, H):
    p = {}
    for g in "rzn":
        p[f"W_{g}"] = mat(rng, H, I)
        p[f"U_{g}"] = mat(rng, H, H)
        p[f"b_{g}"] = vec(rng, H)
    return p


def gru_cho_step(p, x, s):
    # Cho et al. 2014: the reset gate scales h *before* the recurrent product.
    h = s["h"]
    r = sigmoid(mv(p["W_r"], x) + mv(p["U_r"], h) + p["b_r"])
    z = sigmoid(mv(p["W_z"], x) + mv(p["U_z"], h) + p["b_z"])
    n = np.tanh(mv(p["W_n"], x) + mv(p["U_n"], r * h) + p["b_n"])
    h2 = z * h + (1.0 - z) * n
    return h2, {"h": h2}


def mgu_params(rng, I, H):
    return {
        "W_f": mat(rng, H, H + I),
        "W_h": mat(rng, H, H + I),
        "b_f": vec(rng, H),
        "b_h": vec(rng, H),
    }


def mgu_step(p, x, s):
    # Zhou et al. 2016: f = s(W_f[h, x] + b_f); n = tanh(W_h[f*h, x] + b_h); h' = (1-f)h + f n.
    h = s["h"]
    f = sigmoid(mv(p["W_f"], np.concatenate([h, x], axis=-1)) + p["b_f"])
    n = np.tanh(mv(p["W_h"], np.concatenate([f * h, x], axis=-1)) + p["b_h"])
    h2 = (1.0 - f) * h + f * n
    return h2, {"h": h2}


def layernorm_lstm_params(rng, I, H):
    p = {}
    for g in "ifgo":
        p[f"W_{g}"] = mat(rng, H, I)
        p[f"U_{g}"] = mat(rng, H, H)
        p[f"b_{g}"] = vec(rng, H)
        for src in "xh":
            # init is ones / zeros; perturb so that a gain or shift ignored would be caught
            p[f"gamma_{src}{g}"] = 1.0 + 0.2 * rng.standard_normal(H)
            p[f"beta_{src}{g}"] = 0.2 * rng.standard_normal(H)
    p["gamma_c"] = 1.0 + 0.2 * rng.standard_normal(H)
    p["beta_c"] = 0.2 * rng.standard_normal(H)
    return p


def layernorm_lstm_step(p, x, s):
    # Ba, Kiros & Hinton 2016: LN(W x) + LN(U h) + b per gate; h' = o * tanh(LN(c')).
    h, c = s["h"], s["c"]

    def pre(g):
        return (
            layer_norm(mv(p[f"W_{g}"], x), p[f"gamma_x{g}"], p[f"beta_x{g}"])
            + layer_norm(mv(p[f"U_{g}"], h), p[f"gamma_h{g}"], p[f"beta_h{g}"])
            + p[f"b_{g}"]
        )

    i, f, o = sigmoid(pre("i")), sigmoid(pre("f")), sigmoid(pre("o"))
    g = np.tanh(pre("g"))
    c2 = f * c + i * g
    h2 = o * np.tanh(layer_norm(c2, p["gamma_c"], p["beta_c"]))
    return h2, {"h": h2, "c": c2}


def indrnn_params(rng, I, H):
    return {
        "W": mat(rng, H, I),
        "u": rng.uniform(-0.9, 0.9, size=H),  # |u| < 1 keeps the relu recurrence bounded
        "b": vec(rng, H),
    }


def indrnn_step(p, x, s):
    # Li et al. 2018: h' = relu(W x + u * h + b), u element-wise.
    h2 = relu(mv(p["W"], x) + p["u"] * s["h"] + p["b"])
    return h2, {"h": h2}


CELLS = {
    "peephole_lstm": (peephole_lstm_params, peephole_lstm_step, ("h", "c")),
    "cifg_lstm": (cifg_lstm_params, cifg_lstm_step, ("h", "c")),
    "gru_cho": (gru_cho_params, gru_cho_step, ("h",)),
    "mgu": (mgu_params, mgu_step, ("h",)),
    "layernorm_lstm": (layernorm_lstm_params, layernorm_lstm_step, ("h", "c")),
    "indrnn": (indrnn_params, indrnn_step, ("h",)),
}


def run_reference(step, params, x, state):
    ys = []
    for t in range(x.shape[0]):
        y, state = step(params, x[t], state)
        ys.append(y)
    return np.stack(ys), state


def _max_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# ---------------------------------------------------------------------------------------------
# the property test


@pytest.mark.parametrize("name", sorted(CELLS))
@given(
    T=st.integers(1, 50),
    B=st.integers(1, 8),
    I=st.integers(1, 64),
    H=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_cell_matches_numpy_reference(name, T, B, I, H, seed):
    make_params, step, state_names = CELLS[name]
    rng = np.random.default_rng(seed)
    params = make_params(rng, I, H)
    x = rng.standard_normal((T, B, I))
    cell = lstmc.builtin(name)

    zero = {k: np.zeros((B, H)) for k in state_names}
    random_state = {k: 0.5 * rng.standard_normal((B, H)) for k in state_names}
    for given_state, ref_state in ((None, zero), (random_state, random_state)):
        where = "zero state" if given_state is None else "random state"
        y_ref, final_ref = run_reference(step, params, x, dict(ref_state))
        y, final = lstmc.interpret(cell, x, params, state=given_state)
        err = _max_err(y, y_ref)
        assert err < TOL, f"{name} ({where}): y max abs error {err:.3g}"
        assert set(final) == set(state_names), f"{name}: state keys {sorted(final)}"
        for k in state_names:
            err = _max_err(final[k], final_ref[k])
            assert err < TOL, f"{name} ({where}): final {k} max abs error {err:.3g}"


@given(
    T=st.integers(1, 20),
    B=st.integers(1, 4),
    I=st.integers(1, 16),
    H=st.integers(1, 16),
    forget_bias=st.sampled_from([1.0, -0.5, 2.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_cifg_forget_bias_constant(T, B, I, H, forget_bias, seed):
    """The `forget_bias` constant (default 0.0) is overridable and lands on the forget gate."""
    rng = np.random.default_rng(seed)
    params = cifg_lstm_params(rng, I, H)
    x = rng.standard_normal((T, B, I))
    state = {k: 0.5 * rng.standard_normal((B, H)) for k in ("h", "c")}

    def step(p, x, s):
        return cifg_lstm_step(p, x, s, forget_bias=forget_bias)

    y_ref, final_ref = run_reference(step, params, x, dict(state))
    cell = lstmc.builtin("cifg_lstm")
    y, final = lstmc.interpret(cell, x, params, state=state, constants={"forget_bias": forget_bias})
    assert _max_err(y, y_ref) < TOL
    for k in ("h", "c"):
        assert _max_err(final[k], final_ref[k]) < TOL


def test_references_are_not_vacuous():
    """Guard on the harness: the references differ from each other where the cells do."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 4))
    s0 = {"h": 0.5 * rng.standard_normal((3, 6))}
    p = gru_cho_params(rng, 4, 6)
    y_cho, _ = run_reference(gru_cho_step, p, x, dict(s0))

    def torch_style(p, x, s):  # reset applied after the product, as in torch.nn.GRU
        h = s["h"]
        r = sigmoid(mv(p["W_r"], x) + mv(p["U_r"], h) + p["b_r"])
        z = sigmoid(mv(p["W_z"], x) + mv(p["U_z"], h) + p["b_z"])
        n = np.tanh(mv(p["W_n"], x) + r * mv(p["U_n"], h) + p["b_n"])
        h2 = z * h + (1.0 - z) * n
        return h2, {"h": h2}

    y_torch, _ = run_reference(torch_style, p, x, dict(s0))
    assert _max_err(y_cho, y_torch) > 1e-3


def test_layer_norm_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 64):
        v = rng.standard_normal((5, n))
        gamma, beta = rng.standard_normal(n), rng.standard_normal(n)
        ref = torch.nn.functional.layer_norm(
            torch.from_numpy(v), (n,), torch.from_numpy(gamma), torch.from_numpy(beta), eps=EPS
        ).numpy()
        assert _max_err(layer_norm(v, gamma, beta), ref) < 1e-12


# ---------------------------------------------------------------------------------------------
# the shipped specs themselves


def _spec_files():
    return sorted(CELLS_DIR.glob("*.yaml"))


def test_every_listed_cell_is_shipped():
    shipped = {p.stem for p in _spec_files()}
    missing = set(SHIPPED) - shipped
    assert not missing, f"missing specs: {sorted(missing)}"


# a year (1990, 2014, ...) or a library whose convention the cell follows
SOURCE = re.compile(r"\b(19|20)\d\d\b|torch|PyTorch|TensorFlow|Keras|ONNX|cuDNN")


@pytest.mark.parametrize("path", _spec_files(), ids=lambda p: p.stem)
def test_shipped_spec_loads_and_names_its_source(path):
    raw = yaml.safe_load(path.read_text())
    assert raw["cell"] == path.stem, "the cell name must match the file name"
    doc = raw.get("doc")
    assert isinstance(doc, str) and doc.strip(), "doc must be a non-empty string"
    first = doc.strip().splitlines()[0]
    assert SOURCE.search(first), f"doc's first line names no source: {first!r}"

    cell = lstmc.builtin(path.stem)
    name = getattr(cell, "name", None)
    if name is not None:
        assert name == path.stem
    cell_doc = getattr(cell, "doc", None)
    if cell_doc is not None:
        assert cell_doc.strip().splitlines()[0] == first


def test_lstm_spec_is_the_design_contract():
    if not DESIGN.exists():
        pytest.skip(f"{DESIGN} not present")
    m = re.search(r"```yaml\n(.*?)```", DESIGN.read_text(), re.DOTALL)
    assert m, "DESIGN.md has no ```yaml block"
    assert (CELLS_DIR / "lstm.yaml").read_text() == m.group(1)
