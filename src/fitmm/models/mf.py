"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009. As in the
MMRec harness (docs/baselines.md §3): Xavier-normal factor tables, no biases, BPR loss plus
``reg_weight`` × the plain (unsquared) Frobenius norms of the batch's user, positive and negative
factors divided by the batch length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.models.base import Recommender
from fitmm.models.losses import bpr_loss_eps, plain_norms
from fitmm.models.registry import register
from fitmm.settings import setting


@register("mf")
class BPRMF(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the user and item factors", minimum=1)
        reg_weight: float = setting(0.1, "weight of the plain norms of the batch's factors (the value public "
                                         "MMRec runs chose on every Amazon set)", minimum=0)

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.reg_weight = settings.reg_weight
        self.user_embedding = nn.Parameter(torch.empty(self.n_users, settings.embedding_size))
        self.item_embedding = nn.Parameter(torch.empty(self.n_items, settings.embedding_size))
        nn.init.xavier_normal_(self.user_embedding)
        nn.init.xavier_normal_(self.item_embedding)

    def loss(self, users, positives, negatives):
        u = self.user_embedding[users]
        p = self.item_embedding[positives]
        n = self.item_embedding[negatives]
        ranking = bpr_loss_eps((u * p).sum(1), (u * n).sum(1))
        regulariser = self.reg_weight * plain_norms(u, p, n, divisor=users.shape[0])
        return {"loss": ranking + regulariser, "bpr": ranking, "reg": regulariser}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self.item_embedding
