"""The vectorised evaluator against a plain-Python brute force, on random scores with many ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitmm.evaluation import CUTOFFS, evaluate, top_k


def brute_force(scores: np.ndarray, truth: list[set[int]], excluded: list[set[int]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row, (relevant, seen) in enumerate(zip(truth, excluded)):
        candidates = [(-math.inf if i in seen else float(scores[row, i]), i) for i in range(scores.shape[1])]
        ranking = [i for _, i in sorted(candidates, key=lambda pair: (-pair[0], pair[1]))]
        for k in CUTOFFS:
            top = ranking[:k]
            hit_ranks = [r for r, item in enumerate(top, start=1) if item in relevant]
            n = len(hit_ranks)
            dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
            precisions = [sum(1 for x in hit_ranks if x <= r) / r for r in hit_ranks]
            values = {
                "recall": n / len(relevant),
                "ndcg": dcg / idcg,
                "precision": n / k,
                "map": sum(precisions) / min(len(relevant), k),
                "hit": float(n > 0),
            }
            for name, value in values.items():
                out.setdefault(f"{name}@{k}", []).append(value)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluator_equals_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 90
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float32)  # heavy ties
    train = sp.random(n_users, n_items, density=0.15, format="csr", random_state=seed)
    train.data[:] = 1
    truth_dense = (rng.random((n_users, n_items)) < 0.12) & (train.toarray() == 0)
    truth_dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    truth_dense &= train.toarray() == 0
    users = np.flatnonzero(truth_dense.any(axis=1))
    truth = sp.csr_matrix(truth_dense.astype(np.float32))

    result = evaluate(lambda u: torch.from_numpy(scores[u.numpy()]), users, truth, [train], batch_size=7)

    expected = brute_force(
        scores[users],
        [set(np.flatnonzero(truth_dense[u])) for u in users],
        [set(train[u].indices) for u in users],
    )
    assert set(result.per_user) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(result.per_user[name], values, atol=1e-6, err_msg=name)


def test_top_k_breaks_ties_by_lower_item_id():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 4).tolist() == [[1, 2, 4, 3], [0, 1, 2, 3]]


def test_metrics_on_a_hand_computed_case():
    # items ranked 0,1,2,...; truth {1, 3}; nothing excluded
    scores = torch.tensor([[10.0, 9.0, 8.0, 7.0, 6.0, 5.0]])
    truth = sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0]], dtype=np.float32))
    empty = sp.csr_matrix((1, 6), dtype=np.float32)
    means = evaluate(lambda u: scores, np.array([0]), truth, [empty], cutoffs=(2, 5)).means()
    assert means["recall@2"] == pytest.approx(0.5)
    assert means["precision@2"] == pytest.approx(0.5)
    assert means["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert means["map@5"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert means["hit@2"] == 1.0
    assert means["recall@5"] == 1.0


def test_excluded_items_never_recommended():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    train = sp.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    truth = sp.csr_matrix(np.array([[0, 0, 0, 1]], dtype=np.float32))
    means = evaluate(lambda u: scores, np.array([0]), truth, [train], cutoffs=(2,)).means()
    assert means["recall@2"] == 1.0  # items 0 and 1 excluded, so 2 and 3 are the top two


def test_nan_scores_are_reported():
    truth = sp.csr_matrix(np.array([[0, 1]], dtype=np.float32))
    empty = sp.csr_matrix((1, 2), dtype=np.float32)
    with pytest.raises(FloatingPointError):
        evaluate(lambda u: torch.tensor([[float("nan"), 1.0]]), np.array([0]), truth, [empty])
