"""Orthogonal spectral bands of representation matrices (``docs/method.md`` §3).

FITMM's decomposition, in the order it uses these functions on every training step:

1. ``modality_grams(x, m)`` — the d×d Gram matrix of each of the m modality blocks of the rows;
2. ``band_bases(grams, n_bands)`` — their eigenvectors (the right singular vectors), from one batched
   eigen-decomposition; the bases may come from all rows of a view;
3. ``band_pieces(x, bases, n_bands)`` — the bands of any rows of that view in those bases, or
   ``weighted_band_sum(x, bases, weights)`` — Σ_k w_k·band_k without forming the bands (scoring);
4. ``band_energies(bands, m)`` — each band's energy per modality (diagnostics).

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

from fitmm.graph.precision import in_fp32

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


@in_fp32
def modality_grams(x: Tensor, n_modalities: int) -> Tensor:
    """The d×d Gram matrix x_mᵀx_m of every modality block of ``x`` (…×n×D): (…, n_modalities, d, d)."""
    return _ModalityGrams.apply(x, _block_width(x, n_modalities))


def band_bases(grams: Tensor, n_bands: int, *, gap_eps: float = DEFAULT_GAP_EPS) -> Tensor:
    """Right singular vectors V (columns by descending singular value) from Gram matrices (…, d, d).

    Differentiable in ``grams`` for every use that depends on V only through the band projectors
    V_k V_kᵀ of ``n_bands`` contiguous groups (``band_sizes``), as ``band_pieces`` and
    ``weighted_band_sum`` do.
    """
    sizes = band_sizes(grams.shape[-1], n_bands)
    band_of_direction = torch.tensor([band for band, size in enumerate(sizes) for _ in range(size)],
                                     device=grams.device)
    return _SubspaceEigenvectors.apply(grams, band_of_direction, gap_eps)


def band_pieces(x: Tensor, bases: Tensor, n_bands: int) -> Tensor:
    """The bands of the rows of ``x`` (…×n×D) in the bases of ``band_bases``: (n_bands, …, n, D).

    ``bases`` is (…, m, d, d), one basis per modality block (it may come from other rows than
    ``x``: the bases of a whole matrix applied to a few of its rows give those rows' bands). Band k
    of block m is x_m V_k V_kᵀ, computed as the coefficients x_m V_k times V_kᵀ: 2·n·d² multiply-adds
    per block for all bands together.
    """
    blocks = _modality_blocks(x, bases.shape[-3])
    sizes = band_sizes(bases.shape[-1], n_bands)
    pieces = [(blocks @ basis) @ basis.mT for basis in bases.split(sizes, dim=-1)]
    return torch.stack([_from_blocks(piece) for piece in pieces])


def weighted_band_sum(x: Tensor, bases: Tensor, weights: Tensor) -> Tensor:
    """Σ_k w_k · band_k(x) without forming the bands: x_m V diag(w per direction) Vᵀ for every block.

    ``x`` is (…×n×D) and ``bases`` (…, m, d, d) as in ``band_pieces``; ``weights`` is (n_bands,)
    for weights shared by all rows or (n, n_bands) for one weight per row and band.
    """
    n_bands = weights.shape[-1]
    sizes = band_sizes(bases.shape[-1], n_bands)
    per_direction = torch.repeat_interleave(weights, torch.tensor(sizes, device=weights.device), dim=-1)
    blocks = _modality_blocks(x, bases.shape[-3])
    if weights.dim() == 2:
        per_direction = per_direction.unsqueeze(-3)  # the same row weights for every block
    return _from_blocks(((blocks @ bases) * per_direction) @ bases.mT)


def band_energies(bands: Tensor, n_modalities: int) -> Tensor:
    """Squared Frobenius norms ‖B_k(x_m)‖_F² as an (n_bands × n_modalities) tensor.

    ``bands`` is the output of ``band_pieces`` (n_bands × n × D) with the same ``n_modalities``; the
    energy of band k in modality m is the sum of that block's squared singular values in G_k.
    """
    n_bands, n_rows, _ = bands.shape
    per_block = bands.reshape(n_bands, n_rows, n_modalities, _block_width(bands, n_modalities))
    return per_block.square().sum(dim=(1, 3))


def _block_width(x: Tensor, n_modalities: int) -> int:
    """The width of each of the ``n_modalities`` equal column blocks of ``x`` (…×n×D), checking the shape."""
    if x.dim() < 2:
        raise ValueError(f"x must be a matrix or a batch of matrices, got shape {tuple(x.shape)}")
    width = x.shape[-1]
    if n_modalities < 1 or width % n_modalities:
        raise ValueError(f"{width} columns cannot be split into {n_modalities} equal modality blocks")
    return width // n_modalities


def _modality_blocks(x: Tensor, n_modalities: int) -> Tensor:
    """The columns of ``x`` (…×n×D) as ``n_modalities`` equal blocks: (…, n_modalities, n, D/n_modalities)."""
    return x.unflatten(-1, (n_modalities, _block_width(x, n_modalities))).movedim(-2, -3)


def _from_blocks(blocks: Tensor) -> Tensor:
    """Inverse of ``_modality_blocks``: (…, m, n, d) back to (…, n, m·d)."""
    return blocks.movedim(-3, -2).flatten(-2)


class _ModalityGrams(torch.autograd.Function):
    """x_mᵀx_m for every column block, each block read in place (no block-major copy of ``x``).

    The backward is one product per block, x_m (Ḡ_m + Ḡ_mᵀ), written straight into the columns of
    that block; autograd's generic rule for a block-major view takes two products and a transposing
    copy of the whole gradient, several times slower on tall matrices.
    """

    @staticmethod
    def forward(ctx, x: Tensor, block_width: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.block_width = block_width
        return torch.stack([block.mT @ block for block in x.split(block_width, dim=-1)], dim=-3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        symmetric = grad + grad.mT
        pieces = [block @ g for block, g in zip(x.split(ctx.block_width, dim=-1), symmetric.unbind(-3))]
        return torch.cat(pieces, dim=-1), None


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
