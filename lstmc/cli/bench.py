"""`lstmc bench`: time the kernel against the equivalent PyTorch module."""

from __future__ import annotations

import contextlib
import statistics
import time

import click

from lstmc.cli.common import TOLERANCE, compile_kernel, load_cell
from lstmc.cli.data import data_sizes, random_inputs
from lstmc.cli.options import data_options, example, verbosity
from lstmc.cli.output import progress, say
from lstmc.cli.torch_ref import Contender, torch_contender


def _timed(fn, repeat: int, sync=None) -> tuple[float, float]:
    """(median, min) seconds of `repeat` calls, after two untimed ones."""
    for _ in range(2):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


@click.command(
    "bench",
    epilog=example(
        "lstmc bench lstm.yaml --T 100 --B 16 --size input=256 --size hidden=256",
        "lstmc bench gru --dtype float64 --repeat 50",
    ),
)
@data_options(
    T=100,
    B=16,
    size_help="A size, e.g. --size hidden=512 (repeatable; unset sizes are 256, and lstmp's "
    "proj half of hidden).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed calls of each; the median is reported.",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPU threads for both: torch.set_num_threads, the kernel's batch split, the BLAS "
    "(default: each library's own choice).",
)
@verbosity
def bench_cmd(spec, target, T, B, sizes, dtype, opt, unroll, constants, repeat, seed, threads):
    """Time SPEC's kernel against the equivalent PyTorch module.

    lstm, lstmp, gru, rnn_tanh and rnn_relu have one (nn.LSTM, nn.LSTM(proj_size), nn.GRU,
    nn.RNN); the weights are copied across and the outputs compared before timing, so an
    edited spec is never timed as the PyTorch cell. Other cells, or no torch installed: the
    kernel is timed alone. Both get the same data and random start state; the kernel's params
    are packed once, as a training or inference loop would.
    """
    cell = load_cell(spec)
    given = dict(sizes)
    sizes = data_sizes(cell, sizes, 256)
    if cell.name == "lstmp" and "proj" not in given and {"proj", "hidden"} <= sizes.keys():
        sizes["proj"] = max(1, sizes["hidden"] // 2)  # torch needs proj_size < hidden_size
    kernel = compile_kernel(cell, target, dtype, opt, unroll, constants)
    if threads is not None:
        kernel.threads = threads
    with _threads_held(threads):
        _compare(cell, kernel, sizes, T, B, dtype, opt, target, repeat, seed, threads)


@contextlib.contextmanager
def _threads_held(threads):
    """The BLAS held to `threads` threads (threadpoolctl), and given back as it was after:
    `lstmc bench` also runs in-process (tests, notebooks, click's CliRunner), where a limit
    left behind would slow every later product. torch_contender gives back torch's."""
    with contextlib.ExitStack() as stack:
        if threads is not None:
            with contextlib.suppress(ImportError):
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        yield


def _compare(cell, kernel, sizes, T, B, dtype, opt, target, repeat, seed, threads):
    """Check the kernel against torch's module where there is one, then time both."""
    import numpy as np

    x, params, state = random_inputs(kernel, sizes, T, B, seed, dtype)
    packed = kernel.pack(params, **sizes)  # (the params of some cells don't give every size)
    ours = Contender("lstmc kernel", lambda: kernel(x, packed, state)[0])
    if target == "cuda":
        from numba import cuda

        xd, sd = cuda.to_device(x), {k: cuda.to_device(v) for k, v in state.items()}
        ours = Contender("lstmc kernel (cuda)", lambda: kernel(xd, packed, sd)[0], cuda.synchronize)
    with progress(f"compiling {cell.name} ({target}, {dtype}) with Numba"):
        y = ours.call()
        if isinstance(y, dict):  # several outputs (no torch module has them): the first
            y = next(iter(y.values()))
        y = np.asarray(y if isinstance(y, np.ndarray) else y.copy_to_host(), np.float64)
    theirs = torch_contender(cell, kernel, params, state, x, target, threads)
    dims = " ".join(f"{k}={v}" for k, v in sizes.items())
    header = f"{cell.name}: {target}, {dtype}, -O{opt}; T={T} B={B} {dims}; median of {repeat}"
    try:
        _time_both(ours, theirs, y, dtype, header, repeat)
    finally:
        if theirs.undo is not None:
            theirs.undo()


def _time_both(ours, theirs, y, dtype, header: str, repeat: int):
    """Compare the outputs (a contender whose differ is dropped), then time both."""
    import numpy as np

    note = ""
    if theirs.call is not None:
        err = float(np.max(np.abs(theirs.call().astype(np.float64) - y)))  # also a warm-up
        if not err <= 100 * TOLERANCE[dtype] * max(1.0, float(np.max(np.abs(y)))):
            theirs = Contender(
                f"the outputs differ from {theirs.name} by {err:.3g}, so the "
                "spec is not that module"
            )
        else:
            note = f" (max |y - y_torch| {err:.2g})"

    say(header)
    width = max(len(ours.name), len(theirs.name) if theirs.call else 0) + 2
    med, low = _timed(ours.call, repeat, ours.sync)
    say(f"  {ours.name:<{width}}{med * 1e3:10.3f} ms  (min {low * 1e3:.3f} ms)")
    if theirs.call is None:
        say(f"  {theirs.name}: timed the kernel alone")
        return
    t_med, t_low = _timed(theirs.call, repeat, theirs.sync)
    say(f"  {theirs.name:<{width}}{t_med * 1e3:10.3f} ms  (min {t_low * 1e3:.3f} ms)")
    ratio = t_med / med
    verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
    say(f"  lstmc is {verdict} torch{note}")
