"""What the verbs share: targets, tolerances and exit codes; loading a spec by path or shipped
name; generating and compiling with a missing code generator reported as an error."""

from __future__ import annotations

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


def load_cell(spec: str):
    """The cell SPEC names: `find_cell`, called as `lstmc.cli._load_cell`.

    Looked up there on every call, so that replacing that name (the tests do, to inject a
    failure) reaches every verb, as it did when the command line was one module."""
    import lstmc.cli

    return lstmc.cli._load_cell(spec)


def find_cell(spec: str):
    """A spec file, or the name of a shipped cell when no such file exists (lstmc.api.as_cell)."""
    from lstmc.api import as_cell

    return as_cell(spec)


def generate(cell, target, dtype, opt, unroll, sizes, constants, name=None):
    """`generate_source`, with a missing code generator reported as an error, not a bug."""
    from lstmc.compiler import generate_source

    return _with_codegen(
        target, generate_source, cell, target, dtype, opt, unroll, sizes or None, constants, name
    )


def compile_kernel(cell, target, dtype, opt, unroll, constants):
    """`lstmc.compile`, with a missing code generator reported as an error, not a bug."""
    import lstmc

    return _with_codegen(
        target,
        lstmc.compile,
        cell,
        target=target,
        dtype=dtype,
        opt=opt,
        unroll=unroll,
        constants=constants,
    )


def _with_codegen(target, fn, /, *args, **kwargs):
    """`fn(*args, **kwargs)`; a missing lstmc.codegen module (a build without the `target`
    code generator) becomes an LstmcError."""
    from lstmc.errors import LstmcError

    try:
        return fn(*args, **kwargs)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("lstmc.codegen"):
            raise LstmcError(
                f"the {target} target is not available in this build of lstmc "
                f"({exc.name} is missing)"
            ) from exc
        raise
