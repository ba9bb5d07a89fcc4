"""Top-K selection with the protocol's tie rule, and the ranking metrics, vectorised over users."""

from __future__ import annotations

import torch

CUTOFFS = (5, 10, 20, 50)
METRICS = ("recall", "ndcg", "precision", "map", "hit")


def metric_name(metric: str, k: int) -> str:
    """The name of a metric at a cutoff, as results and tables use it: ``recall@20``."""
    return f"{metric}@{k}"


METRIC_NAMES = tuple(metric_name(metric, k) for metric in METRICS for k in CUTOFFS)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best items per row, best first; equal scores rank the lower item ID first.

    ``torch.topk`` alone does not fix which of several equal scores it keeps, nor their order.
    Where no tie straddles the k-th place its set is right; in the rows where one does (the
    (k+1)-th best score equals the k-th), the set is rebuilt: every item above the k-th value, plus
    the lowest-ID items equal to it until k are taken. Each set is then sorted stably by descending
    score from ascending item ID.
    """
    k = min(k, scores.shape[1])
    deeper = min(k + 1, scores.shape[1])
    values, indices = torch.topk(scores, deeper, dim=1)
    if deeper > k:
        straddling = values[:, k] == values[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
    else:
        straddling = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
    candidates = torch.sort(indices, dim=1).values
    threshold = values[:, -1:]
    n_equal_in_top = (values == threshold).sum(dim=1)
    if straddling.any():
        rows = straddling.nonzero().squeeze(1)
        tied_scores, tied_threshold = scores[rows], threshold[rows]
        equal = tied_scores == tied_threshold
        rank_among_equal = torch.cumsum(equal, dim=1, dtype=torch.int32)
        selected = (tied_scores > tied_threshold) | (
            equal & (rank_among_equal <= n_equal_in_top[rows].unsqueeze(1))
        )
        candidates[rows] = selected.nonzero()[:, 1].view(len(rows), k)  # ascending item ID per row
    order = torch.sort(scores.gather(1, candidates), dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order)


def ranking_metrics(
    hits: torch.Tensor, n_truth: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS
) -> dict[str, torch.Tensor]:
    """Per-user metrics from a (users × max cutoff) hit matrix of the ranked lists.

    ``hits[u, r]`` says whether the item at rank r+1 is in user u's truth; ``n_truth[u]`` is the
    size of that truth (> 0). Returns ``{"recall@K": tensor(users), ...}`` in float64.
    """
    hits = hits.to(torch.float64)
    n_truth = n_truth.to(torch.float64)
    depth = hits.shape[1]
    ranks = torch.arange(1, depth + 1, dtype=torch.float64, device=hits.device)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    cumulative_hits = torch.cumsum(hits, dim=1)
    dcg = torch.cumsum(hits * discounts, dim=1)
    ideal_ranks = torch.arange(1, max(cutoffs) + 1, dtype=torch.float64, device=hits.device)
    ideal_dcg = torch.cumsum(1.0 / torch.log2(ideal_ranks + 1.0), dim=0)
    precision_sum = torch.cumsum(hits * cumulative_hits / ranks, dim=1)
    out = {}
    for k in cutoffs:
        column = min(k, depth) - 1
        found = cumulative_hits[:, column]
        best_possible = torch.clamp(n_truth, max=k)
        out[metric_name("recall", k)] = found / n_truth
        out[metric_name("ndcg", k)] = dcg[:, column] / ideal_dcg[best_possible.long() - 1]
        out[metric_name("precision", k)] = found / k
        out[metric_name("map", k)] = precision_sum[:, column] / best_possible
        out[metric_name("hit", k)] = (found > 0).to(torch.float64)
    return out
