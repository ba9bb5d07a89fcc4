"""Content kNN graphs (item–item or user–user) and their fusions (docs/baselines.md §0, docs/method.md §2).

Graphs are built blockwise: the rows are L2-normalised once, each block of ``block_size`` rows is
multiplied with all rows (a block×n cosine-similarity slab), and the top-k columns of every row
are kept. No n×n dense matrix is ever formed. Graphs are returned as coalesced sparse COO
tensors (the fastest layout for ``torch.sparse.mm`` with a backward pass on CPU).

Conventions shared by every builder here:

- Top-k per **row**; the result is not symmetrised. A row normally contains itself (cosine 1).
- Ties are broken by column index: among columns with equal similarity the lower index is kept
  first, so the graph is a deterministic function of the computed similarities. (Placeholder
  content rows — e.g. every item without an image carrying the mean image vector — are exact
  ties of each other; with ``mask=None`` they select the lowest-indexed copies, themselves
  included only if they are among those.)
- A row of zeros has cosine similarity 0 with every row (and with itself).
- ``mask`` (bool, True = the row has real content): a masked row gets no content edges, only a
  self-loop of weight 1, and masked rows are never chosen as neighbours of real rows, whose k
  neighbours all come from the real rows. ``mask=None`` is the reference behaviour: every row is
  treated as content.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_graph(
    features: Tensor,
    k: int,
    *,
    mask: Tensor | None = None,
    weighting: Literal["binary", "cosine"],
    block_size: int = 2048,
) -> Tensor:
    """The normalised top-k cosine-similarity graph of the rows of ``features`` (n×f), n×n sparse.

    weighting="binary" (KNN-bin, FREEDOM/FITMM): kept entries are 1, normalised by
    1/sqrt(r_i·r_j) with r the row sums, so every kept value of a content row is 1/k.
    weighting="cosine" (KNN-w, LATTICE/MGCN/SMORE): kept entries are the cosine similarities
    w_ij, normalised w_ij/sqrt(r_i·r_j) with r the row sums of the weighted matrix (the column's
    "degree" is its own row sum). A non-positive row sum gives that node a factor 0.

    The values have the features' floating dtype (at least float32). ``block_size`` bounds the
    memory (a block_size×n slab) and does not change the result.
    """
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a 2-D float matrix, got {features.dtype} {tuple(features.shape)}")
    if weighting not in ("binary", "cosine"):
        raise ValueError(f"weighting must be 'binary' or 'cosine', got {weighting!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    n_rows = features.shape[0]
    if mask is None:
        content_rows = torch.arange(n_rows, device=features.device)
        content = features
    else:
        if mask.shape != (n_rows,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool vector of length {n_rows}")
        content_rows = mask.nonzero().squeeze(1)
        content = features[content_rows]
    if not 1 <= k <= content_rows.numel():
        raise ValueError(f"k must be between 1 and the {content_rows.numel()} content rows, got {k}")

    dtype = torch.promote_types(features.dtype, torch.float32)
    unit = F.normalize(content.to(dtype), dim=1)
    neighbours, sims = _blockwise_top_k(unit, unit, k, block_size)
    rows = content_rows.repeat_interleave(k)
    cols = content_rows[neighbours.flatten()]
    if weighting == "cosine":
        values = sims.flatten()
    else:
        values = torch.ones(rows.numel(), dtype=dtype, device=rows.device)

    if mask is not None:
        placeholders = (~mask).nonzero().squeeze(1)
        rows = torch.cat([rows, placeholders])
        cols = torch.cat([cols, placeholders])
        values = torch.cat([values, torch.ones(placeholders.numel(), dtype=dtype, device=values.device)])

    row_sums = torch.zeros(n_rows, dtype=dtype, device=values.device).index_add_(0, rows, values)
    scale = torch.where(row_sums > 0, row_sums.clamp_min(torch.finfo(dtype).tiny).rsqrt(), 0.0)
    values = scale[rows] * values * scale[cols]
    return _sparse(torch.stack([rows, cols]), values, (n_rows, n_rows))


def neighbour_mean_weights(
    queries: Tensor,
    candidates: Tensor,
    k: int,
    *,
    candidate_mask: Tensor,
    block_size: int = 2048,
) -> Tensor:
    """Averaging weights (queries × candidates, sparse) over each query's k most similar candidates.

    Row q holds 1/k on the k candidate rows of highest cosine similarity with query q (ties to
    the lower index, as in ``knn_graph``); candidates whose ``candidate_mask`` entry is False are
    never chosen. Multiplying these weights with per-candidate values gives each query the mean
    of its neighbours' values (how a new item borrows the representation of catalogue items).
    """
    if queries.dim() != 2 or candidates.dim() != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries and candidates must be 2-D with the same width, got "
                         f"{tuple(queries.shape)} and {tuple(candidates.shape)}")
    if queries.shape[0] == 0:
        raise ValueError("no query rows")
    if candidate_mask.shape != (candidates.shape[0],) or candidate_mask.dtype != torch.bool:
        raise ValueError(f"candidate_mask must be a bool vector of length {candidates.shape[0]}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    eligible = candidate_mask.nonzero().squeeze(1)
    if not 1 <= k <= eligible.numel():
        raise ValueError(f"k must be between 1 and the {eligible.numel()} eligible candidates, got {k}")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, candidates.dtype), torch.float32)
    unit_candidates = F.normalize(candidates[eligible].to(dtype), dim=1)
    neighbours, _ = _blockwise_top_k(F.normalize(queries.to(dtype), dim=1), unit_candidates, k, block_size)
    rows = torch.arange(queries.shape[0], device=queries.device).repeat_interleave(k)
    cols = eligible[neighbours.flatten()]
    values = torch.full((rows.numel(),), 1.0 / k, dtype=dtype, device=queries.device)
    return _sparse(torch.stack([rows, cols]), values, (queries.shape[0], candidates.shape[0]))


def _blockwise_top_k(unit_queries: Tensor, unit_candidates: Tensor, k: int, block_size: int) -> tuple[Tensor, Tensor]:
    """For each query row, its k most similar candidate rows (queries × k, ascending, ties to the
    lower index) and those similarities, one block_size×candidates slab of dot products at a time."""
    neighbours, sims = [], []
    for start in range(0, unit_queries.shape[0], block_size):
        slab = unit_queries[start : start + block_size] @ unit_candidates.T
        block_neighbours = _top_k_lowest_index_on_ties(slab, k)
        neighbours.append(block_neighbours)
        sims.append(slab.gather(1, block_neighbours))
    return torch.cat(neighbours), torch.cat(sims)


def _top_k_lowest_index_on_ties(slab: Tensor, k: int) -> Tensor:
    """Column indices (rows × k, ascending within a row) of the k largest entries of every row.

    Where the k-th and (k+1)-th largest values of a row are equal, the entries above that value
    are kept and the remaining places go to the entries equal to it, lowest column first.
    """
    n_cols = slab.shape[1]
    if k == n_cols:
        return torch.arange(n_cols, device=slab.device).expand(slab.shape[0], n_cols).clone()
    top_values, columns = slab.topk(k + 1, dim=1)
    columns = columns[:, :k].clone()
    ambiguous = (top_values[:, k - 1] == top_values[:, k]).nonzero().squeeze(1)
    if ambiguous.numel():
        rows = slab[ambiguous]
        kth_value = top_values[ambiguous, k - 1 : k]
        keep = rows > kth_value
        tied = rows == kth_value
        room = k - keep.sum(dim=1, keepdim=True)
        keep |= tied & (tied.cumsum(dim=1) <= room)
        columns[ambiguous] = keep.nonzero()[:, 1].view(-1, k)
    return columns.sort(dim=1).values


def mix_graphs(a: Tensor, b: Tensor, weight_a: float) -> Tensor:
    """weight_a·a + (1 − weight_a)·b for two sparse graphs of the same shape (coalesced COO)."""
    if a.shape != b.shape:
        raise ValueError(f"graphs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (_as_coo(a) * weight_a + _as_coo(b) * (1.0 - weight_a)).coalesce()


def max_pool_graphs(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise max of two sparse graphs over the union of their edges (SMORE's fusion).

    An edge present in only one graph keeps that graph's value (an absent edge counts as −∞);
    nothing is renormalised. Returns a coalesced COO tensor.
    """
    if a.shape != b.shape:
        raise ValueError(f"graphs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = _as_coo(a), _as_coo(b)
    n_cols = a.shape[1]
    indices = torch.cat([a.indices(), b.indices()], dim=1)
    values = torch.cat([a.values(), b.values()])
    keys, position = torch.unique(indices[0] * n_cols + indices[1], return_inverse=True)
    pooled = torch.empty(keys.numel(), dtype=values.dtype, device=values.device)
    pooled = pooled.scatter_reduce(0, position, values, reduce="amax", include_self=False)
    return _sparse(torch.stack([keys // n_cols, keys % n_cols]), pooled, tuple(a.shape))


def _as_coo(graph: Tensor) -> Tensor:
    """``graph`` as a coalesced sparse COO tensor (CSR and other sparse layouts are converted)."""
    if graph.layout != torch.sparse_coo:
        graph = graph.to_sparse_coo()
    return graph.coalesce()


def _sparse(indices: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A coalesced sparse COO tensor from (2×nnz) indices and values."""
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()
