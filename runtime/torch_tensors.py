"""CPU torch tensors in and out of a CPU kernel, without copies.

A kernel called with a torch tensor for x returns torch tensors (y and the state), as a CUDA
kernel called with torch CUDA tensors does (lstmc_runtime.cuda_arrays): both views of the
NumPy arrays the kernel works on (`Tensor.numpy()`, `torch.from_numpy`). Kernels have no
backward pass, so a tensor that requires grad while autograd records is refused instead of
being detached in silence: a training loop would otherwise get outputs that never pass a
gradient back. torch is never imported here: a tensor's presence means it is loaded.
"""

from __future__ import annotations

import sys

from lstmc_runtime.errors import KernelArgumentError, argument_name

__all__ = ["as_numpy", "is_torch", "to_torch"]


def is_torch(a) -> bool:
    return type(a).__module__.partition(".")[0] == "torch" and isinstance(
        a, sys.modules["torch"].Tensor
    )


def as_numpy(name: str, a, dtype=None):
    """The NumPy view of a CPU float tensor `a` (anything else as it is), `name` being the
    argument as errors call it (x, state `h`, param `W_i`); `dtype` the kernel's, if any."""
    if not is_torch(a):
        return a
    torch = sys.modules["torch"]
    where = argument_name(name)
    if a.device.type != "cpu":
        raise KernelArgumentError(
            f"{where} is a torch tensor on {a.device}; a cpu kernel takes CPU tensors "
            "(`t.cpu()`), one compiled with target='cuda' takes CUDA ones"
        )
    if a.requires_grad and torch.is_grad_enabled():
        raise KernelArgumentError(
            f"{where} requires grad, and lstmc kernels have no backward pass: call the kernel "
            "under torch.no_grad() or torch.inference_mode(), or pass `t.detach()`"
        )
    if a.layout != torch.strided:
        raise KernelArgumentError(
            f"{where} is a {str(a.layout).removeprefix('torch.')} torch tensor; kernels take "
            "dense ones (`t.to_dense()`)"
        )
    kernel_dtype = None if dtype is None else str(getattr(dtype, "__name__", dtype))
    if kernel_dtype in ("float32", "float64") and a.dtype in (torch.float32, torch.float64):
        if str(a.dtype) != f"torch.{kernel_dtype}":  # the tensor's way to say it: .float()
            convert = ".float()" if kernel_dtype == "float32" else ".double()"
            other = str(a.dtype).removeprefix("torch.")
            raise KernelArgumentError(
                f"{where} is a {a.dtype} tensor but the kernel was compiled for "
                f"{kernel_dtype}; convert it (`t{convert}`) or compile with dtype='{other}'"
            )
    try:  # the lazy negation and conjugation bits resolved: numpy() refuses them
        return a.detach().resolve_conj().resolve_neg().numpy()
    except TypeError:  # a dtype NumPy lacks (bfloat16, ...); NumPy's are checked after
        want = f" (this kernel's: {dtype})" if dtype is not None else ""
        raise KernelArgumentError(
            f"{where} must be a float32 or float64 tensor{want}, got {a.dtype}"
        ) from None


def to_torch(a):
    """torch tensors sharing the memory of NumPy array `a`, or of each value of dict `a`."""
    from_numpy = sys.modules["torch"].from_numpy
    if isinstance(a, dict):
        return {name: from_numpy(v) for name, v in a.items()}
    return from_numpy(a)
