#!/usr/bin/env bash
# One session on a lent GPU machine, in the order that gives the most if it is cut short:
# what the machine is, a smoke check of the CUDA target (benchmarks/gpu_smoke.py), the benchmark
# against cuDNN (benchmarks/gpu.py) and the CUDA kernel tests at realistic sizes. Each stage has
# its own time limit (a persistent kernel that never passes its grid barrier would otherwise hang
# the rest) and its own log under $OUT; the end of each log is printed too.
#
#   OUT=/tmp/lstmc-gpu bash benchmarks/gpu_session.sh [smoke|bench|tests ...]
#
# The machine's own python3 (with torch, numba, numba-cuda) runs lstmc from this checkout: no
# install, the run-time package lstmc_runtime is runtime/ under another name. If that Numba's
# CUDA package can't import lstmc's CUDA run-time, wheels carried in .whl/ are tried instead.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lstmc-gpu}
mkdir -p "$OUT"
STAGES=${*:-smoke bench tests}

export PYTHONUNBUFFERED=1 LSTMC_CACHE_DIR=/tmp/lstmc-gpu-cache
links=/tmp/lstmc-gpu-path
mkdir -p "$links" && ln -sfn "$PWD/runtime" "$links/lstmc_runtime"
export PYTHONPATH="$PWD:$links${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total \
    --format=csv 2>&1
  python3 -c 'import sys, numpy, numba, torch; from numba import cuda;
import importlib.metadata as md
print(sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__,
      "numba-cuda", md.version("numba-cuda"), "torch", torch.__version__,
      "cuDNN", torch.backends.cudnn.version(), "cuda.is_available", cuda.is_available())' 2>&1
} | tee "$OUT/env.log"

if ! python3 -c 'import lstmc_runtime.cuda' >>"$OUT/env.log" 2>&1 && ls .whl/*.whl >/dev/null 2>&1
then
  echo "lstmc_runtime.cuda does not import with this numba-cuda; trying .whl/" | tee -a "$OUT/env.log"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/lstmc-site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH="/tmp/lstmc-site:$PYTHONPATH"
fi

stage() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)"
  tail -n "${TAIL:-30}" "$OUT/$name.log" | cut -c1-400
}

for s in $STAGES; do
  case $s in
    smoke) stage smoke "${SMOKE_S:-120}" python3 benchmarks/gpu_smoke.py ;;
    bench)
      stage bench "${BENCH_S:-200}" python3 benchmarks/gpu.py --json "$OUT/gpu.json"
      cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
      ;;
    tests)
      LSTMC_CUDA_DEVICE_TESTS=1 LSTMC_CUDA_EXAMPLES=${LSTMC_CUDA_EXAMPLES:-12} \
        stage tests "${TESTS_S:-200}" python3 -m pytest -q -p no:cacheprovider -o addopts= \
        -rfE --timeout=120 tests/cuda_kernels
      ;;
  esac
done
