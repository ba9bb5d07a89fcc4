"""The two information-bottleneck terms of FITMM (FITMM.md §6).

1. ``gate_ib_surrogate`` — the authors' implementation, for parity with the published code.

2. The band-allocation term — this project's design, derived from the Gaussian information
   bottleneck, which does what the theory of §6 says: weak bands are shrunk, bands below a
   threshold are switched off exactly.

Derivation of the band-allocation term
--------------------------------------
Per band k, summarise the band by a scalar X (its score contribution) whose squared correlation
with the relevance target Y is ρ². Under the block-diagonal assumption of §6 the Gaussian IB
min I(X;T) − β·I(T;Y) splits into independent scalar problems, each over a Gaussian channel
T = a·X + ξ (ξ ~ N(0, 1), Var X = 1, gain a). With q = a²:

    I(X;T) = ½·log(1 + q),     I(T;Y) = ½·log((1 + q) / (1 + q·(1 − ρ²))).

Setting the derivative in q to zero gives q* = (β·ρ² − 1)/(1 − ρ²) when β·ρ² > 1, and q* = 0
otherwise (the derivative at q = 0 is ½·(1 − β·ρ²) ≥ 0): a band is shut off exactly when
β·ρ² ≤ 1. Reparametrise the channel by its Wiener fraction w = q/(1 + q) ∈ [0, 1), the share
of T's variance that comes from X. Then

    I(X;T) = −½·log(1 − w),    I(T;Y) = −½·log(1 − w·ρ²),
    w* = max(0, (β·ρ² − 1) / ((β − 1)·ρ²)) = max(0, 1 − 1/((β − 1)·SNR)),

using ρ² = SNR/(1 + SNR) for a band that is signal plus independent noise. w* is a Wiener-like
shrinkage: 0 below the threshold SNR ≤ 1/(β − 1), rising towards 1 as the SNR grows; with β ≤ 1
nothing is worth transmitting. A model gain g ∈ [0, G] (G = max_gain, e.g. 1 + s for FITMM's gate)
maps to w = g/G, so

- ``band_allocation_gains`` = G·w* (exact zeros below the threshold);
- ``band_capacity_penalty`` = I(X;T) = −½·log(1 − g/G): zero at g = 0, strictly increasing,
  unbounded as g → G. Under this normalisation the capacity depends on the transmitted
  fraction only; the SNR enters through the relevance term;
- ``band_ib_lagrangian`` = I(X;T) − β·I(T;Y), whose minimiser over g ∈ [0, G) is exactly
  ``band_allocation_gains``.

The SNR estimator (``band_snr``): ranking only depends on score *differences* between a user's
items, so band k is summarised by the paired difference d_k = s_k(u, i⁺) − s_k(u, i⁻) of its score
contributions on a positive and a sampled negative of the same user. SNR_k = μ²/σ², with μ the
mean and σ² the variance of d_k, is the (between-class separation)² over the within-pair noise.
The plug-in μ̂² overestimates μ² by σ²/B, which would give a band of pure noise an SNR of about
1/B; this bias is subtracted, so pure noise gets SNR 0 in most batches (whenever the mean
difference is below one standard error) and O(1/B) otherwise, far below the threshold 1/(β − 1)
for any reasonable β. Only separation in the scoring direction
counts (μ ≤ 0 gives SNR 0): the model adds band scores with non-negative gains, so a band that
ranks negatives above positives carries nothing it can use.

How to use it in the loss
-------------------------
Per side (users and items, added together), with Z_k the within-band components of §4 and the
batch's (u, i⁺, i⁻) triples::

    pos = (Z_user[:, u] * Z_item[:, i_pos]).sum(-1).T          # (B, M) band score contributions
    neg = (Z_user[:, u] * Z_item[:, i_neg]).sum(-1).T
    snr = band_snr(pos.detach(), neg.detach())                  # a statistic, not a path for gradients
    max_gain = (1 + s).detach()
    effective = omega * gate                                    # (n_nodes, M) gains the model applies
    loss_ib = band_ib_lagrangian(effective, snr, beta, max_gain).sum(-1).mean()
    gains = band_allocation_gains(snr, beta, max_gain)          # the optimum, for logging/masking

The SNR is detached: it is the band's measured usefulness at the current iterate, and the IB
problem optimises the channel (the gains), not the estimator — letting gradients reach it would
reward inflating one batch's separation, which is L_rec's job, and the estimate is noisy. The
Lagrangian's gradient pulls every effective gain towards the optimum and, for a band below the
threshold, is the capacity cost alone, pushing the gain towards 0. To make the shut-off exact in
the forward pass as well, multiply band k by (gains_k > 0) computed from a running (EMA) SNR.
All functions here broadcast: pass (M,) node-mean gains to regularise only the band allocation,
or (n_nodes, M) per-node gains to regularise every node's gate.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

_MAX_TRANSMITTED_FRACTION = 1.0 - 1e-6
"""Cap on g/G inside the logarithms: keeps the capacity finite when a gain reaches max_gain."""


def gate_ib_surrogate(
    gate: Tensor,
    alpha: float,
    mu: float,
    threshold: float,
    direction: Literal["positive", "dual"],
) -> Tensor:
    """The authors' IB surrogate on a gate matrix (n_nodes × M), a scalar.

    δ = gate − 1; "positive": δ ← max(δ, 0) and t = δ; "dual": t = |δ|.
    L = α·mean_nodes ‖δ‖² + μ·mean_nodes(‖δ‖ · Σ_k max(t_k − threshold, 0)).
    """
    if gate.dim() != 2:
        raise ValueError(f"gate must be (n_nodes × M), got shape {tuple(gate.shape)}")
    delta = gate - 1.0
    if direction == "positive":
        delta = delta.clamp_min(0.0)
        excess_input = delta
    elif direction == "dual":
        excess_input = delta.abs()
    else:
        raise ValueError(f"direction must be 'positive' or 'dual', got {direction!r}")
    norm = torch.linalg.vector_norm(delta, dim=1)
    excess = (excess_input - threshold).clamp_min(0.0).sum(dim=1)
    return alpha * delta.square().sum(dim=1).mean() + mu * (norm * excess).mean()


def band_snr(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Per-band signal-to-noise ratio (M,) from band score contributions on paired samples.

    ``pos_scores`` and ``neg_scores`` are (B × M): row b holds the band-wise score contributions
    of one user with a positive item and with that pair's sampled negative. With d = pos − neg,
    SNR_k = max(0, max(μ_k, 0)² − σ_k²/B) / σ_k² (μ, σ²: mean and unbiased variance of d_k over
    the batch); zero when d_k is identically 0.
    """
    if pos_scores.shape != neg_scores.shape or pos_scores.dim() != 2:
        shapes = f"{tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}"
        raise ValueError(f"pos_scores and neg_scores must both be (B × M), got {shapes}")
    batch = pos_scores.shape[0]
    if batch < 2:
        raise ValueError("band_snr needs at least two pairs")
    difference = pos_scores - neg_scores
    mean = difference.mean(dim=0)
    variance = difference.var(dim=0)
    signal = (mean.clamp_min(0.0).square() - variance / batch).clamp_min(0.0)
    return signal / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def band_allocation_gains(snr: Tensor, beta: float, max_gain: float | Tensor) -> Tensor:
    """The Gaussian-IB optimal per-band gains max_gain·max(0, 1 − 1/((β − 1)·SNR)).

    Exactly 0 for bands with (β − 1)·SNR ≤ 1, and for every band when β ≤ 1; below max_gain
    otherwise. Differentiable in ``snr`` where positive (callers normally pass a detached SNR).
    """
    if beta <= 1.0:
        return torch.zeros_like(snr)
    active = (beta - 1.0) * snr > 1.0
    safe_snr = torch.where(active, snr, torch.ones_like(snr))
    return torch.where(active, max_gain * (1.0 - 1.0 / ((beta - 1.0) * safe_snr)), 0.0)


