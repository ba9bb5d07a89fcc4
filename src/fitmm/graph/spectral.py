"""Orthogonal spectral bands of representation matrices (FITMM.md §3).

For a block R (n×d) with thin SVD R = U Σ Vᵀ (singular values descending), the d singular
directions are split into contiguous groups G_1..G_M (``band_sizes``) and band k is

    B_k(R) = U[:, G_k] Σ[G_k] V[:, G_k]ᵀ = R · V[:, G_k] V[:, G_k]ᵀ = R · P_k .

V and Σ² are the eigenvectors and eigenvalues of the d×d Gram matrix RᵀR, so no n×d SVD is ever
formed: the cost is one Gram product, one product with V and one back-projection, each n·d²
multiply-adds per modality, plus a d×d eigen-decomposition (done in float64; it is tiny).

Gradients flow through the eigenvectors by a custom backward. For a symmetric matrix
G = V Λ Vᵀ the first-order change of eigenvector j is dv_j = Σ_{i≠j} v_i (v_iᵀ dG v_j)/(λ_j − λ_i),
which gives the adjoint Ḡ = V (F ∘ VᵀV̄) Vᵀ with F_ij = 1/(λ_j − λ_i). The bands only use V through
the projectors P_k, which depend on eigen-*subspaces*: for i and j in the same band the two
terms (i, j) and (j, i) of dP_k cancel exactly, so F is set to 0 inside a band. This makes the
gradient exact even when eigenvalues repeat inside a band. Only pairs in different bands keep
1/(λ_j − λ_i); there a near-degeneracy makes the bands themselves ill-defined, and the factor is
replaced by the bounded Lorentzian Δ/(Δ² + ε²), Δ = λ_j − λ_i, ε = ``gap_eps``·max|λ| (relative
error (ε/Δ)² for well-separated eigenvalues, at most 1/(2ε) when they meet, never NaN or Inf).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_GAP_EPS = 1e-6
"""Relative eigenvalue gap below which cross-band eigenvector derivatives are damped."""


def band_sizes(d: int, n_bands: int) -> list[int]:
    """Sizes of the ``n_bands`` contiguous singular-direction groups of a width-``d`` block.

    As equal as possible, larger groups first: ``band_sizes(64, 3) == [22, 21, 21]``.
    """
    if not 1 <= n_bands <= d:
        raise ValueError(f"n_bands must be between 1 and d={d}, got {n_bands}")
    base, extra = divmod(d, n_bands)
    return [base + 1 if k < extra else base for k in range(n_bands)]


class _SubspaceEigenvectors(torch.autograd.Function):
    """Eigenvectors of a batch of symmetric matrices, eigenvalues descending.

    The backward is valid for any downstream use that depends on the eigenvectors only through
    the band projectors V_k V_kᵀ (it drops the within-band terms, see the module docstring).
    """

    @staticmethod
    def forward(ctx, gram: Tensor, band_of_direction: Tensor, gap_eps: float) -> Tensor:
        gram64 = gram.to(torch.float64)
        eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (gram64 + gram64.mT))
        eigenvalues = eigenvalues.flip(-1)
        eigenvectors = eigenvectors.flip(-1)
        ctx.save_for_backward(eigenvalues, eigenvectors, band_of_direction)
        ctx.gap_eps = gap_eps
        return eigenvectors.to(gram.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_eigenvectors: Tensor) -> tuple[Tensor, None, None]:
        eigenvalues, eigenvectors, band_of_direction = ctx.saved_tensors
        gap = eigenvalues.unsqueeze(-2) - eigenvalues.unsqueeze(-1)  # gap[..., i, j] = λ_j − λ_i
        eps = ctx.gap_eps * eigenvalues.abs().amax(-1, keepdim=True).unsqueeze(-1)
        denominator = gap.square() + eps.square()
        same_band = band_of_direction.unsqueeze(1) == band_of_direction.unsqueeze(0)
        factor = torch.where(same_band | (denominator == 0), 0.0, gap / denominator)
        inner = eigenvectors.mT @ grad_eigenvectors.to(torch.float64)
        grad_gram = eigenvectors @ (factor * inner) @ eigenvectors.mT
        grad_gram = 0.5 * (grad_gram + grad_gram.mT)
        return grad_gram.to(grad_eigenvectors.dtype), None, None


def modality_band_decompose(
    x: Tensor, n_modalities: int, n_bands: int, *, gap_eps: float = DEFAULT_GAP_EPS
) -> Tensor:
    """Split the columns of ``x`` (…×n×D) into ``n_modalities`` equal blocks and band-decompose each.

    Returns a tensor of shape (n_bands, …, n, D) whose band k is the concatenation of every block's
    band-k piece [B_k(x_1) | B_k(x_2) | …]; band 1 (index 0) holds each block's largest singular
    values. The bands sum to ``x`` and are mutually orthogonal within every block, on both sides.
    Leading dimensions of ``x`` are independent matrices, decomposed together: all their blocks
    share one batched eigen-decomposition, and all bands come from one batched product with the
    stacked band projectors P_k = V_k V_kᵀ. Differentiable in ``x``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be a matrix or a batch of matrices, got shape {tuple(x.shape)}")
    *batch, n_rows, width = x.shape
    if n_modalities < 1 or width % n_modalities:
        raise ValueError(f"{width} columns cannot be split into {n_modalities} equal modality blocks")
    block_width = width // n_modalities
    sizes = band_sizes(block_width, n_bands)
    band_of_direction = torch.repeat_interleave(torch.arange(n_bands), torch.tensor(sizes)).to(x.device)

    blocks = x.reshape(*batch, n_rows, n_modalities, block_width).movedim(-2, -3)  # (…, m, n, d)
    eigenvectors = _SubspaceEigenvectors.apply(blocks.mT @ blocks, band_of_direction, gap_eps)
    projectors = torch.cat(
        [basis @ basis.mT for basis in eigenvectors.split(sizes, dim=-1)], dim=-1
    )  # (…, m, d, M·d): [P_1 | … | P_M]
    pieces = (blocks @ projectors).unflatten(-1, (n_bands, block_width))  # (…, m, n, M, d)
    return pieces.movedim(-2, 0).movedim(-3, -2).reshape(n_bands, *batch, n_rows, width)


def band_decompose(x: Tensor, n_bands: int, *, gap_eps: float = DEFAULT_GAP_EPS) -> Tensor:
    """Bands B_1..B_M of one block ``x`` (n×d) as a (n_bands, n, d) tensor; Σ_k B_k = x."""
    return modality_band_decompose(x, 1, n_bands, gap_eps=gap_eps)


def band_energies(bands: Tensor, n_modalities: int) -> Tensor:
    """Squared Frobenius norms ‖B_k(x_m)‖_F² as an (n_bands × n_modalities) tensor.

    ``bands`` is the output of ``modality_band_decompose`` with the same ``n_modalities``; the
    energy of band k in modality m is the sum of that block's squared singular values in G_k.
    """
    n_bands, n_rows, width = bands.shape
    if n_modalities < 1 or width % n_modalities:
        raise ValueError(f"{width} columns cannot be split into {n_modalities} equal modality blocks")
    per_block = bands.reshape(n_bands, n_rows, n_modalities, width // n_modalities)
    return per_block.square().sum(dim=(1, 3))
