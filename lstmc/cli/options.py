"""The options the verbs share, their parsing (`--size k=v`, `--const k=v`) and help texts."""

from __future__ import annotations

import math

import click

from lstmc.cli.common import DTYPES, TARGETS
from lstmc.compiler import DEFAULT_OPT


def set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """The callback of --quiet and --verbose: records the flag for output.py to read."""
    if value:
        ctx.meta[f"lstmc.{param.name}"] = True  # meta is shared by the whole context chain
    return value


QUIET_HELP = "Print only results and errors."
VERBOSE_HELP = "Log each step and its time on stderr; show tracebacks."


def verbosity(fn):
    """-q/--quiet and -v/--verbose, accepted before the verb and after it alike."""
    fn = click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=set_flag,
        help=VERBOSE_HELP,
    )(fn)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=set_flag,
        help=QUIET_HELP,
    )(fn)


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
    if value <= 0:
        raise ValueError(text)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
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


def const_option(fn):
    return click.option(
        "--const",
        "constants",
        multiple=True,
        metavar="NAME=VALUE",
        callback=_assignments("a finite number", _finite_float),
        help="Override a constant of the spec's `constants:` (repeatable).",
    )(fn)


def size_option(help_text: str):
    return click.option(
        "--size",
        "sizes",
        multiple=True,
        metavar="NAME=N",
        callback=_assignments("a positive integer", _positive_int),
        help=help_text,
    )


def example(*lines: str) -> str:
    """A click epilog with examples, kept as written (\\b stops click from rewrapping)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)
