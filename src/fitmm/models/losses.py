"""Loss terms shared by several models (see BASELINES.md §0 for the conventions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """−mean log σ(s⁺ − s⁻), computed stably with logsigmoid."""
    return -F.logsigmoid(positive_scores - negative_scores).mean()


def bpr_loss_eps(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """−mean log(1e-10 + σ(s⁺ − s⁻)): the form BPR-MF, LightGCN and VBPR use in the reference."""
    return -torch.log(1e-10 + torch.sigmoid(positive_scores - negative_scores)).mean()


def plain_norms(*tensors: torch.Tensor, divisor: float) -> torch.Tensor:
    """PN: the sum of the (unsquared) Frobenius norms of the tensors, divided by ``divisor``."""
    return sum(torch.linalg.norm(t) for t in tensors) / divisor


REFERENCE_BATCH_SIZE = 2048
"""HS divisor of LATTICE, MGCN and SMORE: their references divide by the configured batch size, 2048
in every published run. It stays 2048 when ``batch_size`` is changed here (a model does not see the
training settings), so ``reg_weight`` keeps the meaning of the published values."""


def half_squares(*tensors: torch.Tensor, divisor: float) -> torch.Tensor:
    """HS: ½ Σ ‖X‖_F², divided by ``divisor`` (the configured batch size in the references)."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / divisor


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE: row b of x against row b of y, the other rows of y are the negatives."""
    x = F.normalize(x, dim=1) / temperature  # scaling the rows is cheaper than the batch × batch logits
    y = F.normalize(y, dim=1)
    logits = x @ y.T
    return F.cross_entropy(logits, torch.arange(x.shape[0], device=x.device))
