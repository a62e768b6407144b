"""The `lstmc` command line (DESIGN.md section 4).

    lstmc compile spec.yaml --target cpu -o build/   a standalone module build/<cell>.py
    lstmc check spec.yaml                            validate a spec
    lstmc show spec.yaml [--after PASS] [--source]   the IR after the passes, or the source
    lstmc graph spec.yaml -o cell.svg                the IR drawn with Graphviz
    lstmc cells                                      the shipped cells
    lstmc run spec.yaml --T 50 --B 4                 the kernel against the interpreter
    lstmc bench spec.yaml                            the kernel against PyTorch

Every verb takes a spec file or the name of a shipped cell. Errors are one line on stderr and
exit 2 (a traceback only with --verbose); progress goes to stderr, and only on a terminal.
The heavy imports (numba, torch) happen inside the verbs that need them.

This module holds the group, its global options and the error handling; each verb has its own
module (compile_cmd, check, show, graph, cells, run, bench), sharing common (loading and
compiling), options (the shared options), output (printing and progress), atomic (writes),
data (random inputs) and torch_ref (bench's PyTorch equivalents).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from lstmc.cli.bench import bench_cmd
from lstmc.cli.cells import cells_cmd
from lstmc.cli.check import check_cmd
from lstmc.cli.common import EXIT_INTERNAL, EXIT_USAGE, find_cell
from lstmc.cli.compile_cmd import compile_cmd
from lstmc.cli.graph import graph_cmd
from lstmc.cli.options import example, verbosity
from lstmc.cli.output import error_line, progress
from lstmc.cli.run import run_cmd
from lstmc.cli.show import show_cmd

_CUDA_UNAVAILABLE = ("CudaSupportError", "CudaDriverError")
EXIT_BROKEN_PIPE = 128 + 13  # a shell's status for a process that SIGPIPE ended


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0].strip()


def _fail(ctx: click.Context, message: str, status: int) -> None:
    """End the command with `message` on stderr (after the traceback, with --verbose)."""
    if ctx.meta.get("lstmc.verbose"):
        traceback.print_exc()
    click.echo(message, err=True)
    ctx.exit(status)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of it doesn't fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout)
        pass
    finally:
        os.close(devnull)


class _Cli(click.Group):
    """The verb group; turns lstmc's errors into one message and exit status 2."""

    def invoke(self, ctx: click.Context):
        from lstmc.errors import LstmcError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except LstmcError as exc:
            _fail(ctx, error_line(exc), EXIT_USAGE)
        except BrokenPipeError:  # the reader went away (`lstmc show ... | head`): quietly,
            _quiet_stdout()  # as SIGPIPE ends a C tool; its flush at exit would raise again
            ctx.exit(EXIT_BROKEN_PIPE)
        except MemoryError as exc:  # sizes too large for this machine: the user's to change
            first = _first_line(exc)
            message = f"lstmc: error: out of memory{': ' + first if first else ''}"
            _fail(ctx, message + "; try smaller sizes (--size, --T, --B)", EXIT_USAGE)
        except OSError as exc:  # the file system said no: disk full, permissions, ...
            where = f": {exc.filename}" if exc.filename else ""
            _fail(ctx, f"lstmc: error: {exc.strerror or exc}{where}", EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("lstmc: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 (a bug: one line, unless --verbose)
            first = _first_line(exc)
            if type(exc).__name__ in _CUDA_UNAVAILABLE:  # numba.cuda's, without importing it
                _fail(
                    ctx,
                    f"lstmc: error: CUDA is not usable here ({type(exc).__name__}: "
                    f"{first.rstrip(':')}); use --target cpu, or set NUMBA_ENABLE_CUDASIM=1 "
                    "for Numba's (slow) simulator",
                    EXIT_USAGE,
                )
            hint = (
                "" if ctx.meta.get("lstmc.verbose") else " (rerun with --verbose for the traceback)"
            )
            _fail(
                ctx,
                f"lstmc: internal error: {type(exc).__name__}: {first}{hint}; this is a "
                "bug in lstmc, please report it",
                EXIT_INTERNAL,
            )


@click.group(
    cls=_Cli,
    epilog=example(
        "lstmc cells",
        "lstmc check my_cell.yaml",
        "lstmc run lstm --T 50 --B 4 --size input=16 --size hidden=32",
        "lstmc compile lstm --target cpu -o build/ && python -c 'import sys; "
        'sys.path.insert(0, "build"); import lstm\'',
    )
    + "\n\n\b\nExit status: 0 success; 1 `run` found an error above the tolerance; 2 a bad "
    "option,\nspec or argument; 3 an internal error (a bug in lstmc).",
)
@verbosity
@click.version_option(package_name="lstmc", prog_name="lstmc")
def cli() -> None:
    """lstmc: compile recurrent cells written as equations in YAML into fused Numba kernels.

    SPEC is a spec file, or the name of a shipped cell (see `lstmc cells`).
    """


for _command in (compile_cmd, check_cmd, show_cmd, graph_cmd, cells_cmd, run_cmd, bench_cmd):
    cli.add_command(_command)

# The names this module had when the command line was one file: tests replace `_load_cell`
# (every verb calls it through here, see common.load_cell) and use `_progress`.
_load_cell = find_cell
_progress = progress


def main(argv: list[str] | None = None) -> None:
    """The `lstmc` console script (and `python -m lstmc`)."""
    cli.main(args=argv, prog_name="lstmc")
