#!/usr/bin/env bash
# The checks that need a CUDA device, in one run (`make gpu-check` on a machine with an NVIDIA
# GPU, after `make install-test`): what the device is; the tests marked gpu; the unit tests with
# the device present (they must pass on a GPU machine as on a CPU one; learner.device auto takes
# CUDA there for large models); the embedded main job on the GPU (learner.device cuda); the
# CPU-against-CUDA throughput benchmark (benchmarks/gpu_throughput.py).
#
#   scripts/gpu-check.sh [OUT_DIR]    # default gpu-check-output/; one log, the demo's plot and
#                                     # gpu_throughput.{md,json,png} land there
#
# GPU_CHECK_SKIP_INSTALL=1 leaves the installed package as it is (else: pip install -e . without
# dependencies, which also builds the compiled CPU kernels). Exit status: the number of steps
# that failed. Without a CUDA device it stops at once with status 2.
set -uo pipefail
out=${1:-gpu-check-output}
python=${PYTHON:-python3}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1

failed=0
step() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "== $name: ok ($((SECONDS - start)) s)"
    else
        echo "== $name: FAILED ($((SECONDS - start)) s)"
        failed=$((failed + 1))
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$python" -c 'import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
sys.exit(not torch.cuda.is_available())' || { echo "no CUDA device: nothing to check"; exit 2; }

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]; then
    step install "$python" -m pip install -q --no-deps --no-build-isolation -e .
fi
step gpu-tests "$python" -m pytest -p no:cacheprovider -v -m gpu tests/unit
step demo env STREAMLEARN_LEARNER__DEVICE=cuda "$python" -m streamlearn demo --out "$out"
# cpu-torch (torch ops on one thread) is a CPU-side comparison: left out of the lent GPU's time
step throughput "$python" benchmarks/gpu_throughput.py --out "$out" --no-progress \
    --compute cpu cpu-compiled cpu-threads cuda
step unit-tests "$python" -m pytest -p no:cacheprovider -q -m "not gpu" tests/unit streamlearn
echo "== $failed step(s) failed"
exit "$failed"
