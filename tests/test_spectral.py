"""Band decomposition: exactness, orthogonality, energies, gradients against an SVD reference."""

import pytest
import torch

from fitmm.graph.spectral import (
    band_bases,
    band_energies,
    band_pieces,
    band_sizes,
    modality_grams,
    weighted_band_sum,
)


def modality_band_decompose(x: torch.Tensor, n_modalities: int, n_bands: int) -> torch.Tensor:
    """FITMM's decomposition of the rows of x: Gram matrices → bases → bands, as the model composes it."""
    return band_pieces(x, band_bases(modality_grams(x, n_modalities), n_bands), n_bands)


def band_decompose(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    return modality_band_decompose(x, 1, n_bands)


def svd_bands(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Reference bands U[:, G_k] Σ[G_k] V[:, G_k]ᵀ from a thin SVD."""
    left, singular, right_t = torch.linalg.svd(x, full_matrices=False)
    pieces, start = [], 0
    for size in band_sizes(x.shape[1], n_bands):
        stop = start + size
        pieces.append(left[:, start:stop] * singular[start:stop] @ right_t[start:stop])
        start = stop
    return torch.stack(pieces)


def random_matrix(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(
    ("d", "n_bands", "expected"),
    [(64, 3, [22, 21, 21]), (64, 4, [16, 16, 16, 16]), (10, 3, [4, 3, 3]), (5, 5, [1] * 5), (7, 1, [7])],
)
def test_band_sizes(d, n_bands, expected):
    assert band_sizes(d, n_bands) == expected


@pytest.mark.parametrize(("d", "n_bands"), [(4, 0), (4, 5)])
def test_band_sizes_rejects_impossible_requests(d, n_bands):
    with pytest.raises(ValueError):
        band_sizes(d, n_bands)


def test_bands_sum_to_input_and_are_orthogonal_on_both_sides():
    x = random_matrix(200, 16, seed=0).float()
    bands = band_decompose(x, 3)
    assert bands.shape == (3, 200, 16)
    assert bands.dtype == torch.float32
    torch.testing.assert_close(bands.sum(0), x, atol=1e-5, rtol=0)
    scale = x.square().sum()
    for j in range(3):
        for k in range(3):
            if j != k:
                assert (bands[j].T @ bands[k]).abs().max() < 1e-5 * scale
                assert (bands[j] @ bands[k].T).abs().max() < 1e-5 * scale


def test_energies_are_grouped_squared_singular_values():
    x = random_matrix(300, 24, seed=1)
    bands = modality_band_decompose(x, 2, 3)
    energies = band_energies(bands, 2)
    assert energies.shape == (3, 2)
    for m in range(2):
        squared = torch.linalg.svdvals(x[:, 12 * m : 12 * (m + 1)]).square()
        expected = torch.stack([chunk.sum() for chunk in squared.split(band_sizes(12, 3))])
        torch.testing.assert_close(energies[:, m], expected, rtol=1e-10, atol=1e-10)
    assert (energies[:-1] >= energies[1:]).all()


def test_forward_and_gradient_match_svd_reference():
    x = random_matrix(60, 12, seed=2)
    weights = random_matrix(3 * 60, 12, seed=3).view(3, 60, 12)

    ours = x.clone().requires_grad_()
    bands = band_decompose(ours, 3)
    (weights * bands).sum().backward()

    reference = x.clone().requires_grad_()
    expected = svd_bands(reference, 3)
    (weights * expected).sum().backward()

    torch.testing.assert_close(bands, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.grad, reference.grad, atol=1e-4, rtol=0)


def test_modality_bands_concatenate_each_blocks_bands():
    x = random_matrix(80, 3 * 8, seed=4)
    weights = random_matrix(2 * 80, 24, seed=5).view(2, 80, 24)

    ours = x.clone().requires_grad_()
    bands = modality_band_decompose(ours, 3, 2)
    (weights * bands).sum().backward()

    reference = x.clone().requires_grad_()
    expected = torch.cat([svd_bands(block, 2) for block in reference.split(8, dim=1)], dim=2)
    (weights * expected).sum().backward()

    torch.testing.assert_close(bands, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.grad, reference.grad, atol=1e-4, rtol=0)


def test_gradcheck_on_distinct_spectrum():
    x = random_matrix(10, 6, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: modality_band_decompose(t, 2, 2), (x,))


def test_gradient_is_exact_with_repeated_eigenvalues_inside_a_band():
    # Singular values (5, 5, 5, 2, 1, 1) in two bands {5, 5, 5} and {2, 1, 1}: the repeats sit
    # inside bands, the projectors are smooth, and the gradient must match finite differences.
    left, _ = torch.linalg.qr(random_matrix(10, 6, seed=7))
    right, _ = torch.linalg.qr(random_matrix(6, 6, seed=8))
    singular = torch.tensor([5.0, 5.0, 5.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    x = (left * singular @ right.T).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: band_decompose(t, 2), (x,))


def degenerate_matrix(case: str, generator: torch.Generator) -> torch.Tensor:
    if case == "duplicated_columns":
        base = torch.randn(40, 4, generator=generator)
        return torch.cat([base, base, base], dim=1)
    if case == "orthogonal_equal_norm_columns":
        return torch.eye(20)[:, :12] * 3.0
    if case == "rank_deficient":
        return torch.randn(40, 2, generator=generator) @ torch.randn(2, 12, generator=generator)
    if case == "wide":
        return torch.randn(5, 12, generator=generator)
    return torch.zeros(10, 12)


@pytest.mark.parametrize(
    "case",
    ["duplicated_columns", "orthogonal_equal_norm_columns", "rank_deficient", "wide", "zeros"],
)
@pytest.mark.parametrize("n_modalities", [1, 2])
def test_gradients_stay_finite_with_degenerate_spectra(case, n_modalities):
    generator = torch.Generator().manual_seed(9)
    x = degenerate_matrix(case, generator).requires_grad_()
    bands = modality_band_decompose(x, n_modalities, 3)
    torch.testing.assert_close(bands.sum(0), x.detach(), atol=1e-5, rtol=0)
    (torch.randn(bands.shape, generator=generator) * bands).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_rejects_uneven_modality_split():
    with pytest.raises(ValueError):
        modality_band_decompose(torch.randn(5, 10), 3, 2)


def test_bases_of_all_rows_give_any_rows_their_bands():
    x = random_matrix(80, 12, seed=7)
    full = modality_band_decompose(x, 2, 3)
    bases = band_bases(modality_grams(x, 2), 3)
    rows = torch.tensor([4, 0, 77, 4])
    torch.testing.assert_close(band_pieces(x[rows], bases, 3), full[:, rows], rtol=0, atol=1e-12)


@pytest.mark.parametrize("per_row", [False, True])
def test_weighted_band_sum_equals_the_weighted_bands(per_row):
    x = random_matrix(2 * 50 * 12, 1, seed=8).view(2, 50, 12)  # two matrices decomposed together
    bases = band_bases(modality_grams(x, 3), 2)
    weights = random_matrix(50, 2, seed=9) if per_row else torch.tensor([0.3, -2.0], dtype=torch.float64)
    bands = band_pieces(x, bases, 2)  # (2 bands, 2 matrices, 50, 12)
    expected = sum((weights[:, k:k + 1] if per_row else weights[k]) * bands[k] for k in range(2))
    torch.testing.assert_close(weighted_band_sum(x, bases, weights), expected, rtol=0, atol=1e-12)


def test_weighted_band_sum_gradcheck():
    x = random_matrix(30, 8, seed=10).requires_grad_()
    weights = torch.tensor([1.5, 0.25], dtype=torch.float64, requires_grad=True)

    def weighted(t, w):
        return weighted_band_sum(t, band_bases(modality_grams(t, 2), 2), w)

    assert torch.autograd.gradcheck(weighted, (x, weights))
