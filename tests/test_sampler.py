"""Negative sampling: never a training item of the user, uniform over the pool, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitmm.errors import InputError
from fitmm.training.sampler import NegativeSampler


def dense_train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((30, 12)) < 0.6
    dense[:, 11] = False  # item 11 never occurs in training: never a negative
    return sp.csr_matrix(dense.astype(np.float32))


def test_negatives_are_never_training_items():
    train = dense_train()
    sampler = NegativeSampler(train, torch.Generator().manual_seed(0))
    dense = train.toarray() > 0
    for users, positives, negatives in sampler.batches(16, with_negatives=True):
        assert dense[users.numpy(), positives.numpy()].all()
        assert not dense[users.numpy(), negatives.numpy()].any()
        assert (negatives != 11).all()


def test_epoch_covers_every_pair_once():
    train = dense_train()
    sampler = NegativeSampler(train, torch.Generator().manual_seed(0))
    pairs = [(int(u), int(i)) for users, items, _ in sampler.batches(7, with_negatives=False)
             for u, i in zip(users, items)]
    assert sorted(pairs) == sorted(zip(*train.nonzero()))


def test_negatives_are_uniform_over_allowed_items():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=np.float32))
    sampler = NegativeSampler(train, torch.Generator().manual_seed(0))
    draws = sampler.negatives(torch.zeros(40000, dtype=torch.long))
    counts = np.bincount(draws.numpy(), minlength=5)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / 40000, 0.25, atol=0.01)


def test_same_seed_same_batches():
    train = dense_train()
    first = [tuple(t.tolist() for t in b) for b in NegativeSampler(train, torch.Generator().manual_seed(3)).batches(8, True)]
    second = [tuple(t.tolist() for t in b) for b in NegativeSampler(train, torch.Generator().manual_seed(3)).batches(8, True)]
    assert first == second


def test_user_with_every_item_is_an_error():
    train = sp.csr_matrix(np.array([[1, 1], [1, 0]], dtype=np.float32))
    with pytest.raises(InputError, match="user 0 interacted with every training item"):
        NegativeSampler(train, torch.Generator().manual_seed(0))
