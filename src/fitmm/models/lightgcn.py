"""LightGCN: linear propagation over the normalised user–item graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020. As in the MMRec harness (docs/baselines.md §4): Xavier-uniform ID tables, ``n_layers``
propagations over Â_sym of the training graph, final embedding = mean of layers 0..L, BPR loss
plus ``reg_weight`` × plain Frobenius norms of the batch's layer-0 rows divided by the batch length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.adjacency import layer_mean, scipy_to_torch, symmetric_normalized
from fitmm.models.base import Recommender
from fitmm.models.losses import bpr_loss_eps, plain_norms
from fitmm.models.registry import register
from fitmm.settings import setting


@register("lightgcn")
class LightGCN(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings", minimum=1)
        n_layers: int = setting(2, "propagation layers (final embedding = mean of layers 0..L)", minimum=0)
        reg_weight: float = setting(0.0001, "weight of the plain norms of the batch's layer-0 rows", minimum=0)

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.n_layers = settings.n_layers
        self.reg_weight = settings.reg_weight
        self.embedding = nn.Parameter(torch.empty(self.n_users + self.n_items, settings.embedding_size))
        nn.init.xavier_uniform_(self.embedding[: self.n_users])
        nn.init.xavier_uniform_(self.embedding[self.n_users:])
        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        final = layer_mean(self.adjacency, self.embedding, self.n_layers)
        return final[: self.n_users], final[self.n_users:]

    def loss(self, users, positives, negatives):
        user_final, item_final = self.propagate()
        u, p, n = user_final[users], item_final[positives], item_final[negatives]
        ranking = bpr_loss_eps((u * p).sum(1), (u * n).sum(1))
        ego_items = self.embedding[self.n_users:]
        regulariser = self.reg_weight * plain_norms(
            self.embedding[users], ego_items[positives], ego_items[negatives], divisor=users.shape[0]
        )
        return {"loss": ranking + regulariser, "bpr": ranking, "reg": regulariser}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
