"""Popularity: every user gets the items with the most training interactions.

Not learned; the floor every personalised model must clear.
"""

from __future__ import annotations

import numpy as np
import torch

from fitmm.data.dataset import Dataset
from fitmm.models.base import Recommender
from fitmm.models.registry import register


@register("pop")
class Popularity(Recommender):
    trainable = False

    def __init__(self, dataset: Dataset, settings: Recommender.Settings) -> None:
        super().__init__(dataset)
        counts = np.asarray(dataset.train.sum(axis=0)).ravel().astype(np.float32)
        self.register_buffer("item_counts", torch.from_numpy(counts))

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A one-dimensional inner product: every user's vector is 1, an item's is its count."""
        return torch.ones(self.n_users, 1, device=self.item_counts.device), self.item_counts.unsqueeze(1)
