"""Optimization passes. Importing this package registers every pass with the manager."""

from lstmc.passes import (  # noqa: F401  (imported to register)
    constant_fold,
    cse,
    dce,
    fuse_elementwise,
    fuse_gates,
    hoist,
    reassociate,
    simplify,
    split_concat,
    unroll,
)
from lstmc.passes.manager import PASSES, PassResult, pipeline, run_passes

__all__ = ["PASSES", "PassResult", "pipeline", "run_passes"]
