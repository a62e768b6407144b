"""The CUDA target's tests. They need numba.cuda in a mode chosen before Numba is imported, so
`tests/test_cuda.py` runs this directory in its own process: under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, tiny sizes) everywhere, and on the real device at realistic sizes where
there is one (LSTMC_CUDA_DEVICE_TESTS=1). In any other process this directory is skipped.
"""

import os
import sys
from pathlib import Path

import pytest

_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
_DEVICE = os.environ.get("LSTMC_CUDA_DEVICE_TESTS") == "1"

if not (_SIM or _DEVICE):
    collect_ignore_glob = ["test_*.py"]
else:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for strategies
    if _SIM:
        sys.setswitchinterval(1e-5)  # the simulator runs a Python thread per CUDA thread


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.cuda)
