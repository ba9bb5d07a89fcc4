"""Popularity: every user gets the items with the most training interactions.

Not learned; the floor every personalised model must clear.
"""

from __future__ import annotations

import numpy as np
import torch

from fitmm.data.dataset import Dataset
from fitmm.models.base import Recommender, ScoreFunction
from fitmm.models.registry import register


@register("pop")
class Popularity(Recommender):
    trainable = False

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        counts = np.asarray(dataset.train.sum(axis=0)).ravel().astype(np.float32)
        self.register_buffer("item_counts", torch.from_numpy(counts))

    def scorer(self) -> ScoreFunction:
        def score(user_ids: torch.Tensor) -> torch.Tensor:
            return self.item_counts.expand(user_ids.shape[0], -1)

        return score
