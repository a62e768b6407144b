"""The CUDA run-time that generated CUDA modules import (as `lstmc_runtime.cuda`).

What lives here rather than in each generated module:

- `device_math(dtype)`: the transcendental functions bound to the ops' `_vm_*` names, as CUDA
  device functions typed for one float type (a float32 kernel never promotes to float64). They
  are built on `math.exp/tanh/log/log1p` (libdevice on the GPU), never overflow for large |x|
  and propagate NaN;
- `lane_sum`: the sum over a group of L adjacent lanes (a warp butterfly of `shfl_xor_sync`);
- generic kernels: the register-tiled matrix product of the hoisted input projection over all
  T*B rows (`C = A @ W.T`, specialized per dtype), device copies and fills;
- the launch configuration: tile shapes, the persistent kernel's grid (from the device's SM
  count, shared memory and cooperative occupancy), and fast launches with an explicit signature;
- `CudaKernel`: argument checks, packing onto the device, NumPy or device arrays in and out
  (anything with `__cuda_array_interface__`: Numba, CuPy, torch.cuda), streams, and the choice
  between the stepwise and the persistent variant.

Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same code runs with small tiles,
one cooperative block, and a barrier-based emulation of the warp shuffle, which the simulator
lacks; nothing else changes.

The pieces live in sibling modules, one job each, and this module re-exports every name that
generated modules and the tests use: `cuda_config` (simulator, tile shapes, float types),
`cuda_math` (device math, lane sums), `cuda_generic` (GEMM, copy and fill kernels),
`cuda_launch` (device limits, `Launcher`, `Run`, the persistent grid), `cuda_arrays` (array
kinds, streams) and `cuda_kernel` (`CudaKernel`).
"""

from __future__ import annotations

from lstmc_runtime.cuda_arrays import (
    Allocator,
    as_device_view,
    is_device_array,
    kind_of,
    resolve_stream,
)
from lstmc_runtime.cuda_config import (
    F64,
    GEMM_TILE,
    NORM_THREADS,
    PERSIST_LANES,
    PERSIST_NB,
    PERSIST_THREADS,
    POINT_THREADS,
    SIMULATOR,
    STEP_TILE,
    VARIANTS,
    numba_type,
)
from lstmc_runtime.cuda_generic import (
    copy_2d,
    device_copy,
    device_fill,
    fill_2d,
    gemm_kernel,
)
from lstmc_runtime.cuda_kernel import CudaKernel
from lstmc_runtime.cuda_launch import (
    DeviceLimits,
    Launcher,
    Run,
    arg_types,
    device_limits,
    persistent_config,
    persistent_shared_bytes,
)
from lstmc_runtime.cuda_math import DeviceMath, device_math, lane_sum, shfl_xor

__all__ = [
    "F64",
    "GEMM_TILE",
    "NORM_THREADS",
    "PERSIST_LANES",
    "PERSIST_NB",
    "PERSIST_THREADS",
    "POINT_THREADS",
    "SIMULATOR",
    "STEP_TILE",
    "VARIANTS",
    "Allocator",
    "CudaKernel",
    "DeviceLimits",
    "DeviceMath",
    "Launcher",
    "Run",
    "arg_types",
    "as_device_view",
    "copy_2d",
    "device_copy",
    "device_fill",
    "device_limits",
    "device_math",
    "fill_2d",
    "gemm_kernel",
    "is_device_array",
    "kind_of",
    "lane_sum",
    "numba_type",
    "persistent_config",
    "persistent_shared_bytes",
    "resolve_stream",
    "shfl_xor",
]
