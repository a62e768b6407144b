"""Bad arguments to a kernel, its settings and compile(): each is a clear lstmc error that
names the argument, with whole shapes and where a size came from, never a bare Python error
from inside the runtime (DESIGN.md section 3)."""

from __future__ import annotations

import numpy as np
import pytest

import lstmc
from lstmc import CudaUnavailableError, KernelArgumentError, LstmcError


@pytest.fixture(scope="module")
def kernel():
    return lstmc.compile(lstmc.builtin("lstm"))


@pytest.fixture(scope="module")
def params(kernel):
    return kernel.init_params(input=6, hidden=10)


def _error(call) -> str:
    with pytest.raises(KernelArgumentError) as info:
        call()
    return str(info.value)


def test_params_that_are_not_a_dict(kernel):
    x = np.zeros((5, 3, 6), np.float32)
    for bad in (None, [1.0], 3):
        msg = _error(lambda bad=bad: kernel(x, bad))
        assert msg.startswith("params must be a dict") and "kernel.pack" in msg
        assert type(bad).__name__ in msg


def _state_that_is_not_a_dict():
    import torch

    h = np.ones((3, 10), np.float32)
    return [h, torch.from_numpy(h), np.zeros((0, 0), np.float32), 0, [], (), ""]


@pytest.mark.parametrize("bad", _state_that_is_not_a_dict(), ids=lambda v: type(v).__name__)
def test_a_state_that_is_not_a_dict_is_refused(kernel, params, bad):
    """A lone state array (an easy slip for a GRU's h) raised NumPy's or torch's "truth value
    is ambiguous", 0 a TypeError, and an empty list or string ran from zeros in silence."""
    x = np.zeros((5, 3, 6), np.float32)
    packed = kernel.pack(params)
    for call in (
        lambda: kernel(x, params, bad),
        lambda: kernel(x, packed, state=bad),
        lambda: lstmc.interpret(lstmc.builtin("lstm"), x, params, bad),
    ):
        msg = _error(call)
        assert msg.startswith("state must be a dict {name: [B, n] array}"), msg
        assert type(bad).__name__ in msg


def test_interpret_refuses_params_that_are_not_a_dict():
    x = np.zeros((5, 3, 6), np.float32)
    msg = _error(lambda: lstmc.interpret(lstmc.builtin("lstm"), x, [np.zeros(3)]))
    assert msg == "params must be a dict {name: array}, got list"


@pytest.mark.parametrize("value", ["x", 1.5, 0, -1, True])
def test_bad_thread_counts_are_refused_when_set(kernel, value):
    k = lstmc.compile(lstmc.builtin("lstm"))
    msg = _error(lambda: setattr(k, "threads", value))
    assert "kernel.threads must be None" in msg and repr(value) in msg
    assert k.threads is None  # unchanged


def test_bad_split_is_refused_and_good_settings_kept():
    k = lstmc.compile(lstmc.builtin("lstm"))
    assert 'kernel.split must be None, "batch" or "units"' in _error(
        lambda: setattr(k, "split", "foo")
    )
    k.threads, k.split = np.int64(2), "units"
    assert (k.threads, k.split) == (2, "units") and type(k.threads) is int
    k.threads, k.split = None, None


def test_a_wrong_size_shows_whole_shapes_and_where_the_size_came_from(kernel, params):
    msg = _error(lambda: kernel(np.zeros((5, 3, 5), np.float32), params))
    assert msg == (
        "x has shape (5, 3, 5) but expected [T, B, input] = (5, 3, 6) with input=6 "
        "(from param `W_i`)"
    )
    x = np.zeros((5, 3, 6), np.float32)
    msg = _error(lambda: kernel(x, params, {"h": np.zeros((3, 9), np.float32)}))
    assert msg == (
        "state `h` has shape (3, 9) but expected [B, hidden] = (3, 10) with hidden=10 "
        "(from param `W_i`)"
    )
    fixed = lstmc.compile(lstmc.builtin("lstm"), sizes={"hidden": 10})
    msg = _error(lambda: fixed(x, params, {"h": np.zeros((3, 9), np.float32)}))
    assert "hidden=10 (from the compiled size)" in msg


