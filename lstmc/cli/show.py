"""`lstmc show`: the IR after the passes (or after one pass, or every pass), or the source."""

from __future__ import annotations

import click

from lstmc.cli.common import generate, load_cell
from lstmc.cli.options import (
    const_option,
    dtype_option,
    example,
    opt_option,
    size_option,
    spec_argument,
    target_option,
    unroll_option,
    verbosity,
)
from lstmc.compiler import DEFAULT_OPT


@click.command(
    "show",
    epilog=example(
        f"lstmc show lstm.yaml                       # the IR after the -O{DEFAULT_OPT} pipeline",
        "lstmc show lstm.yaml -O0                   # the IR as lowered from the spec",
        "lstmc show lstm.yaml --after fuse-gates    # the IR after each run of one pass",
        "lstmc show lstm.yaml --print-after-all --time-passes",
        "lstmc show lstm.yaml --source --target cpu --dtype float64",
    ),
)
@spec_argument
@opt_option()
@unroll_option
@const_option
@click.option(
    "--after",
    "after",
    default=None,
    metavar="PASS",
    help="Print the IR after each run of PASS (a name from the pipeline).",
)
@click.option(
    "--print-after-all",
    is_flag=True,
    help="Print the lowered IR and the IR after every pass that changed it.",
)
@click.option("--time-passes", is_flag=True, help="Print each pass's time on stderr.")
@click.option("--source", is_flag=True, help="Print the generated Python module instead.")
@target_option()
@dtype_option
@size_option("With --source: fix a size at compile time (repeatable).")
@verbosity
def show_cmd(
    spec, opt, unroll, constants, after, print_after_all, time_passes, source, target, dtype, sizes
):
    """Print the IR of SPEC after the optimization pipeline, or the generated source.

    The verifier runs after every pass. The IR printed is the text form that
    `lstmc.ir.parser.parse_graph` reads back; `# ----` lines are comments.
    """
    from lstmc.api import to_ir
    from lstmc.compiler import optimize
    from lstmc.errors import LstmcError, did_you_mean
    from lstmc.ir.printer import print_graph
    from lstmc.passes import pipeline
    from lstmc.passes.manager import PASSES

    if source and (after or print_after_all):
        raise click.UsageError(
            "--source prints the generated module; --after and "
            "--print-after-all print the IR: choose one"
        )
    if sizes and not source:  # the IR keeps its sizes symbolic: say so, not ignore it
        raise click.UsageError("--size fixes a size of the generated module: use it with --source")
    cell = load_cell(spec)
    if after is not None and after not in PASSES:
        raise LstmcError(
            f"unknown pass `{after}`{did_you_mean(after, PASSES)}; passes: "
            f"{', '.join(sorted(PASSES))}"
        )
    if source:
        text, _graph, records = generate(cell, target, dtype, opt, unroll, sizes, constants)
        click.echo(text, nl=False)
    else:
        lowered = to_ir(cell, constants)
        graph, records = optimize(
            lowered, opt, unroll, verify_each=True, keep_text=bool(after or print_after_all)
        )
        if after is not None:
            runs = [r for r in records if r.name == after]
            if not runs:
                names = pipeline(opt, unroll)
                raise LstmcError(
                    f"pass `{after}` does not run at -O{opt}; the pipeline is "
                    f"{', '.join(names) or '(empty)'}"
                )
            for k, r in enumerate(runs, 1):
                where = f"pass {records.index(r) + 1} of {len(records)}"
                change = "" if r.modified else ", no change"
                click.echo(f"# ---- after {after} (run {k} of {len(runs)}, {where}{change}) ----")
                click.echo(r.text, nl=False)
        elif print_after_all:
            click.echo("# ---- lowered from the spec ----")
            click.echo(print_graph(lowered), nl=False)
            for i, r in enumerate(records, 1):
                if r.modified:
                    click.echo(f"# ---- after {r.name} (pass {i} of {len(records)}) ----")
                    click.echo(r.text, nl=False)
                else:
                    click.echo(
                        f"# ---- after {r.name} (pass {i} of {len(records)}): no change ----"
                    )
        else:
            click.echo(print_graph(graph), nl=False)
    if time_passes:
        _print_pass_times(records)


def _print_pass_times(records) -> None:
    table: dict[str, list] = {}
    for r in records:
        row = table.setdefault(r.name, [0, 0, 0.0])
        row[0] += 1
        row[1] += bool(r.modified)
        row[2] += r.seconds
    total = sum(r.seconds for r in records)
    click.echo(f"{'pass':<24}{'runs':>6}{'changed':>9}{'ms':>10}", err=True)
    for name, (runs, changed, seconds) in table.items():
        click.echo(f"{name:<24}{runs:>6}{changed:>9}{seconds * 1e3:>10.2f}", err=True)
    click.echo(f"{'total':<24}{len(records):>6}{'':>9}{total * 1e3:>10.2f}", err=True)
