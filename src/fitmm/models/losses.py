"""Loss terms shared by several models (see docs/baselines.md §0 for the conventions).

Every loss term here, and every model's own, is marked ``in_fp32`` (``fitmm.graph.precision``): it
computes in float32 with autocast off, whatever precision its inputs were computed in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitmm.graph.precision import in_fp32


@in_fp32
def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """−mean log σ(s⁺ − s⁻), computed stably with logsigmoid."""
    return -F.logsigmoid(positive_scores - negative_scores).mean()


@in_fp32
def bpr_loss_eps(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """−mean log(1e-10 + σ(s⁺ − s⁻)): the form BPR-MF, LightGCN and VBPR use in the reference."""
    return -torch.log(1e-10 + torch.sigmoid(positive_scores - negative_scores)).mean()


@in_fp32
def plain_norms(*tensors: torch.Tensor, divisor: float) -> torch.Tensor:
    """PN: the sum of the (unsquared) Frobenius norms of the tensors, divided by ``divisor``."""
    return sum(torch.linalg.norm(t) for t in tensors) / divisor


REFERENCE_BATCH_SIZE = 2048
"""HS divisor of LATTICE, MGCN and SMORE: their references divide by the configured batch size, 2048
in every published run. It stays 2048 when ``batch_size`` is changed here (a model does not see the
training settings), so ``reg_weight`` keeps the meaning of the published values."""


@in_fp32
def half_squares(*tensors: torch.Tensor, divisor: float) -> torch.Tensor:
    """HS: ½ Σ ‖X‖_F², divided by ``divisor`` (the configured batch size in the references)."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / divisor


@in_fp32
def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE: row b of x against row b of y, the other rows of y are the negatives."""
    x = F.normalize(x, dim=1) / temperature  # scaling the rows is cheaper than the batch × batch logits
    y = F.normalize(y, dim=1)
    logits = x @ y.T
    return F.cross_entropy(logits, torch.arange(x.shape[0], device=x.device))


EXP_FLOOR = -80.0
"""Arguments of exp in ``batch_uniformity``'s log-sum-exp are floored here. Below about −87 float32
exp underflows, and PyTorch's vectorised CPU exp takes a path some 70× slower for such arguments; a
term e^−80 next to the row's largest term (1) is below float32 resolution, so the floor changes
neither the value nor the gradient at float32 precision."""


class _BatchUniformity(torch.autograd.Function):
    """The uniformity term of a batch given as its distinct rows Z and their counts c.

    With S = Z Zᵀ, N = Σc and P the count-weighted row softmax P_ab = c_b e^{S_ab} / Σ_b' c_b' e^{S_ab'},
    the value is Σ_a c_a [log Σ_b c_b e^{S_ab} − Σ_b c_b S_ab / N] / N. Its gradient is
    dL/dZ = [c ∘ (P Z) + Pᵀ (c ∘ Z) − 2 c (cᵀZ) / N] / N: two r×r products and no r×r pass in the
    backward, where the composed autograd graph keeps a dozen r×r temporaries.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        batch = counts.sum()
        mean_similarity = z @ (counts @ z) / batch
        weighted = (z @ z.T).add_(counts.log())
        peak = weighted.amax(dim=1, keepdim=True)
        softmax = weighted.sub_(peak).clamp_min_(EXP_FLOOR).exp_()
        totals = softmax.sum(dim=1, keepdim=True)
        softmax.div_(totals)
        ctx.save_for_backward(z, counts, softmax)
        log_partition = (peak + totals.log()).squeeze(1)
        return ((log_partition - mean_similarity) * counts).sum() / batch

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, counts, softmax = ctx.saved_tensors
        batch = counts.sum()
        column = counts.unsqueeze(1)
        gradient = (softmax @ z).mul_(column).add_(softmax.T @ (column * z))
        gradient.sub_(column * (counts @ z) * (2 / batch))
        return gradient.mul_(grad / batch), None


@in_fp32
def batch_uniformity(rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the row-softmax of Z Zᵀ (temperature 1) against the uniform target.

    The batch is given as its distinct ``rows`` and their ``counts``: duplicates are computed once
    and weighted, which gives exactly mean_b [logsumexp_b'(z_b·z_b') − mean_b'(z_b·z_b')] over the
    batch with its duplicates (FITMM's uniformity term on a band).
    """
    return _BatchUniformity.apply(rows, counts.to(rows.dtype))
