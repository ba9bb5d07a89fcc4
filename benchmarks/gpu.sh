#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: every model's epoch time and peak GPU memory at Clothing
# shapes (39,387 users × 23,033 items, 197,338 training pairs, random 4096-d image and 384-d text
# features made up for timing) in fp32 and bf16, then FITMM (authors preset) on ml100k trained to
# early stopping with its test recall@20. Installs nothing beyond the project (run it where
# `pip install -e .` has been done with a CUDA build of PyTorch); writes benchmarks/results/gpu.md and
# gpu.json, and prints the table. Budget: about 8 minutes on one H100/H200-class GPU.
#   bash benchmarks/gpu.sh [MODELS]          (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-mf,lightgcn,vbpr,lattice,freedom,bm3,mgcn,lgmrec,smore,fitmm}"
python="${PYTHON:-python}"
"$python" -c 'import torch' 2>/dev/null \
    || { echo "benchmarks/gpu.sh: $python cannot import torch (install the project first)" >&2; exit 2; }
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "benchmarks/gpu.sh: PyTorch sees no CUDA device here" >&2; exit 2; }
mkdir -p benchmarks/results
"$python" benchmarks/gpu_speed.py --models "$models" --out benchmarks/results/gpu.json --markdown benchmarks/results/gpu.md
cat benchmarks/results/gpu.md
