"""`lstmc compile`: generate the module, check that it imports on its own, then put it in place
atomically."""

from __future__ import annotations

import keyword
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from lstmc.cli.atomic import install
from lstmc.cli.common import BLOCKED_IN_ARTIFACTS, generate, load_cell
from lstmc.cli.options import example, kernel_options, spec_argument, target_option, verbosity
from lstmc.cli.output import note, progress, say

# Run in a fresh interpreter: import the written module by path with the compiler, networkx and
# yaml blocked, so an artifact that needs them fails here instead of on the user's machine.
_CHECK_SCRIPT = """
import importlib.abc, importlib.util, sys
BLOCKED = set(sys.argv[3].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"the compiled module imports `{name}`; artifacts may import "
                              "only numpy, numba and lstmc_runtime")
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location(sys.argv[2], sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[sys.argv[2]] = module
spec.loader.exec_module(module)
if not callable(getattr(module, "kernel", None)):
    raise SystemExit("the compiled module defines no `kernel`")
"""


def _check_artifact(source: str, module: str) -> None:
    """Import `source` as `module` in a subprocess (outside DIR, writing no bytecode)."""
    from lstmc.errors import LstmcError

    with tempfile.TemporaryDirectory(prefix="lstmc-check-") as tmp:
        path = Path(tmp) / f"{module}.py"
        path.write_text(source, encoding="utf-8")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NUMBA_CACHE_DIR=tmp)
        proc = subprocess.run(
            [
                sys.executable,
                "-B",
                "-c",
                _CHECK_SCRIPT,
                str(path),
                module,
                ",".join(BLOCKED_IN_ARTIFACTS),
            ],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        note(proc.stderr)
        raise LstmcError(
            f"the compiled module does not import on its own: {lines[-1]} "
            "(nothing was written; --no-check skips this check)"
        )


def _check_module_name(module: str, from_option: bool) -> None:
    from lstmc.errors import LstmcError

    how = "--name" if from_option else "the cell name (choose another with --name)"
    # ASCII only: Python imports a non-ASCII name by its NFKC form, so `ﬁx.py` is written
    # and `import ﬁx` then looks for `fix` (spec names are ASCII for the same reason)
    if (
        not (module.isascii() and module.isidentifier())
        or keyword.iskeyword(module)
        or module.startswith("__")
    ):
        raise LstmcError(
            f"{how} `{module}` is not a valid module name: use an ASCII letter or _ "
            "followed by letters, digits or _, not a Python keyword"
        )
    if module in ("numpy", "numba", "lstmc_runtime", "scipy", *BLOCKED_IN_ARTIFACTS) or (
        module in getattr(sys, "stdlib_module_names", ())
    ):
        raise LstmcError(f"{how} `{module}` would shadow the Python module of that name")


@click.command(
    "compile",
    epilog=example(
        "lstmc compile lstm.yaml --target cpu -o build/ --dtype float32 -O3",
        "lstmc compile lstm.yaml -o build/ --size hidden=128 --name lstm128",
        'python -c \'import sys; sys.path.insert(0, "build"); from lstm import kernel; '
        "help(kernel)'",
    ),
)
@spec_argument
@target_option()
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write DIR/<name>.py into (created if missing).",
)
@kernel_options("Fix a size at compile time; the module then accepts only that size (repeatable).")
@click.option(
    "--name", default=None, help="Module name (default: the cell name); the file is DIR/<name>.py."
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Import the written module in a fresh Python (with lstmc, networkx and "
    "yaml blocked) before putting it in place.",
)
@verbosity
def compile_cmd(spec, target, out_dir, dtype, opt, unroll, sizes, constants, name, check):
    """Write a standalone Python module for SPEC.

    The module imports only numpy, numba and lstmc_runtime. It defines `kernel` (call it as
    `y, state = kernel(x, params, state=None)`; `kernel.init_params(...)`, `kernel.pack(...)`)
    and a function named after the module (`--name`, default the cell; `run_<name>` where the
    module needs that name itself, as for `np` or `kernel`). The write is atomic: on any failure DIR is left
    exactly as it was. Numba caches the machine code in DIR/__pycache__ on first use.
    """
    cell = load_cell(spec)
    module = name if name is not None else cell.name
    _check_module_name(module, name is not None)
    what = f"{cell.name} ({target}, {dtype}, -O{opt})"
    with progress(f"generating {what}"):
        source, _graph, _records = generate(
            cell, target, dtype, opt, unroll, sizes, constants, module
        )
    if check:
        with progress(f"checking that {module}.py imports on its own"):
            _check_artifact(source, module)
    target_path = out_dir / f"{module}.py"
    from lstmc.codegen.module import GENERATED_MARK, entry_function, rename_reason

    fn = entry_function(module)
    why = rename_reason(module)
    renamed = f" (`{module}` is {why})" if why else ""
    if install(out_dir, f"{module}.py", source, owned=GENERATED_MARK):
        say(f"wrote {target_path}: {what}; it defines `kernel` and `{fn}`{renamed}")
    else:
        say(f"{target_path} is up to date: {what}; it defines `kernel` and `{fn}`{renamed}")
