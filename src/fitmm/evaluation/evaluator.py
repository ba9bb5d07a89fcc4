"""Full ranking with exclusions, and batched full-ranking evaluation over all items.

Knows nothing of models: it ranks whatever scores a function returns. :func:`rank_excluding` is
the one place where a user's known items are removed before the top-k; the evaluator,
recommendations, exports and the HTTP server all rank through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.evaluation.metrics import CUTOFFS, ranking_metrics, top_k

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]


def excluded_splits(split: str, exclude_valid: bool) -> tuple[str, ...]:
    """The splits whose items are removed before ranking for ``split``: always the training items;
    also the validation items when ranking for test with ``exclude_valid`` (the protocol's rule)."""
    return ("train", "valid") if split == "test" and exclude_valid else ("train",)


@dataclass
class EvaluationResult:
    """Per-user metrics for the evaluated users (in ``users`` order) and their means."""

    users: np.ndarray
    per_user: dict[str, np.ndarray]

    def means(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_user.items()}


def _rows_and_columns(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in ``rows``, column) of every entry of those rows of a CSR matrix, read straight
    from its index arrays (no sub-matrix is built)."""
    starts, lengths = matrix.indptr[rows], np.diff(matrix.indptr)[rows]
    row_index = np.repeat(np.arange(len(rows)), lengths)
    entries = np.arange(int(lengths.sum())) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return torch.from_numpy(row_index), torch.from_numpy(matrix.indices[entries].astype(np.int64))


def rank_excluding(scores: torch.Tensor, rows: np.ndarray, exclude: Sequence[sp.csr_matrix],
                   k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``k`` columns of each row of ``scores`` after removing excluded items.

    ``scores`` (len(rows) × n) holds the scores of the users ``rows``; every item that user has in
    a matrix of ``exclude`` gets −∞ (in place) and is never returned as a ranked item. Ties rank the
    lower item ID first. Returns ``(items, values, lengths)``: (len(rows) × min(k, n)) item IDs and
    scores, best first, and per row how many leading entries are real recommendations (fewer than
    k where fewer items remain; the entries after them are excluded items and must be dropped).
    """
    for matrix in exclude:
        row_index, columns = _rows_and_columns(matrix, rows)
        scores[row_index, columns] = -torch.inf
    items = top_k(scores, k)
    values = scores.gather(1, items)
    return items, values, torch.isfinite(values).sum(dim=1)


def _membership(matrix: sp.csr_matrix, rows: np.ndarray, ranked: torch.Tensor) -> torch.Tensor:
    """Whether ``ranked[r, j]`` is among the columns of ``matrix`` row ``rows[r]`` (no dense mask)."""
    row_index, columns = _rows_and_columns(matrix, rows)
    n_columns = matrix.shape[1]
    known = torch.sort(row_index * n_columns + columns).values
    keys = torch.arange(len(rows)).unsqueeze(1) * n_columns + ranked
    position = torch.searchsorted(known, keys).clamp(max=max(len(known) - 1, 0))
    return known[position] == keys


def evaluate(
    score_users: ScoreFunction,
    users: np.ndarray,
    truth: sp.csr_matrix,
    exclude: Sequence[sp.csr_matrix],
    cutoffs: tuple[int, ...] = CUTOFFS,
    batch_size: int = 4096,
) -> EvaluationResult:
    """Rank all items for ``users`` and score the rankings against ``truth``.

    ``score_users(user_ids)`` returns a (len(user_ids) × n_items) score tensor. Items a user has in
    any matrix of ``exclude`` are removed before ranking. Users without truth must not be passed.
    """
    n_truth_all = np.diff(truth.indptr)
    if (n_truth_all[users] == 0).any():
        raise ValueError("evaluate() was given users with no truth items")
    per_user_batches: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = score_users(torch.from_numpy(batch)).detach().to("cpu", torch.float32).clone()
        if torch.isnan(scores).any():
            raise FloatingPointError("the model produced NaN scores; training has diverged")
        ranked, _, _ = rank_excluding(scores, batch, exclude, max(cutoffs))
        hits = _membership(truth, batch, ranked)
        per_user_batches.append(ranking_metrics(hits, torch.from_numpy(n_truth_all[batch]), cutoffs))
    names = per_user_batches[0].keys() if per_user_batches else []
    per_user = {name: torch.cat([b[name] for b in per_user_batches]).numpy() for name in names}
    return EvaluationResult(users=np.asarray(users), per_user=per_user)
