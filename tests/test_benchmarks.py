"""The GPU benchmark, checked where this machine can: it refuses without CUDA, and runs on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_says_in_one_line_when_there_is_no_cuda_device():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the whole benchmark")
    completed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True,
                               env={**os.environ, "PYTHON": sys.executable})
    assert completed.returncode == 2 and completed.stderr.strip() == "benchmarks/gpu.sh: PyTorch sees no CUDA device here"


def test_gpu_script_says_in_one_line_when_its_python_lacks_torch(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    completed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True,
                               env={**os.environ, "PYTHON": str(python)})
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"benchmarks/gpu.sh: {python} cannot import torch (install the project first)"


def test_gpu_speed_runs_every_step_on_the_cpu_at_a_small_scale(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--device", "cpu", "--models", "lightgcn,fitmm",
         "--precisions", "fp32", "--scale", "0.01", "--warmup-batches", "0", "--max-batches", "1",
         "--fitmm-epochs", "1", "--out", str(tmp_path / "gpu.json"), "--markdown", str(tmp_path / "gpu.md")],
        capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [(row["model"], row["precision"]) for row in report["epochs"]] == [("lightgcn", "fp32"), ("fitmm", "fp32")]
    assert all(row["epoch_seconds"] > 0 for row in report["epochs"]) and report["fitmm_ml100k"]["epochs_run"] == 1
    assert "| fitmm |" in (tmp_path / "gpu.md").read_text()
