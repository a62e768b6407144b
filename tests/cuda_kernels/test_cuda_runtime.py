"""The CUDA run-time: device arrays in and out, streams, state, packing, variants, the
launch configuration's limits and errors, and the device math functions."""

import numpy as np
import pytest
from cuda_helpers import (
    SIMULATOR,
    VARIANTS,
    B,
    T,
    check,
    compiled,
    data,
    error,
    host,
    reference,
    sizes_of,
)
from lstmc_runtime import cuda as rt
from lstmc_runtime import cuda_launch
from numba import cuda

import lstmc
from lstmc.errors import KernelArgumentError
from lstmc.ir import ops

LSTM = lstmc.builtin("lstm")


def _lstm(dtype="float32"):
    return compiled("lstm", dtype)


def test_device_arrays_in_device_arrays_out_and_inputs_untouched():
    kernel = _lstm()
    x, params, state = data(kernel, sizes_of(LSTM), T, B, seed=5)
    y_ref, s_ref = reference(LSTM, x, params, state)
    xd = cuda.to_device(x)
    sd = {k: cuda.to_device(v) for k, v in state.items()}
    packed = kernel.pack(params)
    for variant in VARIANTS:
        y, s = kernel(xd, packed, sd, variant=variant)
        assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")
        assert all(not isinstance(v, np.ndarray) for v in s.values())
        check(y, s, y_ref, s_ref, "float32", variant)
    # the caller's arrays were read, never written
    assert np.array_equal(xd.copy_to_host(), x)
    for k, v in state.items():
        assert np.array_equal(sd[k].copy_to_host(), v)


def test_numpy_state_with_device_x_and_a_stream():
    kernel = _lstm()
    x, params, state = data(kernel, sizes_of(LSTM), T, B, seed=6)
    y_ref, s_ref = reference(LSTM, x, params, state)
    stream = cuda.stream()
    y, s = kernel(cuda.to_device(x, stream=stream), params, state, stream=stream)
    stream.synchronize()
    check(y, s, y_ref, s_ref, "float32", "stream")


@pytest.mark.skipif(SIMULATOR, reason="torch.cuda tensors need a GPU")
def test_torch_cuda_tensors_in_place():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    kernel = _lstm()
    x, params, state = data(kernel, sizes_of(LSTM), T, B, seed=7)
    y_ref, s_ref = reference(LSTM, x, params, state)
    xt = torch.from_numpy(x).cuda()
    st = {k: torch.from_numpy(v).cuda() for k, v in state.items()}
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y, s = kernel(xt, kernel.pack(params), st)
    side.synchronize()
    assert isinstance(y, torch.Tensor) and y.is_cuda and y.dtype == torch.float32
    assert all(isinstance(v, torch.Tensor) for v in s.values())
    check(y, s, y_ref, s_ref, "float32", "torch")


def test_state_carries_over_between_calls():
    kernel = _lstm("float64")
    x, params, state = data(kernel, sizes_of(LSTM), 2 * T, B, seed=8)
    y_ref, s_ref = reference(LSTM, x, params, state)
    packed = kernel.pack(params)
    for variant in VARIANTS:
        y1, s1 = kernel(x[:T], packed, state, variant=variant)
        y2, s2 = kernel(x[T:], packed, s1, variant=variant)
        check(np.concatenate([y1, y2]), s2, y_ref, s_ref, "float64", variant)


def test_zero_length_sequence_returns_the_given_state():
    kernel = _lstm("float64")
    _, params, state = data(kernel, sizes_of(LSTM), T, B, seed=9)
    x = np.zeros((0, B, sizes_of(LSTM)["input"]))
    for variant in VARIANTS:
        y, s = kernel(x, params, state, variant=variant)
        assert y.shape == (0, B, sizes_of(LSTM)["hidden"])
        for k in state:
            assert np.array_equal(s[k], state[k])