def band_capacity_penalty(gains: Tensor, max_gain: float | Tensor) -> Tensor:
    """I(X;T) in nats of the channel that transmits a band with gain g: −½·log(1 − |g|/max_gain).

    Element-wise; 0 at g = 0 and strictly increasing in |g| (|g|/max_gain is capped just below 1).
    """
    fraction = (gains.abs() / max_gain).clamp_max(_MAX_TRANSMITTED_FRACTION)
    return -0.5 * torch.log1p(-fraction)


def band_ib_lagrangian(gains: Tensor, snr: Tensor, beta: float, max_gain: float | Tensor) -> Tensor:
    """Per-band IB objective I(X;T) − β·I(T;Y) at gain g, element-wise (gains and snr broadcast).

    I(T;Y) = −½·log(1 − (|g|/max_gain)·ρ²) with ρ² = SNR/(1 + SNR). Over g ∈ [0, max_gain) it is
    minimised exactly by ``band_allocation_gains(snr, beta, max_gain)``.
    """
    fraction = (gains.abs() / max_gain).clamp_max(_MAX_TRANSMITTED_FRACTION)
    squared_correlation = 1.0 - 1.0 / (1.0 + snr)
    relevance = -0.5 * torch.log1p(-fraction * squared_correlation)
    return band_capacity_penalty(gains, max_gain) - beta * relevance
