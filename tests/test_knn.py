"""Content kNN graphs against a dense brute-force construction, masks, ties and fusions."""

import pytest
import torch

from fitmm.graph.knn import knn_graph, max_pool_graphs, mix_graphs, neighbour_mean_weights


def brute_force_graph(features: torch.Tensor, k: int, weighting: str) -> torch.Tensor:
    """Dense reference: full cosine matrix, per-row top-k by (similarity desc, index asc)."""
    unit = features / features.norm(dim=1, keepdim=True)
    similarity = unit @ unit.T
    n = features.shape[0]
    kept = torch.zeros(n, n, dtype=features.dtype)
    for i in range(n):
        order = sorted(range(n), key=lambda j: (-similarity[i, j].item(), j))[:k]
        for j in order:
            kept[i, j] = 1.0 if weighting == "binary" else similarity[i, j]
    row_sums = kept.sum(dim=1)
    return kept / torch.sqrt(row_sums[:, None] * row_sums[None, :])


def random_features(n: int, f: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, f, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("weighting", ["binary", "cosine"])
def test_matches_dense_brute_force(weighting):
    features = random_features(37, 6, seed=0)
    graph = knn_graph(features, 5, weighting=weighting, block_size=8)
    assert graph.layout == torch.sparse_coo and graph.is_coalesced()
    assert graph.shape == (37, 37)
    expected = brute_force_graph(features, 5, weighting)
    torch.testing.assert_close(graph.to_dense(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighting", ["binary", "cosine"])
def test_every_row_has_k_entries_including_itself(weighting):
    graph = knn_graph(random_features(50, 8, seed=1), 7, weighting=weighting)
    rows, cols = graph.indices()
    assert torch.equal(torch.bincount(rows, minlength=50), torch.full((50,), 7))
    assert (rows == cols).sum() == 50


def test_binary_values_are_one_over_k():
    graph = knn_graph(random_features(40, 5, seed=2, dtype=torch.float32), 10, weighting="binary")
    assert graph.dtype == torch.float32
    torch.testing.assert_close(graph.values(), torch.full((400,), 0.1))


def test_cosine_values_use_row_sums_on_both_sides():
    features = random_features(30, 4, seed=3)
    graph = knn_graph(features, 4, weighting="cosine").to_dense()
    unit = features / features.norm(dim=1, keepdim=True)
    raw = torch.where(graph != 0, unit @ unit.T, 0.0)
    row_sums = raw.sum(dim=1)
    torch.testing.assert_close(graph, raw / torch.sqrt(row_sums[:, None] * row_sums[None, :]))


@pytest.mark.parametrize("weighting", ["binary", "cosine"])
def test_masked_rows_only_get_self_loops_and_are_never_neighbours(weighting):
    features = random_features(30, 5, seed=4)
    mask = torch.ones(30, dtype=torch.bool)
    placeholders = torch.tensor([0, 7, 8, 29])
    mask[placeholders] = False
    features[placeholders] = features.mean(dim=0)
    graph = knn_graph(features, 4, mask=mask, weighting=weighting, block_size=7).to_dense()

    for p in placeholders:
        expected_row = torch.zeros(30, dtype=graph.dtype)
        expected_row[p] = 1.0
        torch.testing.assert_close(graph[p], expected_row)
        assert (graph[mask, p] == 0).all()
    assert ((graph[mask] != 0).sum(dim=1) == 4).all()

    real = mask.nonzero().squeeze(1)
    reference = brute_force_graph(features[real], 4, weighting)
    torch.testing.assert_close(graph[real][:, real], reference, rtol=1e-12, atol=1e-12)


def test_block_size_does_not_change_the_result():
    features = random_features(101, 9, seed=5, dtype=torch.float32)
    reference = knn_graph(features, 6, weighting="cosine", block_size=4096)
    for block_size in (1, 7, 64, 100):
        graph = knn_graph(features, 6, weighting="cosine", block_size=block_size)
        assert torch.equal(graph.indices(), reference.indices())
        torch.testing.assert_close(graph.values(), reference.values(), rtol=1e-6, atol=1e-7)


def test_ties_keep_the_lowest_indices_and_are_deterministic():
    # Rows 0..5 are identical (like placeholder content): every one of them has six candidates at
    # similarity 1 and keeps the three lowest-indexed ones.
    features = random_features(20, 4, seed=6)
    features[:6] = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    first = knn_graph(features, 3, weighting="binary", block_size=4)
    second = knn_graph(features, 3, weighting="binary", block_size=4)
    assert torch.equal(first.indices(), second.indices())
    dense = first.to_dense()
    for i in range(6):
        assert dense[i].nonzero().squeeze(1).tolist() == [0, 1, 2]


def test_k_equal_to_row_count_keeps_everything():
    graph = knn_graph(random_features(6, 3, seed=7), 6, weighting="binary")
    torch.testing.assert_close(graph.to_dense(), torch.full((6, 6), 1 / 6, dtype=torch.float64))


def test_rejects_bad_arguments():
    features = random_features(5, 3, seed=8)
    with pytest.raises(ValueError):
        knn_graph(features, 6, weighting="binary")
    with pytest.raises(ValueError):
        knn_graph(features, 2, weighting="dot")
    with pytest.raises(ValueError):
        knn_graph(features, 2, mask=torch.ones(4, dtype=torch.bool), weighting="binary")
    features[0, 0] = float("nan")
    with pytest.raises(ValueError):
        knn_graph(features, 2, weighting="binary")


def sparse(dense: torch.Tensor) -> torch.Tensor:
    return dense.to_sparse().coalesce()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_mix_graphs_is_the_weighted_sum():
    a = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [0.0, 3.0]])
    mixed = mix_graphs(sparse(a), sparse(b).to_sparse_csr(), 0.1)
    assert mixed.layout == torch.sparse_coo
    torch.testing.assert_close(mixed.to_dense(), 0.1 * a + 0.9 * b)


def test_max_pool_takes_the_union_with_absent_edges_as_minus_infinity():
    a = sparse(torch.tensor([[0.5, 0.0, -0.2], [0.0, 1.0, 0.0]]))
    b = sparse(torch.tensor([[0.7, -0.3, 0.0], [0.0, 0.2, 0.0]]))
    pooled = max_pool_graphs(a, b)
    assert pooled.is_coalesced()
    assert pooled.indices().tolist() == [[0, 0, 0, 1], [0, 1, 2, 1]]
    torch.testing.assert_close(pooled.values(), torch.tensor([0.7, -0.3, -0.2, 1.0]))


def test_fusions_reject_shape_mismatch():
    a = sparse(torch.eye(2))
    b = sparse(torch.eye(3))
    with pytest.raises(ValueError):
        mix_graphs(a, b, 0.5)
    with pytest.raises(ValueError):
        max_pool_graphs(a, b)


def test_neighbour_mean_weights_match_brute_force_over_eligible_candidates():
    queries, candidates = random_features(9, 5, seed=7), random_features(40, 5, seed=8)
    eligible = torch.arange(40) % 3 != 0
    weights = neighbour_mean_weights(queries, candidates, 4, candidate_mask=eligible, block_size=4)
    assert weights.shape == (9, 40) and weights.is_coalesced()
    similarity = (queries / queries.norm(dim=1, keepdim=True)) @ (candidates / candidates.norm(dim=1, keepdim=True)).T
    expected = torch.zeros(9, 40, dtype=torch.float64)
    for q in range(9):
        order = sorted(eligible.nonzero().squeeze(1).tolist(), key=lambda c: (-similarity[q, c].item(), c))[:4]
        expected[q, order] = 0.25
    torch.testing.assert_close(weights.to_dense(), expected, rtol=0, atol=0)


def test_neighbour_mean_weights_of_a_copy_with_one_neighbour_is_the_original():
    candidates = random_features(20, 6, seed=3)
    weights = neighbour_mean_weights(candidates[[4, 11]] * 3.0, candidates, 1, candidate_mask=torch.ones(20, dtype=torch.bool))
    assert weights.to_dense().nonzero().tolist() == [[0, 4], [1, 11]]


@pytest.mark.parametrize(("queries", "candidates", "k", "mask", "message"), [
    (torch.rand(3, 4), torch.rand(10, 5), 2, torch.ones(10, dtype=torch.bool), "same width"),
    (torch.rand(0, 4), torch.rand(10, 4), 2, torch.ones(10, dtype=torch.bool), "no query rows"),
    (torch.rand(3, 4), torch.rand(10, 4), 4, torch.arange(10) < 3, "between 1 and the 3 eligible"),
    (torch.rand(3, 4), torch.rand(10, 4), 0, torch.ones(10, dtype=torch.bool), "between 1 and the 10 eligible"),
    (torch.rand(3, 4), torch.rand(10, 4), 2, torch.ones(9, dtype=torch.bool), "bool vector of length 10"),
])
def test_neighbour_mean_weights_reject_bad_arguments(queries, candidates, k, mask, message):
    with pytest.raises(ValueError, match=message):
        neighbour_mean_weights(queries, candidates, k, candidate_mask=mask)