def test_several_outputs_come_back_as_a_dict():
    spec = """
cell: two_out
sizes: [input, hidden]
inputs: {x: [input]}
state: {h: [hidden]}
params: {W: [hidden, input], U: [hidden, hidden], b: [hidden]}
equations:
  z: sigmoid(W @ x + U @ h + b)
  h_next: z * tanh(h) + (1 - z) * tanh(W @ x)
update: {h: h_next}
outputs: [z, h_next]
"""
    cell = lstmc.loads(spec)
    kernel = compiled(cell, "float64")
    x, params, state = data(kernel, sizes_of(cell), T, B, seed=10)
    y_ref, s_ref = reference(cell, x, params, state)
    for variant in VARIANTS:
        y, s = kernel(cuda.to_device(x), params, state, variant=variant)
        assert set(y) == {"z", "h_next"} and hasattr(y["z"], "copy_to_host")
        check(host(y), host(s), y_ref, s_ref, "float64", variant)


def test_fixed_sizes():
    sizes = sizes_of(LSTM)
    kernel = lstmc.compile(LSTM, target="cuda", dtype="float64", sizes=sizes)
    assert f"n_hidden = {sizes['hidden']}  # fixed" in kernel.source
    x, params, state = data(kernel, sizes, T, B, seed=12)
    y_ref, s_ref = reference(LSTM, x, params, state)
    for variant in VARIANTS:
        y, s = kernel(x, params, state, variant=variant)
        check(y, s, y_ref, s_ref, "float64", variant)


def test_persistent_kernel_on_several_blocks():
    """Units split over blocks, the last one partly empty. Under the simulator only a single
    phase at T = 1 is exact on more than one block (no block waits for another)."""
    kernel = _lstm("float64").with_options(variant="persistent", blocks=3)
    steps = 1 if SIMULATOR else T
    x, params, state = data(kernel, sizes_of(LSTM, hidden=7), steps, B, seed=13)
    y_ref, s_ref = reference(LSTM, x, params, state)
    y, s = kernel(x, params, state)
    assert kernel.last_variant == "persistent"
    check(y, s, y_ref, s_ref, "float64", "3 blocks")


def test_options_share_packed_params():
    kernel = _lstm()
    step = kernel.with_options(variant="stepwise")
    assert step.variant == "stepwise" and kernel.variant == "auto"
    x, params, state = data(kernel, sizes_of(LSTM), T, B, seed=14)
    packed = kernel.pack(params)
    y1, _ = kernel(x, packed, state)
    y2, _ = step(x, packed, state)
    assert step.last_variant == "stepwise"
    assert error(y1, y2) < 1e-5


def test_weights_too_big_for_the_persistent_kernel():
    """`persistent` refuses and names the variant that handles it; `auto` falls back."""
    hidden = 40 if SIMULATOR else 1500  # 4*H*H float64 > 48 KiB (simulator) / all SMs
    kernel = _lstm("float64")
    x, params, state = data(kernel, sizes_of(LSTM, hidden=hidden, input=2), 1, 1, seed=15)
    with pytest.raises(KernelArgumentError, match="variant='stepwise'"):
        kernel(x, params, state, variant="persistent")
    y, s = kernel(x, params, state)
    assert kernel.last_variant == "stepwise"
    y_ref, s_ref = reference(LSTM, x, params, state)
    check(y, s, y_ref, s_ref, "float64", "fallback")


