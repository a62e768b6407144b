"""`lstmc graph`: the IR drawn with Graphviz, or as DOT text."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click

from lstmc.cli.atomic import write_into
from lstmc.cli.common import load_cell
from lstmc.cli.options import (
    const_option,
    example,
    opt_option,
    spec_argument,
    unroll_option,
    verbosity,
)
from lstmc.cli.output import progress, say

_GRAPHVIZ_HINT = (
    "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), `brew install "
    "graphviz` (macOS); or write the DOT text with --format dot"
)


@click.command(
    "graph",
    epilog=example(
        "lstmc graph lstm.yaml -o lstm.svg",
        "lstmc graph lstm.yaml -o lstm.png -O3",
        "lstmc graph lstm.yaml --format dot -o -     # DOT text on stdout, no Graphviz needed",
    ),
)
@spec_argument
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Output file (`-` for stdout); default <cell>.<format>.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "png", "dot"]),
    default=None,
    help="Output format; default from the -o suffix, else svg.",
)
@opt_option(default=0)
@unroll_option
@const_option
@verbosity
def graph_cmd(spec, output, fmt, opt, unroll, constants):
    """Draw the IR of SPEC with Graphviz (SVG, PNG) or write it as DOT text.

    The default -O0 draws the cell as written; -O3 draws what the kernel computes.
    SVG and PNG need Graphviz's `dot` program.
    """
    from lstmc.compiler import optimize
    from lstmc.errors import LstmcError

    suffix = Path(output).suffix.lstrip(".").lower() if output and output != "-" else ""
    if fmt is None:
        if suffix and suffix not in ("svg", "png", "dot"):
            raise click.UsageError(
                f"-o {output}: can not tell the format from `.{suffix}`; name the file .svg, "
                ".png or .dot, or give --format"
            )
        fmt = suffix or "svg"
    elif suffix in ("svg", "png", "dot") and suffix != fmt:
        raise click.UsageError(f"-o {output} names a .{suffix} file but --format is {fmt}")
    dot = None
    if fmt != "dot":
        dot = shutil.which("dot")
        if dot is None:
            raise LstmcError(
                f"Graphviz's `dot` program is not installed (needed for "
                f"--format {fmt}); {_GRAPHVIZ_HINT}"
            )
    cell = load_cell(spec)
    graph, _records = optimize(cell, opt, unroll, constants, verify_each=True)
    from lstmc.ir.dot import to_dot

    data = to_dot(graph).encode("utf-8")
    if dot is not None:
        with progress(f"rendering {fmt} with Graphviz"):
            proc = subprocess.run([dot, f"-T{fmt}"], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise LstmcError(f"Graphviz's dot failed: {msg[-1] if msg else proc.returncode}")
        data = proc.stdout
    if output == "-":
        click.get_binary_stream("stdout").write(data)
        return
    path = Path(output or f"{cell.name}.{fmt}")
    if path.is_dir():
        raise LstmcError(f"{path} is a directory; give a file name with -o")
    if not path.parent.is_dir():
        raise LstmcError(f"cannot write {path}: no directory {path.parent}")
    write_into(path, data)
    say(f"wrote {path} ({fmt}, -O{opt})")