@pytest.mark.parametrize("first", [True, False])
def test_the_one_wrong_param_is_blamed_wherever_it_comes(kernel, params, first):
    """Sizes bind to what most arrays say: a bad W_i (the first param) or a bad W_o (the
    last) is named, not the params that agree with the rest."""
    x = np.zeros((5, 3, 6), np.float32)
    name = "W_i" if first else "W_o"
    msg = _error(lambda: kernel(x, {**params, name: np.zeros((11, 6), np.float32)}))
    assert msg.startswith(f"param `{name}` has shape (11, 6) but expected [hidden, input] = ")
    assert "hidden=10 (from param `W_" in msg and f"(from param `{name}`), input" not in msg


def test_dtype_messages_only_suggest_dtypes_that_exist(kernel, params):
    msg = _error(lambda: kernel(np.zeros((5, 3, 6), np.float16), params))
    assert "compiled for float32" in msg and "compile with" not in msg
    msg = _error(lambda: kernel(np.zeros((5, 3, 6), np.float64), params))
    assert "or compile with dtype='float64'" in msg
    # compile takes only the native byte order, so a big-endian array is told to convert
    msg = _error(lambda: kernel(np.zeros((5, 3, 6), ">f4"), params))
    assert "convert it (`.astype(np.float32)`)" in msg and "compile with" not in msg


def test_lists_are_named_as_what_they_are(kernel, params):
    x = np.zeros((5, 3, 6), np.float32)
    msg = _error(lambda: kernel(x, {**params, "b_i": [0.0] * 10}))
    assert msg == "param `b_i` must be an array, got list"
    msg = _error(lambda: kernel(x, params, {"h": [[0.0] * 10] * 3}))
    assert msg == "state `h` must be an array, got list"


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["to_sparse", "to_sparse_csr"])
def test_a_sparse_torch_tensor_is_told_to_go_dense(kernel, params, layout):
    torch = pytest.importorskip("torch")
    sparse = getattr(torch.zeros(5, 3, 6), layout)()
    msg = _error(lambda: kernel(sparse, params))
    assert msg.startswith("`x` is a sparse_") and "`t.to_dense()`" in msg, msg


def test_torch_tensors_of_a_wrong_shape_are_named_as_arrays_are(kernel, params):
    """CPU tensors are taken (tests/test_from_torch.py); a wrong one gets the message an
    array would, naming the argument and both shapes."""
    torch = pytest.importorskip("torch")
    x = np.zeros((5, 3, 6), np.float32)
    for call, start in (
        (lambda: kernel(torch.zeros(5, 3, 7), params), "x has shape (5, 3, 7)"),
        (lambda: kernel(x, {**params, "b_i": torch.zeros(11)}), "param `b_i` has shape (11,)"),
        (lambda: kernel(x, params, {"h": torch.zeros(3, 11)}), "state `h` has shape (3, 11)"),
    ):
        msg = _error(call)
        assert msg.startswith(start), msg


def test_no_nested_backticks(kernel, params):
    x = np.zeros((5, 3, 6), np.float32)
    msg = _error(lambda: kernel(x, params, {"h": np.zeros((3, 10))}))
    assert msg.startswith("state `h` has dtype float64")
    msg = _error(lambda: kernel(x, {**params, "W_i": params["W_i"].astype(int)}))
    assert msg.startswith("param `W_i` must be a float array")


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"input": -1, "hidden": 4}, "size input must be an int >= 1, got -1"),
        ({"input": 2.5, "hidden": 4}, "size input must be an int >= 1, got 2.5"),
        ({"input": 0, "hidden": 4}, "size input must be an int >= 1, got 0"),
        ({"input": 5, "hiden": 4}, "unknown size(s) `hiden` (did you mean `hidden`?)"),
    ],
)
def test_init_params_sizes(kernel, sizes, message):
    assert message in _error(lambda: kernel.init_params(**sizes))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_init_params_refuses_a_bad_seed(kernel, seed):
    assert _error(lambda: kernel.init_params(seed=seed, input=2, hidden=3)).startswith(
        f"seed must be an int >= 0 (or None, or what numpy.random.default_rng takes), "
        f"got {seed!r} ("
    )


def test_init_params_takes_the_seeds_numpy_takes(kernel):
    for seed in (None, np.random.SeedSequence(5), np.int64(3)):
        assert kernel.init_params(seed=seed, input=2, hidden=3)["W_i"].shape == (3, 2)


