"""Device-agnostic code: what a training step and scoring create lives on the model's device.

Run on the CPU with PyTorch's default device set to ``meta``: a tensor made without naming a
device lands on ``meta`` and breaks the step, so every model's step, epoch hooks and scorer must
create their tensors on the device of the data they work on (on a GPU, the same code then makes
no host round trip to build them).
"""

from __future__ import annotations

import pytest
import torch

from fitmm.data import load_dataset
from fitmm.models import MODELS
from fitmm.training.runs import build_model
from fitmm.training.settings import resolve_settings

CASES = [(name, {}) for name in sorted(MODELS)] + [("fitmm", {"preset": "paper", "ib_warmup_epochs": 0})]


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml100k")


@pytest.mark.parametrize(("name", "settings"), CASES, ids=lambda case: str(case))
def test_step_hooks_and_scoring_create_nothing_off_the_models_device(ml100k, name, settings):
    model = build_model(resolve_settings(name, overrides=settings), ml100k)
    generator = torch.Generator().manual_seed(0)
    users, positives, negatives = (torch.randint(0, size, (64,), generator=generator)
                                   for size in (ml100k.n_users, ml100k.n_items, ml100k.n_items))
    with torch.device("meta"):
        for epoch in range(2):  # a second epoch uses what the first measured (e.g. FITMM's band SNR)
            model.on_epoch_start(epoch)
            model.train()
            if model.trainable:
                model.loss(users, positives, negatives if model.uses_negatives else None)["loss"].backward()
            model.on_epoch_end(epoch)
        model.eval()
        with torch.no_grad():
            scores = model.scorer()(torch.arange(5, device="cpu"))
    assert scores.device.type == "cpu" and scores.shape == (5, ml100k.n_items)
