"""FITMM's two information-bottleneck terms as modules the model holds (``docs/method.md`` §6).

- :class:`GateSurrogate`: the authors' implementation, a penalty on every node's gate.
- :class:`BandAllocation`: the paper's band allocation. It owns its statistics: over every epoch it
  accumulates each band's paired score differences d_k = s_k(u, i⁺) − s_k(u, i⁻), in total and per
  modality; at the epoch's end it turns them into the band's SNR (``fitmm.graph.bottleneck``,
  ``separation_snr``) at the chosen scale; during the next epoch the Gaussian-IB Lagrangian
  regularises the bands' effective gains with that SNR, and once the warm-up is over the bands
  whose SNR is at or below 1/(β − 1) are shut off exactly (the band with the largest SNR never is).
  The first epoch has no SNR yet: no penalty, every band open.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fitmm.graph.bottleneck import band_allocation_gains, band_ib_lagrangian, gate_ib_surrogate, separation_snr

SNR_SCALES = ("epoch", "pair")
"""``epoch``: the evidence over the epoch's pairs (the shut-off is one decision for all pairs);
``pair``: the per-pair SNR of the same statistics."""


class GateSurrogate(nn.Module):
    """The authors' IB surrogate on the user and item gates of every node."""

    def __init__(self, alpha: float, mu: float, threshold: float, direction: str) -> None:
        super().__init__()
        self.alpha, self.mu, self.threshold, self.direction = alpha, mu, threshold, direction

    def forward(self, user_gates: Tensor, item_gates: Tensor) -> Tensor:
        return sum(gate_ib_surrogate(gates, self.alpha, self.mu, self.threshold, self.direction)
                   for gates in (user_gates, item_gates))


class BandAllocation(nn.Module):
    """The band-allocation IB: per-band SNR over each epoch, the Lagrangian, and which bands are open."""

    def __init__(self, n_bands: int, n_modalities: int, beta: float, warmup_epochs: int, scale: str) -> None:
        super().__init__()
        if scale not in SNR_SCALES:
            raise ValueError(f"scale must be one of {SNR_SCALES}, got {scale!r}")
        self.beta, self.warmup_epochs, self.scale = beta, warmup_epochs, scale
        # per band: column 0 is the band's whole score, columns 1.. its modality blocks
        self.register_buffer("snr", torch.full((n_bands, 1 + n_modalities), float("nan"), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(n_bands, 1 + n_modalities, dtype=torch.float64))
        self.register_buffer("total_squares", torch.zeros(n_bands, 1 + n_modalities, dtype=torch.float64))
        self.register_buffer("open", torch.ones(n_bands))  # the shut-off mask of the current epoch
        self.penalising = False  # whether the current epoch has an SNR to penalise with (set per epoch)

    @property
    def measured(self) -> bool:
        """Whether an epoch's SNR exists (not during the first epoch)."""
        return bool(torch.isfinite(self.snr).all())

    def start_epoch(self, epoch: int) -> None:
        """Reset the statistics and fix this epoch's penalty and open bands (read once here, so that
        a training step never waits for the device)."""
        self.count.zero_()
        self.total.zero_()
        self.total_squares.zero_()
        self.penalising = self.measured
        self.open.fill_(1.0)
        if epoch >= self.warmup_epochs and self.penalising:
            snr = self.band_snr()
            is_open = band_allocation_gains(snr, self.beta, 1.0) > 0
            is_open[torch.argmax(snr)] = True  # never shut every band
            self.open.copy_(is_open)

    def observe(self, positive: Tensor, negative: Tensor) -> None:
        """Accumulate a batch's band score contributions, (B, M, modalities) for positives and their negatives."""
        with torch.no_grad():
            per_modality = (positive - negative).to(torch.float64)
            difference = torch.cat([per_modality.sum(dim=-1, keepdim=True), per_modality], dim=-1)
            self.count += difference.shape[0]
            self.total += difference.sum(dim=0)
            self.total_squares += difference.square().sum(dim=0)

    def end_epoch(self) -> None:
        """Turn the epoch's statistics into the SNR the next epoch uses (an epoch of < 2 pairs keeps the old)."""
        if self.count >= 2:
            pair_snr, evidence = separation_snr(self.count, self.total, self.total_squares)
            self.snr.copy_(evidence if self.scale == "epoch" else pair_snr)

    def band_snr(self) -> Tensor:
        """(M,) the SNR of each band's whole score."""
        return self.snr[:, 0]

    def forward(self, gains: list[tuple[Tensor, Tensor | float]]) -> Tensor:
        """The Lagrangian I(X;T) − β·I(T;Y) of every (effective gains (r, M), maximum gain) given, each
        summed over bands and averaged over rows; 0 before the first SNR exists."""
        if not self.penalising:
            return torch.zeros((), device=self.snr.device)
        snr = self.band_snr().to(torch.float32)
        return sum(band_ib_lagrangian(values, snr, self.beta, max_gain).sum(-1).mean() for values, max_gain in gains)

    def diagnostics(self, modalities: list[str]) -> dict:
        if not self.measured:
            return {}
        snr = self.band_snr()
        by_modality = {name: self.snr[:, 1 + index].tolist() for index, name in enumerate(modalities)}
        return {"band_snr": snr.tolist(), "band_snr_by_modality": by_modality,
                "band_gain": band_allocation_gains(snr, self.beta, 1.0).tolist()}