def test_a_size_named_self_is_a_size_of_init_params():
    spec = lstmc.builtin("rnn_tanh").source.replace("hidden", "self")
    kernel = lstmc.compile(lstmc.loads(spec))
    params = kernel.init_params(seed=1, input=2, self=3)
    assert params["W_hh"].shape == (3, 3)


def test_a_size_of_zero_reads_the_same_from_init_params_and_the_kernel(kernel):
    params = kernel.init_params(input=1, hidden=4)
    params = {n: a[:, :0] if n.startswith("W_") else a for n, a in params.items()}
    x = np.zeros((2, 1, 0), np.float32)
    msg = _error(lambda: kernel(x, params))
    assert msg == "size input must be an int >= 1, got 0 (from param `W_i`)"
    assert "size input must be an int >= 1, got 0" in _error(
        lambda: kernel.init_params(input=0, hidden=4)
    )


def test_init_params_refuses_a_size_other_than_the_fixed_one():
    fixed = lstmc.compile(lstmc.builtin("lstm"), sizes={"hidden": 8})
    msg = _error(lambda: fixed.init_params(input=3, hidden=9))
    assert msg == "size hidden was fixed at 8 when compiling; got hidden=9"
    assert fixed.init_params(input=3)["U_i"].shape == (8, 8)
    assert fixed.init_params(input=3, hidden=8)["U_i"].shape == (8, 8)


@pytest.mark.parametrize("unroll", [0, -2, 1.5, True])
def test_compile_refuses_a_bad_unroll(unroll):
    with pytest.raises(LstmcError, match="unroll must be an int >= 1"):
        lstmc.compile(lstmc.builtin("lstm"), unroll=unroll)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (np.float32, "float32"),
        (np.float64, "float64"),
        (np.dtype("float64"), "float64"),
        ("f8", "float64"),
        ("single", "float32"),
        ("torch.float64", "float64"),
        ("torch.float32", "float32"),
    ],
)
def test_compile_takes_numpy_and_torch_dtypes(dtype, name):
    if isinstance(dtype, str) and dtype.startswith("torch."):
        dtype = getattr(pytest.importorskip("torch"), dtype.removeprefix("torch."))
    assert lstmc.compile(lstmc.builtin("lstm"), dtype=dtype).dtype == np.dtype(name)


# None and "float" NumPy reads as float64, where torch's float is float32: refused as unclear
@pytest.mark.parametrize(
    "dtype", ["float16", np.float16, np.int32, "f4x", ">f4", None, "float", True]
)
def test_compile_refuses_other_dtypes(dtype):
    with pytest.raises(LstmcError, match="unknown dtype .*; choose float32 or float64"):
        lstmc.compile(lstmc.builtin("lstm"), dtype=dtype)


def test_cuda_without_a_device_is_an_lstmc_error(monkeypatch):
    """Numba's CudaSupportError at the first device call becomes CudaUnavailableError, which
    says what to do. Simulated: this machine may have a GPU, or run the simulator."""
    from lstmc_runtime import cuda_kernel

    class CudaSupportError(Exception):  # Numba's, by name
        pass

    def no_driver(*_args, **_kwargs):
        raise CudaSupportError("Error at driver init:\n\nCUDA driver library cannot be found.\n:")

    kernel = lstmc.compile(lstmc.builtin("lstm"), target="cuda")
    params = kernel.init_params(input=3, hidden=4)
    monkeypatch.setattr(cuda_kernel.cuda, "to_device", no_driver)
    with pytest.raises(CudaUnavailableError) as info:
        kernel(np.zeros((2, 1, 3), np.float32), params)
    msg = str(info.value)
    assert "no CUDA device is available" in msg and "NUMBA_ENABLE_CUDASIM=1" in msg
    assert "CUDA driver library cannot be found" in msg
    assert isinstance(info.value, RuntimeError)


