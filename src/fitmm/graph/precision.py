"""The parts of a computation that stay in fp32 when a training step runs under bf16 autocast."""

from __future__ import annotations

import functools

import torch

HALF_PRECISION = (torch.bfloat16, torch.float16)


def in_fp32(function):
    """Run ``function`` in fp32 or better: autocast off, its half-precision tensor arguments widened to
    float32 (float32 and float64 arguments are left as they are).

    Every loss term, the information-bottleneck terms and the Gram matrices of the spectral bands are
    marked with it, so that ``precision: bf16`` lowers only the matrix products that tolerate it.
    """

    @functools.wraps(function)
    def fp32(*args, **kwargs):
        device = next((arg.device.type for arg in args if isinstance(arg, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return function(*(arg.float() if isinstance(arg, torch.Tensor) and arg.dtype in HALF_PRECISION else arg
                              for arg in args), **kwargs)

    return fp32
