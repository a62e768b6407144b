"""`lstmc cells`: the shipped cells."""

from __future__ import annotations

import click

from lstmc.cli.options import example, verbosity


@click.command("cells", epilog=example("lstmc cells", "lstmc show gru --source"))
@verbosity
def cells_cmd():
    """List the shipped cells with their one-line descriptions.

    Any verb takes a shipped cell's name in place of a spec file.
    """
    import lstmc
    from lstmc import cells

    names = cells.names()
    width = max(map(len, names), default=0) + 2
    for name in names:
        click.echo(f"{name:<{width}}{lstmc.builtin(name).summary()}")
