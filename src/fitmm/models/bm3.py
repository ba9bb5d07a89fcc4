"""BM3: bootstrapped multimodal representations, trained without negative samples.

Zhou, Zhou, Liu, Zhang, Wang, Zeng and Miao, "Bootstrap Latent Representations for Multi-modal
Recommendation", The Web Conference (WWW) 2023. Computation as in the authors' implementation,
which MMRec carries unchanged (docs/baselines.md §8):

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

Defaults (``BM3.Settings``): d 64, ``cl_weight`` 2.0, learning rate 1e-3 without decay from
the authors' configuration (identical in MMRec); ``n_layers`` 1, ``dropout`` 0.5, ``reg_weight``
0.1 — the authors' published best values for Baby. ``freeze_features: false``: the reference
fine-tunes the raw features. BM3 builds no content graph, so there is no ``mask_placeholders``
switch; placeholder rows are the mean of the real rows (``fitmm.models.content``).

Work per batch: only the batch's distinct users and items are passed through the predictor, the
projections and the dropout (the reference does all rows, then indexes; duplicates in a batch
share one dropout mask in both). Under autocast the predictor's and the projections' inputs are
padded to a multiple of 64 rows (``base.padded_for_autocast``), while the dropout sees only the
distinct rows, so it draws exactly what it draws in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.adjacency import layer_mean, scipy_to_torch, symmetric_normalized
from fitmm.graph.precision import in_fp32
from fitmm.models.base import Recommender, padded_for_autocast, xavier_uniform_table
from fitmm.models.content import available_content, register_features
from fitmm.models.losses import plain_norms
from fitmm.models.registry import register
from fitmm.settings import setting


@in_fp32
def alignment_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − the batch mean of the row-wise cosine similarity (invariant to the targets' scale)."""
    return 1 - F.cosine_similarity(online, target, dim=-1).mean()


@register("bm3")
class BM3(Recommender):
    uses_negatives = False

    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings and content projections", minimum=1)
        n_layers: int = setting(1, "LightGCN layers", minimum=0)
        dropout: float = setting(0.5, "target-view embedding dropout", minimum=0, maximum=1)
        reg_weight: float = setting(0.1, "weight of the plain norms of the online tables, ÷ the number of items",
                                    minimum=0)
        cl_weight: float = setting(2.0, "weight of the modality alignment losses", minimum=0)
        freeze_features: bool = setting(False, "keep the raw content features constant (the reference "
                                               "fine-tunes them)")

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.n_layers = settings.n_layers
        self.dropout = settings.dropout
        self.reg_weight = settings.reg_weight
        self.cl_weight = settings.cl_weight
        content = available_content(dataset, self.registry_name)
        self.modalities = tuple(content)

        self.user_embedding = xavier_uniform_table(self.n_users, settings.embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, settings.embedding_size)
        self.predictor = nn.Linear(settings.embedding_size, settings.embedding_size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = nn.ModuleDict()
        for name, (features, _) in content.items():
            register_features(self, f"{name}_features", features, trainable=not settings.freeze_features)
            self.projections[name] = nn.Linear(features.shape[1], settings.embedding_size)
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
        padded_users, padded_items = padded_for_autocast(batch_users), padded_for_autocast(batch_items)
        user_target = self.target_view(user_online[batch_users])[user_rows]
        item_target = self.target_view(item_online[batch_items])[item_rows]
        parts = {
            "user_item": alignment_loss(self.predictor(user_online[padded_users])[user_rows], item_target),
            "item_user": alignment_loss(self.predictor(item_online[padded_items])[item_rows], user_target),
            "reg": self.reg_weight * plain_norms(user_online, item_online, divisor=self.n_items),
        }
        for modality in self.modalities:
            projected = self.projections[modality](getattr(self, f"{modality}_features")[padded_items])
            predicted = self.predictor(projected)[item_rows]
            own_target = self.target_view(projected[: batch_items.numel()])[item_rows]
            parts[f"{modality}_item"] = alignment_loss(predicted, item_target)
            parts[f"{modality}_{modality}"] = alignment_loss(predicted, own_target)
        content = sum(parts[f"{m}_item"] + parts[f"{m}_{m}"] for m in self.modalities)
        total = parts["user_item"] + parts["item_user"] + parts["reg"] + self.cl_weight * content
        return {"loss": total, **parts}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_online, item_online = self.online()
        return self.predictor(user_online), self.predictor(item_online)