def test_packed_params_recheck_every_call_whose_shapes_changed():
    """A call's sizes and plan are kept with the packed params by shapes and settings
    (Kernel._bind_and_plan): a later call with other shapes is checked afresh, a call with the
    same shapes gives the same result, and a new thread setting gets a new plan."""
    k = lstmc.compile(lstmc.builtin("lstm"))
    packed = k.pack(k.init_params(input=6, hidden=10))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6)).astype(np.float32)
    first = k(x, packed)[0]
    assert np.array_equal(k(x.copy(), packed)[0], first)  # the kept sizes: the same result
    for bad_x in (np.zeros((4, 3, 7), np.float32), np.zeros((4, 3), np.float32)):
        assert "x" in _error(lambda bad_x=bad_x: k(bad_x, packed))
    good_state = {"h": np.zeros((3, 10), np.float32)}
    k(x, packed, good_state)
    bad_state = {"h": np.zeros((3, 11), np.float32)}
    assert "state `h`" in _error(lambda: k(x, packed, bad_state))
    assert "state `h`" in _error(lambda: k(x, packed, {"h": np.zeros((2, 10), np.float32)}))
    params = {name: a.copy() for name, a in k.init_params(input=6, hidden=10).items()}
    for xs in (x[:, :2], x[:1], x):  # other batch sizes and lengths, then the first again
        fresh = k.pack(params)  # nothing kept yet: what a stale kept size would not give
        np.testing.assert_array_equal(k(xs, packed)[0], k(xs, fresh)[0])
        assert k.last_plan.mode == "serial"
    k.threads, k.split = 2, "units"  # a new plan for the same shapes (its own rounding)
    np.testing.assert_array_equal(k(x, packed)[0], k(x, k.pack(params))[0])
    assert (k.last_plan.mode, k.last_plan.threads) == ("units", 2)


def test_a_cell_by_path_or_shipped_name_and_what_is_not_a_cell(tmp_path):
    """compile, interpret and to_ir take a Cell, a spec file's path or a shipped cell's name,
    as the command line does; anything else is an lstmc error saying what to pass."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "cell: tiny\nsizes: [input, hidden]\ninputs: {x: [input]}\nstate: {h: [hidden]}\n"
        "params: {W: [hidden, input], U: [hidden, hidden]}\n"
        "equations:\n  h_next: tanh(W @ x + U @ h)\nupdate: {h: h_next}\noutputs: [h_next]\n"
    )
    x = np.random.default_rng(0).standard_normal((3, 2, 4))
    for given in (spec, str(spec)):
        kernel = lstmc.compile(given, dtype="float64")
        params = kernel.init_params(input=4, hidden=5)
        y_ref, _ = lstmc.interpret(given, x, params)
        np.testing.assert_allclose(kernel(x, params)[0], y_ref, rtol=0, atol=1e-12)
        assert lstmc.to_ir(given).attrs["cell"] == "tiny"
    assert lstmc.compile("gru").signature.cell == "gru"
    with pytest.raises(lstmc.SpecError, match="no shipped cell `grux`.*did you mean `gru`"):
        lstmc.compile("grux")
    with pytest.raises(lstmc.SpecError, match="no such spec file: nowhere/x.yaml"):
        lstmc.interpret("nowhere/x.yaml", x, {})
    for bad in (None, 3, {"cell": "lstm"}):
        with pytest.raises(LstmcError, match="expected a cell: lstmc.load"):
            lstmc.compile(bad)
    with pytest.raises(lstmc.SpecError, match="path or a shipped cell's name; got ''"):
        lstmc.compile("")


def test_a_shipped_name_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    """A folder `lstm` in the working directory (a project's own) does not hide the shipped
    cell; a file `lstm` would be the spec meant."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lstm").mkdir()
    assert lstmc.to_ir("lstm").attrs["cell"] == "lstm"
    (tmp_path / "gru").write_text("cell: [\n")
    with pytest.raises(lstmc.SpecError, match="gru:"):
        lstmc.to_ir("gru")


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "constant `cell_clip` must be a float32/float64 number"),
        (float("nan"), "(inf allowed, not NaN); got nan"),
        (None, "got None"),
        (True, "got True"),
        (10**400, "got 1000000000000000"),  # too big for a float; and the repr is cut short
    ],
)
def test_constants_given_to_compile_are_checked(value, message):
    from pathlib import Path

    cell = lstmc.load(Path(__file__).parent.parent / "examples/custom_cell/clipped_cifg.yaml")
    with pytest.raises(lstmc.SpecError) as info:
        lstmc.compile(cell, constants={"cell_clip": value})
    assert message in str(info.value)
    with pytest.raises(lstmc.SpecError) as info:
        lstmc.compile(cell, constants={"cell_clp": 1.0})
    text = str(info.value)
    assert "unknown constant `cell_clp` given for cell `clipped_cifg`" in text
    assert "did you mean `cell_clip`" in text and "clipped_cifg.yaml:" not in text


