"""Information-bottleneck terms: the authors' surrogate and the band-allocation design."""

import math

import numpy as np
import pytest
import torch

from fitmm.graph.bottleneck import (
    band_allocation_gains,
    band_capacity_penalty,
    band_ib_lagrangian,
    gate_ib_surrogate,
    separation_snr,
)

GATE = torch.tensor([[1.5, 0.8, 1.0], [2.0, 1.2, 0.6]], dtype=torch.float64)


def test_surrogate_positive_direction_by_hand():
    # δ⁺ = [[0.5, 0, 0], [1.0, 0.2, 0]]; excesses over φ⁺ = 0.3: 0.2 and 0.7.
    expected = 1.0 * (0.25 + 1.04) / 2 + 2.0 * (0.5 * 0.2 + math.sqrt(1.04) * 0.7) / 2
    value = gate_ib_surrogate(GATE, alpha=1.0, mu=2.0, threshold=0.3, direction="positive")
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_surrogate_dual_direction_by_hand():
    # δ = [[0.5, −0.2, 0], [1.0, 0.2, −0.4]]; |δ| excesses over 0.3: 0.2 and 0.7 + 0.1.
    expected = 0.5 * (0.29 + 1.2) / 2 + 2.0 * (math.sqrt(0.29) * 0.2 + math.sqrt(1.2) * 0.8) / 2
    value = gate_ib_surrogate(GATE, alpha=0.5, mu=2.0, threshold=0.3, direction="dual")
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_surrogate_is_zero_with_finite_gradient_at_the_identity_gate():
    gate = torch.ones(4, 3, requires_grad=True)
    for direction in ("positive", "dual"):
        value = gate_ib_surrogate(gate, alpha=1.0, mu=1.0, threshold=0.0, direction=direction)
        value.backward()
        assert value.item() == 0.0
        assert torch.isfinite(gate.grad).all()
        gate.grad = None


def test_surrogate_rejects_unknown_direction():
    with pytest.raises(ValueError):
        gate_ib_surrogate(GATE, alpha=1.0, mu=1.0, threshold=0.0, direction="negative")


def snr_of(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    difference = pos - neg
    return separation_snr(difference.shape[0], difference.sum(0), difference.square().sum(0))


def test_separation_snr_by_hand():
    pos = torch.tensor([[1.0, 0.0, 4.0], [2.0, 0.0, 4.0], [3.0, 0.0, 4.0]])
    neg = torch.tensor([[0.0, 1.0, 4.0], [0.0, 2.0, 4.0], [0.0, 3.0, 4.0]])
    # Band 0: d = (1, 2, 3), mean 2, variance 1, t² = 3·4/1 = 12 → evidence 11, pair SNR 11/3.
    # Band 1 separates the wrong way. Band 2: d ≡ 0.
    pair, evidence = snr_of(pos, neg)
    torch.testing.assert_close(evidence, torch.tensor([11.0, 0.0, 0.0]))
    torch.testing.assert_close(pair, torch.tensor([11.0 / 3.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least two pairs"):
        snr_of(pos[:1], neg[:1])


def test_evidence_of_pure_noise_averages_near_zero_and_grows_with_pairs_for_signal():
    noise, signal = [], []
    for seed in range(200):
        generator = torch.Generator().manual_seed(seed)
        d = torch.randn(500, 2, generator=generator, dtype=torch.float64)
        d[:, 1] += 0.1
        _, evidence = separation_snr(500, d.sum(0), d.square().sum(0))
        noise.append(evidence[0].item())
        signal.append(evidence[1].item())
    assert np.mean(noise) < 1.0  # E[max(0, t² − 1)] ≈ 0.48 for t² ~ χ²₁
    assert np.mean(signal) == pytest.approx(500 * 0.01, rel=0.35)  # ≈ n·μ²/σ²


def simulated_band_scores(seed: int, batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Band 0 carries signal (positives score 0.5 higher), band 1 is pure noise, band 2 is weak."""
    generator = torch.Generator().manual_seed(seed)
    pos = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    neg = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    pos[:, 0] += 0.5
    pos[:, 2] += 0.05
    return pos, neg


@pytest.mark.parametrize("seed", range(10))
def test_pure_noise_band_is_shut_off_and_signal_band_is_kept(seed):
    pos, neg = simulated_band_scores(seed)
    snr, _ = snr_of(pos, neg)
    gains = band_allocation_gains(snr, beta=20.0, max_gain=1.5)
    assert gains[0] > 0.5
    assert gains[1] == 0.0
    assert gains[2] == 0.0  # SNR ≈ 0.00125 < 1/(β − 1)


def test_gains_are_exactly_zero_at_and_below_threshold_and_bounded():
    snr = torch.tensor([0.0, 0.05, 0.1, 0.1001, 1.0, 100.0, float("inf")], dtype=torch.float64)
    gains = band_allocation_gains(snr, beta=11.0, max_gain=2.0)
    assert gains[:3].eq(0).all()
    assert (gains[3:] > 0).all()
    assert (gains[3:].diff() > 0).all()
    assert gains[-1] == 2.0 and (gains[:-1] < 2.0).all()
    assert band_allocation_gains(snr, beta=1.0, max_gain=2.0).eq(0).all()


def test_gains_gradient_is_finite_at_zero_snr():
    snr = torch.tensor([0.0, 0.5], requires_grad=True)
    band_allocation_gains(snr, beta=5.0, max_gain=1.0).sum().backward()
    assert torch.isfinite(snr.grad).all()
    assert snr.grad[0] == 0.0 and snr.grad[1] > 0


def test_capacity_penalty_is_zero_at_zero_and_increases_with_gain():
    gains = torch.linspace(0.0, 1.4, 15, dtype=torch.float64)
    penalty = band_capacity_penalty(gains, max_gain=1.5)
    assert penalty[0] == 0.0
    assert (penalty.diff() > 0).all()
    assert torch.isfinite(band_capacity_penalty(torch.tensor([1.5]), max_gain=1.5)).all()


@pytest.mark.parametrize("snr", [0.01, 0.2, 1.0, 5.0])
@pytest.mark.parametrize("beta", [0.5, 3.0, 20.0])
def test_lagrangian_is_minimised_by_the_allocation_gains(snr, beta):
    max_gain = 1.5
    grid = torch.linspace(0.0, max_gain * 0.999, 20001, dtype=torch.float64)
    snr_tensor = torch.tensor(snr, dtype=torch.float64)
    objective = band_ib_lagrangian(grid, snr_tensor, beta, max_gain)
    best = grid[objective.argmin()]
    optimum = band_allocation_gains(snr_tensor, beta, max_gain)
    assert best.item() == pytest.approx(optimum.item(), abs=2e-3)


def test_lagrangian_gradient_pushes_a_noise_band_down_and_pulls_a_signal_band_to_its_optimum():
    snr = torch.tensor([0.0, 2.0], dtype=torch.float64)
    optimum = band_allocation_gains(snr, beta=4.0, max_gain=1.0)
    for start in (0.2, 0.95):
        gains = torch.full((2,), start, dtype=torch.float64, requires_grad=True)
        band_ib_lagrangian(gains, snr, beta=4.0, max_gain=1.0).sum().backward()
        assert gains.grad[0] > 0
        assert torch.sign(gains.grad[1]) == torch.sign(gains.detach()[1] - optimum[1])
