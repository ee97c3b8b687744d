#!/usr/bin/env bash
# GPU readiness (issue 28): ResNet-50 at 224 px and the speedrun recipe, cnnlab-train next to a plain loop
# (bf16 autocast, channels-last, torch.compile), GPU memory, input supply against consumption, and DDP over
# all visible GPUs into one MLflow run. Under 8 minutes on one GPU; benchmarks/gpu.py has the details.
#
#   benchmarks/gpu.sh                  # on a GPU machine (without a GPU: the CPU tiny mode)
#   benchmarks/gpu.sh --tiny           # the CPU tiny mode: a few small batches, DDP over 2 CPU processes (CI)
#   benchmarks/gpu.sh --workdir DIR    # keep the project copy, its outputs and its MLflow store in DIR
#
# PYTHON picks the interpreter (default: the project's .venv). The report is one JSON line a measurement;
# the exit status is non-zero when any measurement fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "gpu.sh: no Python at $python: run 'make setup' first, or set PYTHON=/path/to/python" >&2
    exit 2
fi
exec "$python" "$here/gpu.py" "$@"
