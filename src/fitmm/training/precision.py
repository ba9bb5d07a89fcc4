"""The ``precision`` setting: fp32, or bf16 matrix products where the hardware computes bf16 natively.

With ``precision: bf16`` the training step runs under ``torch.autocast`` with bfloat16: the dense
matrix products (content projections, band projections, the gate, attention and predictor layers,
the batch × batch products of the uniformity and contrastive terms) compute in bf16 with fp32
accumulation. What stays fp32: the parameters and the optimiser state (Adam's moments), the
Gram matrices and their eigen-decomposition (``fitmm.graph.spectral``), every loss
(``fitmm.models.losses`` casts its inputs), the information-bottleneck statistics, and the sparse
propagations over the user–item and item–item graphs on the CPU (PyTorch has no bf16 sparse
product there; on a GPU they follow autocast). Scoring for evaluation, recommendations and exports
stays fp32 (``TrainedRun`` and the evaluator never autocast): bf16 scores reorder near-ties and
move full-ranking metrics by more than 1e-4.

Native bf16 means AVX-512 BF16 or AMX on an x86 CPU (read from ``/proc/cpuinfo``), or a GPU with
bf16 tensor cores (CUDA compute capability 8.0 or later, or ROCm); elsewhere bf16 would be emulated
and slower, so it is refused.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch

from fitmm.errors import InputError

PRECISIONS = ("fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=None)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 instruction sets this CPU reports (Linux's ``/proc/cpuinfo``; none elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)


def cuda_bf16_native() -> bool:
    """Whether the current GPU has bf16 tensor cores. ``torch.cuda.is_bf16_supported()`` is not the test:
    by default it also says yes where bf16 is only emulated (compute capability below 8.0)."""
    if not torch.cuda.is_available():
        return False
    return torch.version.hip is not None or torch.cuda.get_device_capability()[0] >= 8


def check_precision(precision: str, device: str) -> None:
    """Refuse bf16 in one line where ``device`` has no native bf16."""
    if precision != "bf16":
        return
    if device == "cuda":
        if not cuda_bf16_native():
            raise InputError("setting precision='bf16': this GPU has no native bf16; use precision=fp32")
    elif not cpu_bf16_flags():
        raise InputError("setting precision='bf16': this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 "
                         "would run slower than fp32; use precision=fp32")


def autocast(precision: str, device: str):
    """The context a training step runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()