@pytest.mark.parametrize("width", [16, 10])
def test_a_param_too_narrow_for_a_size_in_a_sum_names_the_param(width):
    """mgu's W_f is [hidden, hidden + input]: no wider than hidden leaves no input >= 1. The
    error names the param, its shape and the expected one (it was a bare KeyError)."""
    k = lstmc.compile(lstmc.builtin("mgu"))
    params = k.init_params(input=8, hidden=16)
    bad = {name: a[:, :width] if a.ndim == 2 else a for name, a in params.items()}
    x = np.zeros((2, 1, 8), np.float32)
    for attempt in (lambda: k.pack(bad), lambda: k(x, bad)):
        with pytest.raises(KernelArgumentError) as info:
            attempt()
        message = str(info.value)
        assert f"({16}, {width})" in message and "hidden+input" in message, message
        assert "param `W_" in message and "input" in message, message


_SIZES_IN_SUMS_ONLY = """\
cell: sums_only
sizes: [input, hidden]
inputs: {x: [input]}
state: {h: [hidden]}
params: {b: [hidden + input]}
equations:
  v: concat(h, x) + b
  h_next: tanh(h + 1)
update: {h: h_next}
outputs: [v, h_next]
"""


def test_a_cell_whose_params_hold_sizes_only_in_sums():
    """`check` takes it (every size stands alone in x or the state), the interpreter runs it,
    but a call packed the params alone, which can't tell hidden from input in
    [hidden + input], and refused them: "no size hidden, input >= 1 fits it"."""
    cell = lstmc.loads(_SIZES_IN_SUMS_ONLY)
    kernel = lstmc.compile(cell, dtype="float64")
    params = kernel.init_params(input=3, hidden=5, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    h0 = {"h": np.random.default_rng(1).standard_normal((2, 5))}
    for state in (None, h0):  # hidden from the state, or from b's width less x's
        y, _ = kernel(x, params, state)
        y_ref, _ = lstmc.interpret(cell, x, params, state)
        for name in y_ref:
            assert np.abs(y[name] - y_ref[name]).max() < 1e-12
    msg = _error(lambda: kernel.pack(params))
    assert "do not give the size(s) input, hidden" in msg
    assert "kernel.pack(params, input=..., hidden=...)" in msg
    packed = kernel.pack(params, input=3, hidden=5)
    y, _ = kernel(x, packed, h0)
    y_ref, _ = lstmc.interpret(cell, x, params, h0)
    assert np.abs(y["v"] - y_ref["v"]).max() < 1e-12
    msg = _error(lambda: kernel(x[..., :2], packed))
    assert msg == (
        "x has shape (4, 2, 2) but expected [T, B, input] = (4, 2, 3) with input=3 "
        "(from the sizes given to pack)"
    )
    msg = _error(lambda: kernel.pack(params, hiden=5))
    assert "unknown size(s) `hiden` (did you mean `hidden`?)" in msg
    assert "must be an int >= 1, got 0" in _error(lambda: kernel.pack(params, input=0, hidden=8))


def test_a_size_that_no_param_holds_is_the_calls_to_give():
    """`input` only in x (used element-wise): the params give `hidden`, and pack needs no
    more. A first version of the sums fix asked for every size, refusing such cells."""
    cell = lstmc.loads(
        "cell: no_input_param\nsizes: [input, hidden]\ninputs: {x: [input]}\n"
        "state: {h: [hidden]}\nparams: {U: [hidden, hidden]}\n"
        "equations:\n  xx: x * 2\n  h_next: tanh(U @ h)\nupdate: {h: h_next}\n"
        "outputs: [xx, h_next]\n"
    )
    kernel = lstmc.compile(cell, dtype="float64")
    params = kernel.init_params(input=3, hidden=4, seed=0)
    packed = kernel.pack(params)
    assert packed.sizes == {"hidden": 4}
    x = np.random.default_rng(0).standard_normal((2, 2, 3))
    h0 = {"h": np.ones((2, 4))}
    y, _ = kernel(x, packed, h0)
    y_ref, _ = lstmc.interpret(cell, x, params, h0)
    assert all(np.abs(y[k] - y_ref[k]).max() < 1e-12 for k in y_ref)
