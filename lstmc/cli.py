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
"""

from __future__ import annotations

import contextlib
import keyword
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from lstmc.compiler import DEFAULT_OPT

TARGETS = ("cpu", "cuda")
DTYPES = ("float32", "float64")
# What `run` accepts: max |kernel - interpreter| <= TOL * max(1, max |interpreter|), per array.
# float64 kernels differ from the float64 interpreter only in summation order and in the
# exp/tanh implementations, a few ulps (1e-16) per step; 1e-10 leaves room for long sequences.
# float32 has eps 1.2e-7 and the vectorized sigmoid/tanh are good to a few ulps; a step's
# error is a few eps times the fan-in's growth, and contractive cells don't amplify it, so
# T=50..1000 steps land at 1e-7..1e-5. 1e-4 passes those and still catches a wrong gate or
# bias (errors of 1e-2 and more).
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
EXIT_USAGE = 2  # bad options, bad specs, any LstmcError
EXIT_INTERNAL = 3  # a bug in lstmc: an exception no one raised on purpose
# Artifacts import only these (and the standard library); the check blocks the rest.
BLOCKED_IN_ARTIFACTS = ("lstmc", "networkx", "yaml")


# -- output, verbosity and progress ------------------------------------------------------------


def _meta() -> dict:
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def _quiet() -> bool:
    return bool(_meta().get("lstmc.quiet"))


def _verbose() -> bool:
    return bool(_meta().get("lstmc.verbose"))


def _say(text: str) -> None:
    """A result line on stdout (suppressed by --quiet)."""
    if not _quiet():
        click.echo(text)


def _note(text: str) -> None:
    """A detail on stderr, with --verbose only."""
    if _verbose():
        click.echo(text, err=True)


@contextlib.contextmanager
def _progress(message: str):
    """A spinner on stderr while a long step runs, on a terminal only; with --verbose the step
    and its time are logged instead (also when piped)."""
    start = time.perf_counter()
    stop = threading.Event()
    spinner = None
    if _verbose():
        click.echo(f"{message}...", err=True)
    elif not _quiet() and sys.stderr.isatty():

        def spin() -> None:
            if stop.wait(0.3):  # fast steps (a cache hit) never show a spinner
                return
            frames = "|/-\\"
            i = 0
            while True:
                elapsed = time.perf_counter() - start
                sys.stderr.write(f"\r{frames[i % 4]} {message}... {elapsed:.0f} s")
                sys.stderr.flush()
                i += 1
                if stop.wait(0.1):
                    return

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
    try:
        yield
    finally:
        if spinner is not None:
            stop.set()
            spinner.join()
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        _note(f"{message}: {time.perf_counter() - start:.2f} s")


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[f"lstmc.{param.name}"] = True  # meta is shared by the whole context chain
    return value


_QUIET_HELP = "Print only results and errors."
_VERBOSE_HELP = "Log each step and its time on stderr; show tracebacks."


def _verbosity(fn):
    """-q/--quiet and -v/--verbose, accepted before the verb and after it alike."""
    fn = click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_flag,
        help=_VERBOSE_HELP,
    )(fn)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_flag,
        help=_QUIET_HELP,
    )(fn)


def _error_line(exc: BaseException) -> str:
    """One line (or one message) for stderr: `file:line:col: error: ...` for spec errors."""
    from lstmc.errors import SpecError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, SpecError) and exc.location is not None:
        return text
    text = text.removeprefix("error: ")
    return f"lstmc: error: {text}"


_CUDA_UNAVAILABLE = ("CudaSupportError", "CudaDriverError")


class _Cli(click.Group):
    """The verb group; turns lstmc's errors into one message and exit status 2."""

    def invoke(self, ctx: click.Context):
        from lstmc.errors import LstmcError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except LstmcError as exc:
            if ctx.meta.get("lstmc.verbose"):
                traceback.print_exc()
            click.echo(_error_line(exc), err=True)
            ctx.exit(EXIT_USAGE)
        except OSError as exc:  # the file system said no: disk full, permissions, ...
            if ctx.meta.get("lstmc.verbose"):
                traceback.print_exc()
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"lstmc: error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("lstmc: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 (a bug: one line, unless --verbose)
            if type(exc).__name__ in _CUDA_UNAVAILABLE:  # numba.cuda's, without importing it
                if ctx.meta.get("lstmc.verbose"):
                    traceback.print_exc()
                first = (str(exc).strip().splitlines() or [""])[0].strip().rstrip(":")
                click.echo(
                    f"lstmc: error: CUDA is not usable here ({type(exc).__name__}: {first}); "
                    "use --target cpu, or set NUMBA_ENABLE_CUDASIM=1 for Numba's (slow) "
                    "simulator",
                    err=True,
                )
                ctx.exit(EXIT_USAGE)
            if ctx.meta.get("lstmc.verbose"):
                traceback.print_exc()
                hint = ""
            else:
                hint = " (rerun with --verbose for the traceback)"
            first = (str(exc).strip().splitlines() or [""])[0]
            click.echo(
                f"lstmc: internal error: {type(exc).__name__}: {first}{hint}; this is a "
                "bug in lstmc, please report it",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


# -- shared options ----------------------------------------------------------------------------


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


def _spec_argument(fn):
    return click.argument("spec", metavar="SPEC")(fn)


def _target_option(default="cpu"):
    return click.option(
        "--target",
        type=click.Choice(TARGETS),
        default=default,
        show_default=True,
        help="Code generator.",
    )


def _dtype_option(fn):
    return click.option(
        "--dtype",
        type=click.Choice(DTYPES),
        default="float32",
        show_default=True,
        help="Float type of the kernel.",
    )(fn)


def _opt_option(default=DEFAULT_OPT):
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


def _unroll_option(fn):
    return click.option(
        "--unroll",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Unroll the time loop N times (at any -O).",
    )(fn)


def _const_option(fn):
    return click.option(
        "--const",
        "constants",
        multiple=True,
        metavar="NAME=VALUE",
        callback=_assignments("a finite number", _finite_float),
        help="Override a constant of the spec's `constants:` (repeatable).",
    )(fn)


def _size_option(help_text: str):
    return click.option(
        "--size",
        "sizes",
        multiple=True,
        metavar="NAME=N",
        callback=_assignments("a positive integer", _positive_int),
        help=help_text,
    )


def _example(*lines: str) -> str:
    """A click epilog with examples, kept as written (\\b stops click from rewrapping)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


# -- loading and compiling ---------------------------------------------------------------------


def _load_cell(spec: str):
    """A spec file, or the name of a shipped cell when no such file exists."""
    import lstmc
    from lstmc import cells
    from lstmc.errors import SpecError, did_you_mean

    path = Path(spec)
    if not path.exists():
        if spec in cells.names():
            return lstmc.builtin(spec)
        hint = ""
        if os.sep not in spec and "." not in spec:
            hint = (
                f", and no shipped cell `{spec}`{did_you_mean(spec, cells.names())}; "
                "`lstmc cells` lists them"
            )
        raise SpecError(f"no such spec file: {spec}{hint}", None)
    return lstmc.load(path)


def _generate(cell, target, dtype, opt, unroll, sizes, constants):
    """`generate_source`, with a missing code generator reported as an error, not a bug."""
    from lstmc.compiler import generate_source
    from lstmc.errors import LstmcError

    try:
        return generate_source(cell, target, dtype, opt, unroll, sizes or None, constants)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("lstmc.codegen"):
            raise LstmcError(
                f"the {target} target is not available in this build of lstmc "
                f"({exc.name} is missing)"
            ) from exc
        raise


def _compile_kernel(cell, target, dtype, opt, unroll, constants):
    import lstmc
    from lstmc.errors import LstmcError

    try:
        return lstmc.compile(
            cell, target=target, dtype=dtype, opt=opt, unroll=unroll, constants=constants
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("lstmc.codegen"):
            raise LstmcError(
                f"the {target} target is not available in this build of lstmc "
                f"({exc.name} is missing)"
            ) from exc
        raise


# -- `lstmc compile`: check the artifact, then put it in place atomically ----------------------

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
        _note(proc.stderr)
        raise LstmcError(
            f"the compiled module does not import on its own: {lines[-1]} "
            "(nothing was written; --no-check skips this check)"
        )


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_file(target: Path, data: bytes, outside: bool = True) -> None:
    """Replace `target` in one rename. With `outside`, the temporary file goes in the parent of
    the target's directory, so that the directory never holds a partial or stray file; where
    that is not possible (a read-only parent, another file system), beside the target."""
    folder = target.parent
    places = [folder.resolve().parent, folder] if outside else [folder]
    failure: OSError | None = None
    for place in places:
        try:
            fd, tmp = tempfile.mkstemp(dir=place, prefix=f".{target.name}.lstmc-")
        except OSError as exc:
            failure = exc
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and place is not places[-1]:
                failure = exc
                continue
            raise
        _fsync_dir(folder)
        return
    raise failure


def _install(out_dir: Path, filename: str, text: str) -> bool:
    """Put `text` at out_dir/filename, atomically. Returns False if an identical file was there
    already (left alone: Numba's cache beside it stays valid).

    A missing DIR is built as a hidden sibling and renamed into place, so it appears complete
    or not at all; missing parents are created, and removed again if the write fails."""
    from lstmc.errors import LstmcError

    data = text.encode("utf-8")
    target = out_dir / filename
    if out_dir.is_dir():
        if target.is_dir() or (target.exists() and not target.is_file()):
            raise LstmcError(f"{target} exists and is not a file")
        if target.is_file():
            with contextlib.suppress(OSError):
                if target.read_bytes() == data:
                    return False
        _replace_file(target, data)
        return True
    if out_dir.exists():
        raise LstmcError(f"{out_dir} exists and is not a directory")
    parent = out_dir.absolute().parent
    created = []
    try:
        for folder in reversed([parent, *parent.parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.lstmc-"))
        try:
            _write_synced(tmp / filename, data)
            os.chmod(tmp, 0o777 & ~_umask())
            os.rename(tmp, out_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not out_dir.is_dir():  # not just another process creating DIR meanwhile
                raise
            _replace_file(target, data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return True


def _check_module_name(module: str, from_option: bool) -> None:
    from lstmc.errors import LstmcError

    how = "--name" if from_option else "the cell name (choose another with --name)"
    if not module.isidentifier() or keyword.iskeyword(module) or module.startswith("__"):
        raise LstmcError(
            f"{how} `{module}` is not a valid module name: use a letter or _ "
            "followed by letters, digits or _, not a Python keyword"
        )
    if module in ("numpy", "numba", "lstmc_runtime", "scipy", *BLOCKED_IN_ARTIFACTS) or (
        module in getattr(sys, "stdlib_module_names", ())
    ):
        raise LstmcError(f"{how} `{module}` would shadow the Python module of that name")


# -- the verbs ---------------------------------------------------------------------------------


@click.group(
    cls=_Cli,
    epilog=_example(
        "lstmc cells",
        "lstmc check my_cell.yaml",
        "lstmc run lstm --T 50 --B 4 --size input=16 --size hidden=32",
        "lstmc compile lstm --target cpu -o build/ && python -c 'import sys; "
        'sys.path.insert(0, "build"); import lstm\'',
    )
    + "\n\n\b\nExit status: 0 success; 1 `run` found an error above the tolerance; 2 a bad "
    "option,\nspec or argument; 3 an internal error (a bug in lstmc).",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_flag,
    help=_QUIET_HELP,
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_flag,
    help=_VERBOSE_HELP,
)
@click.version_option(package_name="lstmc", prog_name="lstmc")
def cli() -> None:
    """lstmc: compile recurrent cells written as equations in YAML into fused Numba kernels.

    SPEC is a spec file, or the name of a shipped cell (see `lstmc cells`).
    """


@cli.command(
    "compile",
    epilog=_example(
        "lstmc compile lstm.yaml --target cpu -o build/ --dtype float32 -O3",
        "lstmc compile lstm.yaml -o build/ --size hidden=128 --name lstm128",
        'python -c \'import sys; sys.path.insert(0, "build"); from lstm import kernel; '
        "help(kernel)'",
    ),
)
@_spec_argument
@_target_option()
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write DIR/<name>.py into (created if missing).",
)
@_dtype_option
@_opt_option()
@_unroll_option
@_size_option("Fix a size at compile time; the module then accepts only that size (repeatable).")
@_const_option
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
@_verbosity
def compile_cmd(spec, target, out_dir, dtype, opt, unroll, sizes, constants, name, check):
    """Write a standalone Python module for SPEC.

    The module imports only numpy, numba and lstmc_runtime. It defines `kernel` (call it as
    `y, state = kernel(x, params, state=None)`; `kernel.init_params(...)`, `kernel.pack(...)`)
    and a function named after the cell. The write is atomic: on any failure DIR is left
    exactly as it was. Numba caches the machine code in DIR/__pycache__ on first use.
    """
    cell = _load_cell(spec)
    module = name or cell.name
    _check_module_name(module, name is not None)
    what = f"{cell.name} ({target}, {dtype}, -O{opt})"
    with _progress(f"generating {what}"):
        source, _graph, _records = _generate(cell, target, dtype, opt, unroll, sizes, constants)
    if check:
        with _progress(f"checking that {module}.py imports on its own"):
            _check_artifact(source, module)
    target_path = out_dir / f"{module}.py"
    if _install(out_dir, f"{module}.py", source):
        _say(f"wrote {target_path}: {what}")
    else:
        _say(f"{target_path} is up to date: {what}")


@cli.command(
    "check",
    epilog=_example(
        "lstmc check my_cell.yaml",
        "lstmc check lstmc/cells/*.yaml --target cpu",
    ),
)
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@_const_option
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help="Also optimize the IR and generate code for TARGET.",
)
@_verbosity
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
            cell = _load_cell(spec)
            verify(to_ir(cell, constants))
            if target:
                _generate(cell, target, "float32", 3, None, None, constants)
        except LstmcError as exc:
            if len(specs) == 1:
                raise
            click.echo(_error_line(exc), err=True)
            failed += 1
            continue
        outs = ", ".join(cell.output_names)
        n = len(cell.equations)
        _say(
            f"ok: {cell.name} ({n} equation{'s' * (n != 1)}; state "
            f"{', '.join(cell.state)}; {len(cell.params)} params; outputs {outs}; sizes "
            f"{', '.join(cell.sizes)})"
        )
    if failed:
        raise click.exceptions.Exit(EXIT_USAGE)


@cli.command(
    "show",
    epilog=_example(
        f"lstmc show lstm.yaml                       # the IR after the -O{DEFAULT_OPT} pipeline",
        "lstmc show lstm.yaml -O0                   # the IR as lowered from the spec",
        "lstmc show lstm.yaml --after fuse-gates    # the IR after each run of one pass",
        "lstmc show lstm.yaml --print-after-all --time-passes",
        "lstmc show lstm.yaml --source --target cpu --dtype float64",
    ),
)
@_spec_argument
@_opt_option()
@_unroll_option
@_const_option
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
@_target_option()
@_dtype_option
@_size_option("With --source: fix a size at compile time (repeatable).")
@_verbosity
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
    cell = _load_cell(spec)
    if after is not None and after not in PASSES:
        raise LstmcError(
            f"unknown pass `{after}`{did_you_mean(after, PASSES)}; passes: "
            f"{', '.join(sorted(PASSES))}"
        )
    if source:
        text, _graph, records = _generate(cell, target, dtype, opt, unroll, sizes, constants)
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


_GRAPHVIZ_HINT = (
    "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), `brew install "
    "graphviz` (macOS); or write the DOT text with --format dot"
)


@cli.command(
    "graph",
    epilog=_example(
        "lstmc graph lstm.yaml -o lstm.svg",
        "lstmc graph lstm.yaml -o lstm.png -O3",
        "lstmc graph lstm.yaml --format dot -o -     # DOT text on stdout, no Graphviz needed",
    ),
)
@_spec_argument
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
@_opt_option(default=0)
@_unroll_option
@_const_option
@_verbosity
def graph_cmd(spec, output, fmt, opt, unroll, constants):
    """Draw the IR of SPEC with Graphviz (SVG, PNG) or write it as DOT text.

    The default -O0 draws the cell as written; -O3 draws what the kernel computes.
    SVG and PNG need Graphviz's `dot` program.
    """
    from lstmc.compiler import optimize
    from lstmc.errors import LstmcError

    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower() if output and output != "-" else ""
        fmt = suffix if suffix in ("svg", "png", "dot") else "svg"
    dot = None
    if fmt != "dot":
        dot = shutil.which("dot")
        if dot is None:
            raise LstmcError(
                f"Graphviz's `dot` program is not installed (needed for "
                f"--format {fmt}); {_GRAPHVIZ_HINT}"
            )
    cell = _load_cell(spec)
    graph, _records = optimize(cell, opt, unroll, constants, verify_each=True)
    from lstmc.ir.dot import to_dot

    data = to_dot(graph).encode("utf-8")
    if dot is not None:
        with _progress(f"rendering {fmt} with Graphviz"):
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
    _replace_file(path, data, outside=False)
    _say(f"wrote {path} ({fmt}, -O{opt})")


@cli.command("cells", epilog=_example("lstmc cells", "lstmc show gru --source"))
@_verbosity
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


def _data_sizes(cell, given: dict, default: int) -> dict:
    from lstmc.errors import LstmcError, did_you_mean

    for name in given:
        if name not in cell.sizes:
            raise LstmcError(
                f"unknown size `{name}`{did_you_mean(name, cell.sizes)}; "
                f"{cell.name} has sizes {', '.join(cell.sizes)}"
            )
    return {name: given.get(name, default) for name in cell.sizes}


def _random_inputs(kernel, sizes: dict, T: int, B: int, seed: int, dtype: str):
    """x, params and a nonzero start state, reproducible from `seed`, in `dtype`."""
    import numpy as np
    from lstmc_runtime.signature import size_value

    rng = np.random.default_rng(seed)
    sig = kernel.signature
    params = kernel.init_params(seed=seed, **sizes)
    (n_in,) = sig.input.concrete(sizes)
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    state = {
        s.name: (0.5 * rng.standard_normal((B, size_value(s.shape[0], sizes)))).astype(dtype)
        for s in sig.state
    }
    return x, params, state


def _as_dict(y, names) -> dict:
    return dict(y) if isinstance(y, dict) else {names[0]: y}


@cli.command(
    "run",
    epilog=_example(
        "lstmc run lstm.yaml --target cpu --T 50 --B 4 --size input=16 --size hidden=32",
        "lstmc run gru --dtype float64 -O0 --seed 3",
    ),
)
@_spec_argument
@_target_option()
@click.option(
    "--T",
    "T",
    type=click.IntRange(min=1),
    metavar="N",
    default=50,
    show_default=True,
    help="Timesteps.",
)
@click.option(
    "--B",
    "B",
    type=click.IntRange(min=1),
    metavar="N",
    default=4,
    show_default=True,
    help="Batch size.",
)
@_size_option("A size of the random data, e.g. --size hidden=32 (repeatable; unset sizes are 16).")
@_dtype_option
@_opt_option()
@_unroll_option
@_const_option
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=None,
    help="Tolerance relative to max(1, max |y|) [float32: 1e-4, float64: 1e-10].",
)
@_verbosity
def run_cmd(spec, target, T, B, sizes, dtype, opt, unroll, constants, seed, tol):
    """Run SPEC's kernel and the reference interpreter on the same random data.

    Prints the max abs error of every output and final state. Exits 1 when an error exceeds
    the tolerance: TOL * max(1, max |reference|) per array, with TOL 1e-4 for float32 (eps is
    1.2e-7; long or expanding sequences accumulate more) and 1e-10 for float64. The start
    state is random, not zero, so the state inputs are checked too.
    """
    import numpy as np

    import lstmc

    cell = _load_cell(spec)
    sizes = _data_sizes(cell, sizes, 16)
    tol = TOLERANCE[dtype] if tol is None else tol
    kernel = _compile_kernel(cell, target, dtype, opt, unroll, constants)
    x, params, state = _random_inputs(kernel, sizes, T, B, seed, dtype)
    with _progress(f"compiling {cell.name} ({target}, {dtype}) with Numba"):
        y, final = kernel(x, params, state)
    f64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    s64 = {k: np.asarray(v, np.float64) for k, v in state.items()}
    y_ref, final_ref = lstmc.interpret(cell, np.asarray(x, np.float64), f64, s64, constants)

    dims = " ".join(f"{k}={v}" for k, v in sizes.items())
    _say(f"{cell.name}: {target}, {dtype}, -O{opt}; T={T} B={B} {dims}; seed {seed}")
    rows = [
        ("output", k, v, _as_dict(y_ref, kernel.output_names)[k])
        for k, v in _as_dict(y, kernel.output_names).items()
    ]
    rows += [("state", k, np.asarray(final[k]), final_ref[k]) for k in final_ref]
    worst = 0.0
    width = max(len(k) for _, k, _, _ in rows)
    for kind, name, got, ref in rows:
        got = np.asarray(got, np.float64)
        err = float(np.max(np.abs(got - ref))) if got.size else 0.0
        biggest = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = err / max(1.0, biggest) if not math.isnan(err) else math.inf  # NaN: a failure
        worst = max(worst, rel)
        _say(f"  {kind:<7}{name:<{width}}  max |err| {err:.3g}  (max |ref| {biggest:.3g})")
    if worst <= tol:
        _say(f"ok: every error within {tol:g} x max(1, max |ref|)")
        return
    click.echo(
        f"FAILED: an error of {worst:.3g} x max(1, max |ref|) exceeds the {dtype} "
        f"tolerance {tol:g}",
        err=True,
    )
    raise click.exceptions.Exit(1)


# -- `lstmc bench`: PyTorch equivalents of the shipped cells -----------------------------------


def _cat(params, names, np):
    return np.concatenate([params[n] for n in names], axis=0)


def _torch_lstm(torch, np, p, sizes, proj=False):
    m = torch.nn.LSTM(sizes["input"], sizes["hidden"], proj_size=sizes["proj"] if proj else 0)
    w = {
        "weight_ih_l0": _cat(p, ["W_i", "W_f", "W_g", "W_o"], np),
        "weight_hh_l0": _cat(p, ["U_i", "U_f", "U_g", "U_o"], np),
        "bias_ih_l0": _cat(p, ["b_i", "b_f", "b_g", "b_o"], np),  # lstmc keeps one bias a gate
        "bias_hh_l0": np.zeros(4 * sizes["hidden"], p["b_i"].dtype),
    }
    if proj:
        w["weight_hr_l0"] = p["W_hr"]
    return m, w, ("h", "c")


def _torch_gru(torch, np, p, sizes):
    m = torch.nn.GRU(sizes["input"], sizes["hidden"])
    w = {
        "weight_ih_l0": _cat(p, ["W_ir", "W_iz", "W_in"], np),
        "weight_hh_l0": _cat(p, ["W_hr", "W_hz", "W_hn"], np),
        "bias_ih_l0": _cat(p, ["b_ir", "b_iz", "b_in"], np),
        "bias_hh_l0": _cat(p, ["b_hr", "b_hz", "b_hn"], np),
    }
    return m, w, ("h",)


def _torch_rnn(nonlinearity):
    def build(torch, np, p, sizes):
        m = torch.nn.RNN(sizes["input"], sizes["hidden"], nonlinearity=nonlinearity)
        w = {
            "weight_ih_l0": p["W_ih"],
            "weight_hh_l0": p["W_hh"],
            "bias_ih_l0": p["b_ih"],
            "bias_hh_l0": p["b_hh"],
        }
        return m, w, ("h",)

    return build


# cell name -> (description, builder). A spec only counts as equivalent when its outputs match
# the torch module's on the benchmark data, so an edited `lstm` is never compared as nn.LSTM.
TORCH_EQUIVALENTS = {
    "lstm": ("nn.LSTM", lambda t, np, p, s: _torch_lstm(t, np, p, s)),
    "lstmp": ("nn.LSTM(proj_size)", lambda t, np, p, s: _torch_lstm(t, np, p, s, proj=True)),
    "gru": ("nn.GRU", _torch_gru),
    "rnn_tanh": ("nn.RNN(tanh)", _torch_rnn("tanh")),
    "rnn_relu": ("nn.RNN(relu)", _torch_rnn("relu")),
}


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


@dataclass
class _Contender:
    """A way to run the same computation: `call()` runs it, `sync` waits for a device."""

    name: str
    call: Callable | None = None  # None: not available, `name` says why
    sync: Callable | None = None


def _torch_contender(cell, kernel, params, state, x, target, threads=None) -> _Contender:
    """The PyTorch module equivalent to `cell`, with the kernel's weights, on the same data."""
    entry = TORCH_EQUIVALENTS.get(cell.name)
    if entry is None:
        return _Contender(f"PyTorch has no module equivalent to `{cell.name}`")
    try:
        import torch
    except ImportError:
        return _Contender("PyTorch is not installed (pip install torch)")
    import numpy as np

    desc, build = entry
    device = "cuda" if target == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return _Contender("PyTorch has no CUDA device here")
    sizes = kernel.signature.bind_params(params)
    try:
        module, weights, state_names = build(torch, np, params, sizes)
        module = module.to(dtype=getattr(torch, str(kernel.dtype)))  # before copying weights in
        module.load_state_dict(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        return _Contender(f"the spec is not PyTorch's {desc} ({exc})")
    module = module.to(device=device).eval()
    xt = torch.from_numpy(x).to(device)
    s0 = tuple(torch.from_numpy(state[k][None].copy()).to(device) for k in state_names)
    s0 = s0 if len(s0) > 1 else s0[0]

    def call():
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not supported with oneDNN" etc.
            return module(xt, s0)[0].detach().cpu().numpy()

    if threads is not None:
        torch.set_num_threads(threads)
    n = torch.get_num_threads()
    threads = f"{n} thread{'s' * (n != 1)}" if device == "cpu" else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else None
    return _Contender(f"torch {desc} ({threads})", call, sync)


@cli.command(
    "bench",
    epilog=_example(
        "lstmc bench lstm.yaml --T 100 --B 16 --size input=256 --size hidden=256",
        "lstmc bench gru --dtype float64 --repeat 50",
    ),
)
@_spec_argument
@_target_option()
@click.option(
    "--T",
    "T",
    type=click.IntRange(min=1),
    metavar="N",
    default=100,
    show_default=True,
    help="Timesteps.",
)
@click.option(
    "--B",
    "B",
    type=click.IntRange(min=1),
    metavar="N",
    default=16,
    show_default=True,
    help="Batch size.",
)
@_size_option(
    "A size, e.g. --size hidden=512 (repeatable; unset sizes are 256, and lstmp's "
    "proj half of hidden)."
)
@_dtype_option
@_opt_option()
@_unroll_option
@_const_option
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed calls of each; the median is reported.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPU threads for both: torch.set_num_threads, the kernel's batch split, the BLAS "
    "(default: each library's own choice).",
)
@_verbosity
def bench_cmd(spec, target, T, B, sizes, dtype, opt, unroll, constants, repeat, seed, threads):
    """Time SPEC's kernel against the equivalent PyTorch module.

    lstm, lstmp, gru, rnn_tanh and rnn_relu have one (nn.LSTM, nn.LSTM(proj_size), nn.GRU,
    nn.RNN); the weights are copied across and the outputs compared before timing, so an
    edited spec is never timed as the PyTorch cell. Other cells, or no torch installed: the
    kernel is timed alone. Both get the same data and random start state; the kernel's params
    are packed once, as a training or inference loop would.
    """
    import numpy as np

    cell = _load_cell(spec)
    given = dict(sizes)
    sizes = _data_sizes(cell, sizes, 256)
    if cell.name == "lstmp" and "proj" not in given:
        sizes["proj"] = max(1, sizes["hidden"] // 2)  # torch needs proj_size < hidden_size
    kernel = _compile_kernel(cell, target, dtype, opt, unroll, constants)
    if threads is not None:
        kernel.threads = threads
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads, user_api="blas")
    x, params, state = _random_inputs(kernel, sizes, T, B, seed, dtype)
    packed = kernel.pack(params)
    ours = _Contender("lstmc kernel", lambda: kernel(x, packed, state)[0])
    if target == "cuda":
        from numba import cuda

        xd, sd = cuda.to_device(x), {k: cuda.to_device(v) for k, v in state.items()}
        ours = _Contender(
            "lstmc kernel (cuda)", lambda: kernel(xd, packed, sd)[0], cuda.synchronize
        )
    with _progress(f"compiling {cell.name} ({target}, {dtype}) with Numba"):
        y = ours.call()
        y = np.asarray(y if isinstance(y, np.ndarray) else y.copy_to_host(), np.float64)
    theirs = _torch_contender(cell, kernel, params, state, x, target, threads)
    note = ""
    if theirs.call is not None:
        err = float(np.max(np.abs(theirs.call().astype(np.float64) - y)))  # also a warm-up
        if not err <= 100 * TOLERANCE[dtype] * max(1.0, float(np.max(np.abs(y)))):
            theirs = _Contender(
                f"the outputs differ from {theirs.name} by {err:.3g}, so the "
                "spec is not that module"
            )
        else:
            note = f" (max |y - y_torch| {err:.2g})"

    dims = " ".join(f"{k}={v}" for k, v in sizes.items())
    _say(f"{cell.name}: {target}, {dtype}, -O{opt}; T={T} B={B} {dims}; median of {repeat}")
    width = max(len(ours.name), len(theirs.name) if theirs.call else 0) + 2
    med, low = _timed(ours.call, repeat, ours.sync)
    _say(f"  {ours.name:<{width}}{med * 1e3:10.3f} ms  (min {low * 1e3:.3f} ms)")
    if theirs.call is None:
        _say(f"  {theirs.name}: timed the kernel alone")
        return
    t_med, t_low = _timed(theirs.call, repeat, theirs.sync)
    _say(f"  {theirs.name:<{width}}{t_med * 1e3:10.3f} ms  (min {t_low * 1e3:.3f} ms)")
    ratio = t_med / med
    verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
    _say(f"  lstmc is {verdict} torch{note}")


def main(argv: list[str] | None = None) -> None:
    """The `lstmc` console script (and `python -m lstmc`)."""
    cli.main(args=argv, prog_name="lstmc")


if __name__ == "__main__":
    main()
