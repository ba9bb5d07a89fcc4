"""BM3: bootstrapped multimodal representations, trained without negative samples.

Zhou, Zhou, Liu, Zhang, Wang, Zeng and Miao, "Bootstrap Latent Representations for Multi-modal
Recommendation", The Web Conference (WWW) 2023. Computation as in the authors' implementation,
which MMRec carries unchanged (BASELINES.md §8):

- online: (U_o ; I_g) = LightGCN mean of ``n_layers`` layers over Â_sym, I_o = I_g + E_i (the
  ID table added a second time); per modality m, the projection P_m = Linear_m(F_m) of the
  fine-tuned raw features;
- targets: element-wise dropout (probability ``dropout``) of *detached* copies of U_o, I_o and P_m
  — no momentum network, no gradient;
- a predictor g = Linear(d → d), shared by users, items and modalities;
- loss over a batch of (u, i) pairs, each bracket a batch mean of 1 − cosine:
  [g(U_o)_u, Ī_i] + [g(I_o)_i, Ū_u] + ``reg_weight``·(‖U_o‖_F + ‖I_o‖_F)/I (plain norms of the
  whole tables, ÷ the number of items) + ``cl_weight``·Σ_m ([g(P_m)_i, Ī_i] + [g(P_m)_i, P̄_m,i]);
- scores g(U_o)·g(I_o)ᵀ: the predictor is applied at inference, without dropout.

Defaults (``configs/bm3.yaml``): d 64, ``cl_weight`` 2.0, learning rate 1e-3 without decay from
the authors' configuration (identical in MMRec); ``n_layers`` 1, ``dropout`` 0.5, ``reg_weight``
0.1 — the authors' published best values for Baby. ``freeze_features: false``: the reference
fine-tunes the raw features. BM3 builds no content graph, so there is no ``mask_placeholders``
switch; placeholder rows are the mean of the real rows (``fitmm.models.content``).

Work per batch: only the batch's distinct users and items are passed through the predictor, the
projections and the dropout (the reference does all rows, then indexes; duplicates in a batch
share one dropout mask in both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.adjacency import layer_mean, scipy_to_torch, symmetric_normalized
from fitmm.models.base import Recommender, ScoreFunction, embedding_scorer, xavier_uniform_table
from fitmm.models.content import available_content, register_features
from fitmm.models.losses import plain_norms
from fitmm.models.registry import register


def alignment_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − the batch mean of the row-wise cosine similarity (invariant to the targets' scale)."""
    return 1 - F.cosine_similarity(online, target, dim=-1).mean()


@register("bm3")
class BM3(Recommender):
    uses_negatives = False

    def __init__(
        self,
        dataset: Dataset,
        embedding_size: int,
        n_layers: int,
        dropout: float,
        reg_weight: float,
        cl_weight: float,
        freeze_features: bool,
    ) -> None:
        super().__init__(dataset)
        self.n_layers = n_layers
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        content = available_content(dataset, self.registry_name)
        self.modalities = tuple(content)

        self.user_embedding = xavier_uniform_table(self.n_users, embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, embedding_size)
        self.predictor = nn.Linear(embedding_size, embedding_size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = nn.ModuleDict()
        for name, (features, _) in content.items():
            register_features(self, f"{name}_features", features, trainable=not freeze_features)
            self.projections[name] = nn.Linear(features.shape[1], embedding_size)
            nn.init.xavier_normal_(self.projections[name].weight)
        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U_o, I_o): the LightGCN mean over Â_sym, with E_i added once more to the items."""
        final = layer_mean(self.adjacency, torch.cat([self.user_embedding, self.item_embedding]), self.n_layers)
        return final[: self.n_users], final[self.n_users:] + self.item_embedding

    def target_view(self, online: torch.Tensor) -> torch.Tensor:
        """A gradient-free, dropout-perturbed copy of ``online`` (dropout applies in every mode)."""
        return F.dropout(online.detach(), p=self.dropout, training=True)

    def loss(self, users, positives, negatives):
        user_online, item_online = self.online()
        batch_users, user_rows = users.unique(return_inverse=True)
        batch_items, item_rows = positives.unique(return_inverse=True)
        user_target = self.target_view(user_online[batch_users])[user_rows]
        item_target = self.target_view(item_online[batch_items])[item_rows]
        parts = {
            "user_item": alignment_loss(self.predictor(user_online[batch_users])[user_rows], item_target),
            "item_user": alignment_loss(self.predictor(item_online[batch_items])[item_rows], user_target),
            "reg": self.reg_weight * plain_norms(user_online, item_online, divisor=self.n_items),
        }
        for modality in self.modalities:
            projected = self.projections[modality](getattr(self, f"{modality}_features")[batch_items])
            predicted = self.predictor(projected)[item_rows]
            parts[f"{modality}_item"] = alignment_loss(predicted, item_target)
            parts[f"{modality}_{modality}"] = alignment_loss(predicted, self.target_view(projected)[item_rows])
        content = sum(parts[f"{m}_item"] + parts[f"{m}_{m}"] for m in self.modalities)
        total = parts["user_item"] + parts["item_user"] + parts["reg"] + self.cl_weight * content
        return {"loss": total, **parts}

    def scorer(self) -> ScoreFunction:
        user_online, item_online = self.online()
        return embedding_scorer(self.predictor(user_online), self.predictor(item_online))
