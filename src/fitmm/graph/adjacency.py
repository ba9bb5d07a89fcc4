"""User–item graphs built from the training interactions, as sparse tensors, and propagation.

Nodes are numbered users first (0..U−1), then items (U..U+I−1).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.graph.precision import in_fp32


def scipy_to_torch(matrix: sp.spmatrix) -> torch.Tensor:
    """A SciPy sparse matrix as a float32 torch sparse CSR tensor (fast CPU and GPU products)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data),
            size=csr.shape,
            check_invariants=False,
        )


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """A torch sparse matrix (any layout) as a CSR tensor with sorted column indices."""
    coo = matrix.to_sparse_coo().coalesce() if matrix.layout != torch.sparse_coo else matrix.coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def sparse_transpose(matrix: torch.Tensor) -> torch.Tensor:
    """The transpose of a torch sparse matrix as CSR (for ``sparse_mm``'s backward)."""
    coo = matrix.to_sparse_coo().coalesce() if matrix.layout != torch.sparse_coo else matrix.coalesce()
    flipped = torch.sparse_coo_tensor(coo.indices().flip(0), coo.values(), coo.shape[::-1],
                                      check_invariants=False)
    return to_csr(flipped)


def bipartite_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """A = [[0, R], [Rᵀ, 0]] for the binary U×I training matrix R."""
    binary = sp.csr_matrix(train, dtype=np.float32)
    binary.data[:] = 1.0
    return sp.bmat([[None, binary], [binary.T, None]], format="csr", dtype=np.float32)


def _inverse_sqrt(values: np.ndarray) -> np.ndarray:
    """1/sqrt(v), with 0 where v is 0 (isolated nodes keep zero rows)."""
    out = np.zeros_like(values, dtype=np.float64)
    positive = values > 0
    out[positive] = 1.0 / np.sqrt(values[positive])
    return out


def symmetric_normalized(train: sp.spmatrix) -> sp.csr_matrix:
    """Â_sym = D^{-1/2} A D^{-1/2}: entries 1/sqrt(deg_u·deg_i), no self-loops, N×N."""
    adjacency = bipartite_adjacency(train)
    scale = sp.diags(_inverse_sqrt(np.asarray(adjacency.sum(axis=1)).ravel()))
    return sp.csr_matrix(scale @ adjacency @ scale, dtype=np.float32)


def row_normalized_with_self_loops(train: sp.spmatrix) -> sp.csr_matrix:
    """(D+I)^{-1}(A + I): row-normalised, with self-loops, N×N (LATTICE's user–item graph)."""
    adjacency = bipartite_adjacency(train) + sp.identity(sum(train.shape), dtype=np.float32, format="csr")
    scale = sp.diags(1.0 / np.asarray(adjacency.sum(axis=1)).ravel())
    return sp.csr_matrix(scale @ adjacency, dtype=np.float32)


def user_item_block(train: sp.spmatrix) -> sp.csr_matrix:
    """R̂, the user→item block of Â_sym (U×I): entries 1/sqrt(deg_u·deg_i)."""
    n_users = train.shape[0]
    return sp.csr_matrix(symmetric_normalized(train)[:n_users, n_users:])


class _SparseDenseProduct(torch.autograd.Function):
    """matrix @ dense with a backward that uses a precomputed transpose.

    PyTorch's own backward converts the sparse matrix's transpose to CSR (a sort of all its
    entries) on every call; graphs here are fixed, so their transpose is built once.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.transposed = transposed
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, torch.sparse.mm(ctx.transposed, grad)


@in_fp32
def sparse_mm(matrix: torch.Tensor, dense: torch.Tensor, transposed: torch.Tensor | None = None) -> torch.Tensor:
    """``matrix @ dense``, differentiable in ``dense``; ``transposed`` = matrixᵀ (None: symmetric).

    Always in fp32: there is no bf16 sparse product on the CPU, so under bf16 autocast a bf16
    ``dense`` is widened first."""
    return _SparseDenseProduct.apply(matrix, matrix if transposed is None else transposed, dense)


def propagate(adjacency: torch.Tensor, x: torch.Tensor, n_layers: int,
              transposed: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Layers X⁰ = x, X^{l+1} = Â X^l for l < n_layers; all n_layers + 1 of them.

    ``transposed`` is Âᵀ for a non-symmetric Â (None: Â is symmetric).
    """
    layers = [x]
    for _ in range(n_layers):
        layers.append(sparse_mm(adjacency, layers[-1], transposed))
    return layers


def layer_mean(adjacency: torch.Tensor, x: torch.Tensor, n_layers: int,
               transposed: torch.Tensor | None = None) -> torch.Tensor:
    """LightGCN's combination: the mean of layers 0..n_layers."""
    return _total(propagate(adjacency, x, n_layers, transposed)) / (n_layers + 1)


def layer_sum(adjacency: torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """The sum of layers 0..n_layers (FITMM's per-modality encoders)."""
    return _total(propagate(adjacency, x, n_layers))


def _total(layers: list[torch.Tensor]) -> torch.Tensor:
    """The sum of equally shaped tensors, added pairwise (stacking them first would copy them all)."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total
