"""VBPR: BPR matrix factorisation whose item vectors carry a learned projection of item content.

He and McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.
Implemented as MMRec's variant, which produced the published Amazon numbers (docs/baselines.md §5):

- user vector p_u ∈ R^{2d} (Xavier-uniform), item ID factor q_i ∈ R^d (Xavier-uniform);
- content x_i = [text ; image] (text first, whichever of the two the dataset has), a constant;
- item vector v_i = [q_i ; W x_i + b], W Xavier-normal, b zero; score ⟨p_u, v_i⟩, i.e.
  ⟨p_u[:d], q_i⟩ + ⟨p_u[d:], W x_i + b⟩;
- loss = BPR (the 1e-10 form) + ``reg_weight`` · (‖p_u‖ + ‖v_i⁺‖ + ‖v_i⁻‖)_F / batch length,
  plain Frobenius norms of the concatenated batch vectors; W itself is not regularised.

This is not the paper's model, which has item and global visual bias terms, image features only
and a squared-L2 penalty [paper, unverified in detail]; that form is not offered.

Defaults (``VBPR.Settings``): d 64 and learning rate 1e-3 from MMRec's configuration;
``reg_weight`` 1.0 — MMRec searches {2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5} and publishes no
per-dataset value; 1.0 is what public MMRec runs (DA-MRS, KDD 2024) chose on Baby and Sports.
``freeze_features: true`` as the reference, which uses the features as constants. Placeholder
content rows are the mean of the real rows (``fitmm.models.content``); VBPR builds no content
graph, so there is no ``mask_placeholders`` switch. Raw features enter unnormalised, as in the
reference.

Work per batch: only the batch's distinct positive and negative items are projected (the
reference projects every item on every batch; the loss is the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.models.base import Recommender, batch_rows
from fitmm.models.content import available_content, register_features
from fitmm.models.losses import bpr_loss_eps, plain_norms
from fitmm.models.registry import register
from fitmm.settings import setting

CONCATENATION_ORDER = ("text", "image")
"""Order of the modalities in x_i, as in MMRec's VBPR."""


@register("vbpr")
class VBPR(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "d: item ID factor and projected content width (user vector 2d)",
                                      minimum=1)
        reg_weight: float = setting(1.0, "weight of the plain norms of the batch's concatenated vectors",
                                    minimum=0)
        freeze_features: bool = setting(True, "keep the raw content features constant (as the reference)")

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.reg_weight = settings.reg_weight
        content = available_content(dataset, self.registry_name)
        item_content = torch.cat([content[name][0] for name in CONCATENATION_ORDER if name in content], dim=1)
        register_features(self, "item_content", item_content, trainable=not settings.freeze_features)

        self.user_factors = nn.Parameter(torch.empty(self.n_users, 2 * settings.embedding_size))
        self.item_factors = nn.Parameter(torch.empty(self.n_items, settings.embedding_size))
        nn.init.xavier_uniform_(self.user_factors)
        nn.init.xavier_uniform_(self.item_factors)
        self.content_projection = nn.Linear(item_content.shape[1], settings.embedding_size)
        nn.init.xavier_normal_(self.content_projection.weight)
        nn.init.zeros_(self.content_projection.bias)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """v_i = [q_i ; W x_i + b] for ``items`` (all items when None)."""
        if items is None:
            return torch.cat([self.item_factors, self.content_projection(self.item_content)], dim=1)
        return torch.cat([self.item_factors[items], self.content_projection(self.item_content[items])], dim=1)

    def loss(self, users, positives, negatives):
        u = self.user_factors[users]
        batch_items, rows = batch_rows(torch.cat([positives, negatives]))
        p, n = self.item_vectors(batch_items)[rows].split(users.shape[0])
        ranking = bpr_loss_eps((u * p).sum(1), (u * n).sum(1))
        regulariser = self.reg_weight * plain_norms(u, p, n, divisor=users.shape[0])
        return {"loss": ranking + regulariser, "bpr": ranking, "reg": regulariser}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_factors, self.item_vectors()
