"""BPR-MF and LightGCN: their distinctive computations on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_inter

from fitmm.data import load_dataset
from fitmm.graph.adjacency import symmetric_normalized
from fitmm.models.lightgcn import LightGCN
from fitmm.models.mf import BPRMF


@pytest.fixture
def toy(tmp_path):
    # 2 users, 3 items: u0–i0, u0–i1, u1–i1, u1–i2 in training
    folder = tmp_path / "toy"
    write_inter(folder, [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 2, 0), (0, 2, 2), (1, 0, 2)])
    return load_dataset(folder)


def test_symmetric_adjacency_by_hand(toy):
    adjacency = symmetric_normalized(toy.train).toarray()
    degrees = np.array([2, 2, 1, 2, 1])  # u0, u1, i0, i1, i2
    expected = np.zeros((5, 5))
    for u, i in [(0, 0), (0, 1), (1, 1), (1, 2)]:
        expected[u, 2 + i] = expected[2 + i, u] = 1 / np.sqrt(degrees[u] * degrees[2 + i])
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)
    eigenvalues = np.linalg.eigvalsh(adjacency)
    assert eigenvalues.min() >= -1 - 1e-6 and eigenvalues.max() <= 1 + 1e-6


def test_lightgcn_final_embedding_is_the_layer_mean(toy):
    torch.manual_seed(0)
    model = LightGCN(toy, LightGCN.Settings(embedding_size=4, n_layers=2, reg_weight=1e-4))
    a = torch.from_numpy(symmetric_normalized(toy.train).toarray()).double()
    x0 = model.embedding.detach().double()
    expected = (x0 + a @ x0 + a @ a @ x0) / 3
    users, items = model.propagate()
    np.testing.assert_allclose(torch.cat([users, items]).detach().double(), expected, atol=1e-6)


def test_lightgcn_regulariser_uses_plain_norms_of_layer0_rows(toy):
    model = LightGCN(toy, LightGCN.Settings(embedding_size=4, n_layers=2, reg_weight=0.5))
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([2, 0])
    parts = model.loss(users, positives, negatives)
    ego = model.embedding.detach()
    expected = 0.5 * (ego[users].norm() + ego[2 + positives].norm() + ego[2 + negatives].norm()) / 2
    assert parts["reg"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_mf_regulariser_and_gradient_support(toy):
    model = BPRMF(toy, BPRMF.Settings(embedding_size=4, reg_weight=2.0))
    users, positives, negatives = torch.tensor([0]), torch.tensor([1]), torch.tensor([2])
    parts = model.loss(users, positives, negatives)
    p, q = model.user_embedding.detach(), model.item_embedding.detach()
    assert parts["reg"].item() == pytest.approx(2.0 * (p[0].norm() + q[1].norm() + q[2].norm()).item(), rel=1e-6)
    parts["loss"].backward()
    assert model.user_embedding.grad[1].abs().sum() == 0  # rows outside the batch get no gradient
    assert model.item_embedding.grad[0].abs().sum() == 0
