"""The options the verbs share, their parsing (`--size k=v`, `--const k=v`) and help texts."""

from __future__ import annotations

import math

import click

from lstmc.cli.common import DTYPES, TARGETS
from lstmc.compiler import DEFAULT_OPT, MAX_SIZE


def set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """The callback of --quiet and --verbose: records the flag for output.py to read."""
    if value:
        ctx.meta[f"lstmc.{param.name}"] = True  # meta is shared by the whole context chain
    return value


QUIET_HELP = "Print only results and errors."
VERBOSE_HELP = "Log each step and its time on stderr; show tracebacks."


def stacked(*decorators):
    """One decorator applying `decorators` as if written one above the other, in this order
    (so their options are listed in this order in --help)."""

    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def _flag(short: str, long: str, help_text: str):
    return click.option(
        short,
        long,
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=set_flag,
        help=help_text,
    )


# -q/--quiet and -v/--verbose, accepted before the verb and after it alike.
verbosity = stacked(_flag("-q", "--quiet", QUIET_HELP), _flag("-v", "--verbose", VERBOSE_HELP))


def _assignments(what: str, convert):
    """A click callback turning repeated NAME=VALUE options into a dict."""

    def parse(ctx, param, values):
        out = {}
        for item in values:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not name.isidentifier():
                raise click.BadParameter(f"expected NAME=VALUE, got {item!r}")
            try:
                out[name] = convert(value.strip())
            except ValueError:
                raise click.BadParameter(f"{name}: {value.strip()!r} is not {what}") from None
        return out

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if not 0 < value <= MAX_SIZE:
        raise ValueError(text)
    return value


def _number(text: str) -> float:
    """A constant's value: any number but NaN (inf turns a clip off: cell_clip=inf)."""
    value = float(text)
    if math.isnan(value):
        raise ValueError(text)
    return value


def spec_argument(fn):
    return click.argument("spec", metavar="SPEC")(fn)


def target_option(default="cpu"):
    return click.option(
        "--target",
        type=click.Choice(TARGETS),
        default=default,
        show_default=True,
        help="Code generator.",
    )


def dtype_option(fn):
    return click.option(
        "--dtype",
        type=click.Choice(DTYPES),
        default="float32",
        show_default=True,
        help="Float type of the kernel.",
    )(fn)


def opt_option(default=DEFAULT_OPT):
    return click.option(
        "-O",
        "--opt",
        "opt",
        type=click.IntRange(0, 3),
        default=default,
        show_default=True,
        metavar="N",
        help="Optimization level: -O0 none, -O1 clean-ups, -O2 fusion and "
        "hoisting, -O3 unrolling too.",
    )


def unroll_option(fn):
    return click.option(
        "--unroll",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Unroll the time loop N times (at any -O).",
    )(fn)


def _assignments_option(flag: str, dest: str, metavar: str, what: str, convert, help_text: str):
    """A repeatable NAME=VALUE option, collected into the dict `dest`."""
    return click.option(
        flag,
        dest,
        multiple=True,
        metavar=metavar,
        callback=_assignments(what, convert),
        help=help_text,
    )


const_option = _assignments_option(
    "--const",
    "constants",
    "NAME=VALUE",
    "a number (not NaN)",
    _number,
    "Override a constant of the spec's `constants:` (repeatable).",
)


def size_option(help_text: str):
    return _assignments_option(
        "--size",
        "sizes",
        "NAME=N",
        f"a positive integer up to {MAX_SIZE}",
        _positive_int,
        help_text,
    )


def _count_option(name: str, default: int, help_text: str):
    return click.option(
        f"--{name}",
        name,
        type=click.IntRange(min=1),
        metavar="N",
        default=default,
        show_default=True,
        help=help_text,
    )


def kernel_options(size_help: str, *, size_first: bool = False):
    """--dtype, -O, --unroll, --size and --const: what a kernel is compiled with. `size_first`
    lists --size first (run and bench put it next to the data's --T and --B)."""
    size = size_option(size_help)
    if size_first:
        return stacked(size, dtype_option, opt_option(), unroll_option, const_option)
    return stacked(dtype_option, opt_option(), unroll_option, size, const_option)


def data_options(T: int, B: int, size_help: str):
    """What `run` and `bench` share: SPEC, --target, --T and --B (the shape of the random data,
    with these defaults), then the kernel options with --size first."""
    return stacked(
        spec_argument,
        target_option(),
        _count_option("T", T, "Timesteps."),
        _count_option("B", B, "Batch size."),
        kernel_options(size_help, size_first=True),
    )


def example(*lines: str) -> str:
    """A click epilog with examples, kept as written (\\b stops click from rewrapping)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)
