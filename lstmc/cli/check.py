"""`lstmc check`: validate specs."""

from __future__ import annotations

import click

from lstmc.cli.common import EXIT_USAGE, TARGETS, generate, load_cell
from lstmc.cli.options import const_option, example, verbosity
from lstmc.cli.output import error_line, say


@click.command(
    "check",
    epilog=example(
        "lstmc check my_cell.yaml",
        "lstmc check lstmc/cells/*.yaml --target cpu",
    ),
)
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@const_option
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help="Also optimize the IR and generate code for TARGET.",
)
@verbosity
def check_cmd(specs, constants, target):
    """Validate specs: parse, resolve names, check shapes, verify the IR.

    Prints `ok: <cell> (...)` for each valid spec; for an invalid one prints
    `file:line:col: error: ...` on stderr and exits with status 2.
    """
    from lstmc.api import to_ir
    from lstmc.errors import LstmcError
    from lstmc.ir.verify import verify

    failed = 0
    for spec in specs:
        try:
            cell = load_cell(spec)
            verify(to_ir(cell, constants))
            if target:
                generate(cell, target, "float32", 3, None, None, constants)
        except LstmcError as exc:
            if len(specs) == 1:
                raise
            click.echo(error_line(exc), err=True)
            failed += 1
            continue
        outs = ", ".join(cell.output_names)
        n = len(cell.equations)
        say(
            f"ok: {cell.name} ({n} equation{'s' * (n != 1)}; state "
            f"{', '.join(cell.state)}; {len(cell.params)} params; outputs {outs}; sizes "
            f"{', '.join(cell.sizes)})"
        )
    if failed:
        raise click.exceptions.Exit(EXIT_USAGE)
