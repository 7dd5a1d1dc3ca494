#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on the device tool's bare GPU machine: install what it
# lacks, put the clips where the tests look, write results under $OUT.
#   bash benchmarks/gpu_run.sh pytest,builtin      (then: bash benchmarks/gpu_run.sh diffusers)
# Carried beside the checkout (both in .git/info/exclude; README, "Tests and benchmarks"):
#   .whl/    Python 3.12 wheels of av, mss, diffusers, typer and its pydantic
#   .media/  a copy of ../shared/media
set -euo pipefail
parts="${1:-pytest,builtin,diffusers}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
if [ ! -e ../shared/media ]; then
    { mkdir -p ../shared && cp -r .media ../shared/media; } || echo "warning: no ../shared/media" >&2
fi
out="${OUT:-.}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia_smi.csv" || true
python3 benchmarks/gpu_check.py --parts "$parts" --out "$out/gpu_check_${parts//,/_}.jsonl" "${@:2}"
