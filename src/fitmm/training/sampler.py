"""Training batches: shuffled positive pairs with uniformly sampled negatives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.errors import InputError


class NegativeSampler:
    """Draws, for each (user, positive) pair, an item from the training-item pool that the user
    has not interacted with in training. Vectorised rejection sampling: whole batches are drawn at
    once and only the rejected entries are redrawn.
    """

    def __init__(self, train: sp.csr_matrix, generator: torch.Generator) -> None:
        coo = train.tocoo()
        self.n_items = train.shape[1]
        order = np.lexsort((coo.col, coo.row))
        self.users = torch.from_numpy(coo.row[order].astype(np.int64))
        self.positives = torch.from_numpy(coo.col[order].astype(np.int64))
        self.known = self.users * self.n_items + self.positives  # sorted keys of training pairs
        self.pool = torch.from_numpy(np.flatnonzero(np.asarray(train.sum(axis=0)).ravel() > 0))
        per_user = np.diff(train.indptr)
        saturated = np.flatnonzero(per_user >= len(self.pool))
        if saturated.size:
            raise InputError(
                f"user {saturated[0]} interacted with every training item: no negative item exists"
            )
        self.generator = generator

    def negatives(self, users: torch.Tensor) -> torch.Tensor:
        draw = self.pool[torch.randint(len(self.pool), users.shape, generator=self.generator)]
        rejected = self._is_known(users, draw)
        while rejected.any():
            redraw = torch.randint(len(self.pool), (int(rejected.sum()),), generator=self.generator)
            draw[rejected] = self.pool[redraw]
            rejected[rejected.clone()] = self._is_known(users[rejected], draw[rejected])
        return draw

    def _is_known(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        position = torch.searchsorted(self.known, keys).clamp(max=len(self.known) - 1)
        return self.known[position] == keys

    def batches(self, batch_size: int, with_negatives: bool) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch: all training pairs in a fresh random order, in batches of ``batch_size``."""
        order = torch.randperm(len(self.users), generator=self.generator)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            users, positives = self.users[chosen], self.positives[chosen]
            negatives = self.negatives(users) if with_negatives else None
            yield users, positives, negatives

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)
