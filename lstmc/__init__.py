"""lstmc: a compiler for recurrent neural-network cells.

cell = lstmc.load("lstm.yaml")            # or lstmc.builtin("gru")
kernel = lstmc.compile(cell, target="cpu")
params = kernel.init_params(input=32, hidden=64, seed=0)
y, state = kernel(x, params)
y_ref, state_ref = lstmc.interpret(cell, x, params)
cell, params = lstmc.from_torch(torch_lstm)   # a torch nn.LSTM / nn.GRU / nn.RNN's cell and params
"""

from lstmc.api import builtin, interpret, load, loads, to_ir
from lstmc.compiler import compile
from lstmc.errors import (
    CacheWarning,
    CodegenError,
    CudaUnavailableError,
    KernelArgumentError,
    LstmcError,
    PassError,
    SpecError,
    VerifyError,
)
from lstmc.torch_modules import from_torch

__version__ = "0.1.0"

__all__ = [
    "load",
    "loads",
    "builtin",
    "interpret",
    "to_ir",
    "compile",
    "from_torch",
    "LstmcError",
    "SpecError",
    "VerifyError",
    "PassError",
    "CodegenError",
    "KernelArgumentError",
    "CudaUnavailableError",
    "CacheWarning",
    "__version__",
]