def test_argument_errors():
    kernel = _lstm()
    x, params, state = data(kernel, sizes_of(LSTM), T, B, seed=16)
    with pytest.raises(KernelArgumentError, match="unknown variant 'fast'"):
        kernel(x, params, state, variant="fast")
    with pytest.raises(KernelArgumentError, match="blocks must be a positive integer"):
        kernel.with_options(blocks=0)
    with pytest.raises(
        KernelArgumentError, match="float64 but the kernel was compiled for float32"
    ):
        kernel(x.astype(np.float64), params, state)
    with pytest.raises(KernelArgumentError, match="x must be"):
        kernel(x[0], params, state)
    with pytest.raises(KernelArgumentError, match="state `h` must be"):
        kernel(x, params, {"h": state["h"][:1]})
    with pytest.raises(KernelArgumentError, match="missing param `b_o`"):
        kernel(x, {k: v for k, v in params.items() if k != "b_o"}, state)
    other = compiled("gru", "float32")
    with pytest.raises(KernelArgumentError, match="packed by another kernel"):
        kernel(x, other.pack(other.init_params(**sizes_of(LSTM))), state)


def test_compile_options_share_one_module():
    """A variant picks among one module's kernels: compiling with one must not generate,
    cache and compile the module again."""
    plain = lstmc.compile(LSTM, target="cuda")
    for options in ({"variant": "stepwise"}, {"variant": "persistent", "blocks": 1}):
        kernel = lstmc.compile(LSTM, target="cuda", **options)
        assert kernel.module is plain.module, options
        assert all(getattr(kernel, k) == v for k, v in options.items())
    with pytest.raises(KernelArgumentError, match="unknown variant 'fast'"):
        lstmc.compile(LSTM, target="cuda", variant="fast")


# -- device math -----------------------------------------------------------------------------

SPECIAL = [
    -np.inf,
    -1000.0,
    -88.0,
    -20.0,
    -1.0,
    -1e-3,
    -0.0,
    0.0,
    1e-7,
    0.5,
    1.0,
    20.0,
    88.0,
    89.0,
    710.0,
    1000.0,
    np.inf,
    np.nan,
]
FUNCS = ("sigmoid", "tanh", "exp", "log", "softplus")


def _math_kernel(dtype):
    dm = rt.device_math(dtype)
    sig, tnh, ex, lg, sp = dm.sigmoid, dm.tanh, dm.exp, dm.log, dm.softplus

    @cuda.jit
    def apply(v, out):
        i = cuda.grid(1)
        if i < v.shape[0]:
            out[0, i] = sig(v[i])
            out[1, i] = tnh(v[i])
            out[2, i] = ex(v[i])
            out[3, i] = lg(v[i])
            out[4, i] = sp(v[i])

    return apply


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_device_math_matches_the_interpreter_on_special_values(dtype):
    """Exact limits for huge |v|, overflow to inf (not an error), NaN in -> NaN out, log of a
    negative is NaN; elsewhere within a few ulps of the interpreter's float64 rules."""
    v = np.array(SPECIAL, dtype)
    out = cuda.to_device(np.zeros((len(FUNCS), len(v)), dtype))
    _math_kernel(dtype)[1, len(v)](cuda.to_device(v), out)
    got = out.copy_to_host()
    with np.errstate(all="ignore"):
        for k, name in enumerate(FUNCS):
            ref = ops.get(name).interp([v.astype(np.float64)], {}, None).astype(dtype)
            ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
            bad = ~(
                (got[k] == ref)
                | (np.isnan(got[k]) & np.isnan(ref))
                | (np.abs(got[k].astype(np.float64) - ref) <= 4 * ulp)
            )
            assert not bad.any(), (name, v[bad], got[k][bad], ref[bad])


def test_device_math_is_built_once_per_dtype():
    """One set of device functions per float type (their float32 typing is checked in PTX by
    ptx_check.py: no float64 instruction in a float32 kernel)."""
    assert rt.device_math(np.float32) is rt.device_math("float32")
    assert rt.device_math(np.float64) is not rt.device_math(np.float32)


# -- the persistent grid, on a modelled device ---------------------------------------------------


class _FakeLauncher:
    """Occupancy of a device whose SMs hold `smem` bytes of shared memory and 8 blocks."""

    def __init__(self, limits, optin=True, smem=228 * 1024):
        self.limits, self.optin, self.smem = limits, optin, smem

    def allow_shared(self, nbytes):
        return self.optin or nbytes <= self.limits.shared_per_block

    def max_cooperative_blocks(self, nthreads, shared):
        return self.limits.sm_count * min(8, self.smem // max(shared, 1))


class _FakeKernel:
    blocks = None

    def __init__(self, launcher):
        self.launcher = launcher

    def _launcher(self, name):
        return self.launcher


H100 = rt.DeviceLimits("H100 (model)", 132, 1024, 48 * 1024, 227 * 1024, True, (9, 0))


@pytest.mark.parametrize(
    ("hidden", "dtype", "optin", "expect"),
    [
        (1024, "float32", True, (132, 256 * 8 + 8 * 4 * 1024 * 4)),  # 8 units x 4 gates / block
        (128, "float32", True, (128, 256 * 8 + 4 * 128 * 4)),  # no block without units
        (512, "float32", False, (132, 256 * 8 + 4 * 4 * 512 * 4)),  # 48 KiB without opt-in
        (1024, "float64", True, "do not fit"),  # 32 MiB > 132 x 227 KiB
    ],
)
def test_persistent_grid_from_the_device(monkeypatch, hidden, dtype, optin, expect):
    # persistent_config reads these from the module it lives in
    monkeypatch.setattr(cuda_launch, "SIMULATOR", False)
    monkeypatch.setattr(cuda_launch, "PERSIST_THREADS", 256)
    monkeypatch.setattr(cuda_launch, "device_limits", lambda: H100)
    kernel = _FakeKernel(_FakeLauncher(H100, optin))
    config = rt.persistent_config(kernel, "_persistent", [(hidden, 4 * hidden)], 1, dtype)
    if isinstance(expect, str):
        assert isinstance(config, str) and expect in config and "H100" in config
    else:
        nblk, nthr, shared = config
        assert (nblk, shared) == expect and nthr == 256


class _RecordingLauncher(_FakeLauncher):
    def __init__(self, limits, optin=True):
        super().__init__(limits, optin)
        self.asked, self.launched = [], []

    def allow_shared(self, nbytes):
        self.asked.append(nbytes)
        return super().allow_shared(nbytes)

    def __call__(self, grid, block, stream, shared, *args):
        self.launched.append(shared)


@pytest.mark.parametrize(
    ("cols", "dtype", "optin", "expect"),
    [
        (4, "float32", True, 5 * 16 * 32 * 4),  # an LSTM's four gates: 10 KiB
        (12, "float64", True, 13 * 16 * 32 * 8),  # 52 KiB: launched once opted in
        (12, "float64", False, "refused the opt-in"),  # a driver without the opt-in
        (60, "float64", True, "more than H100 .model. gives .232448."),  # 244 KiB > 227 KiB
    ],
)
def test_a_stepwise_kernel_over_48_kib_opts_in_or_is_refused(
    monkeypatch, cols, dtype, optin, expect
):
    """The fused step kernel's shared memory grows with the weight tiles of one operand: on a
    GPU's tile, over 48 KiB from 12 tiles in float64. It launched without opting in, which the
    driver refuses (the simulator's tiles are small and it checks no limit)."""
    monkeypatch.setattr(cuda_launch, "STEP_TILE", (32, 32, 16, 2, 2))
    monkeypatch.setattr(cuda_launch, "device_limits", lambda: H100)
    launcher = _RecordingLauncher(H100, optin)
    kernel = _FakeKernel(launcher)
    kernel.dtype = np.dtype(dtype)
    run = cuda_launch.Run(kernel, None, "stepwise")
    if isinstance(expect, str):
        with pytest.raises(KernelArgumentError, match=f"{cols} weight blocks at once.*{expect}"):
            run.fused("_k_step_0", 4, 64, cols)
        assert launcher.launched == []
    else:
        run.fused("_k_step_0", 4, 64, cols)
        assert launcher.launched == [expect]
        assert launcher.asked == ([expect] if expect > 48 * 1024 else [])  # no call per step
