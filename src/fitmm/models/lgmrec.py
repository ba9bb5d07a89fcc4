"""LGMRec: local graph embeddings plus global hypergraph embeddings.

Guo, Li, Li, Wang, Wang and Ma, "LGMRec: Local and Global Graph Learning for Multimodal
Recommendation", AAAI 2024. Computation as in the authors' implementation, which MMRec carries
unchanged (docs/baselines.md §10):

- CGE: C = LightGCN mean of ``n_ui_layers`` layers of [E_u ; E_i] over Â_sym;
- MGE per modality: items X_m = F_m W_m (W_m Xavier-uniform, no bias, F_m frozen), users the mean
  of their training items' X_m, then the **last** of ``n_mm_layers`` propagations over Â_sym;
- local embeddings Lc = C + rownorm(G_v) + rownorm(G_t);
- hyperedge memberships per modality: item logits F_m Φ_m, user logits R F_m Φ_m (sums over the
  user's items), each turned into soft memberships over ``n_hyperedges`` hyperedges by
  Gumbel-softmax with τ = 0.2, then dropout with keep probability ``keep_rate`` in training;
- HGNN over ``n_hyper_layers`` layers propagating the *collaborative* item embeddings:
  Ω = Hᵢᵀ X, X ← Hᵢ Ω, users Hᵤ Ω; global Gl = Γ_v + Γ_t; final Z = Lc + ``alpha`` · rownorm(Gl);
- loss = BPR + ``cl_weight`` · [NCE(Γ_v users, Γ_t users; all users) + NCE(Γ_v items⁺, Γ_t items⁺;
  all items)] + ``reg_weight`` · PN(z_u, z_i⁺, z_i⁻) ÷ batch length, where NCE is summed over the
  batch and contrasts against every user (item) of the other modality, τ = 0.2.

Evaluation is **stochastic** by default, as in the reference: every scorer call, i.e. every user
batch of an evaluation, draws fresh Gumbel noise (no dropout). ``deterministic_eval: true``
replaces the Gumbel-softmax by softmax(logits / τ) at evaluation; report which one was used.

Defaults (``LGMRec.Settings``): the Amazon Baby row of the authors' published training logs,
identical to MMRec's active configuration — ``n_ui_layers`` 2, ``n_mm_layers`` 2,
``n_hyper_layers`` 1, ``n_hyperedges`` 4, ``keep_rate`` 0.5, ``alpha`` 0.3, ``cl_weight`` 1e-4,
``reg_weight`` 1e-6; learning rate 1e-3, no decay. Features are frozen (``freeze_features: true``)
as in the reference. LGMRec builds no content graph, so placeholder rows are only imputed with the
mean of the real rows (``fitmm.models.content``), the released data's own convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from fitmm.data.dataset import MODALITIES, Dataset
from fitmm.graph.adjacency import layer_mean, scipy_to_torch, sparse_mm, symmetric_normalized
from fitmm.graph.precision import in_fp32
from fitmm.models.base import Recommender, ScoreFunction, xavier_uniform_table
from fitmm.models.content import content_features, register_features
from fitmm.models.losses import bpr_loss, plain_norms
from fitmm.models.registry import register
from fitmm.settings import setting

TEMPERATURE = 0.2
"""Gumbel-softmax and NCE temperature, hard-coded in the reference."""


@in_fp32
def summed_nce(anchors: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """Σ_b −log(exp(cos(a_b, p_b)/τ) / Σ_j exp(cos(a_b, c_j)/τ)) over every row j of ``candidates``."""
    anchors = F.normalize(anchors, dim=1) / temperature  # scaled before the B×n product, not after
    positive_logits = (anchors * F.normalize(positives, dim=1)).sum(dim=1)
    return (torch.logsumexp(anchors @ F.normalize(candidates, dim=1).T, dim=1) - positive_logits).sum()


def hypergraph_propagation(item_memberships: torch.Tensor, user_memberships: torch.Tensor,
                           items: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items) after ``n_layers`` rounds of Ω = Hᵢᵀ X, X ← Hᵢ Ω; users = Hᵤ Ω of the last Ω."""
    for _ in range(n_layers):
        hyperedges = item_memberships.T @ items
        items = item_memberships @ hyperedges
    return user_memberships @ hyperedges, items


@register("lgmrec")
class LGMRec(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings and modality projections", minimum=1)
        n_ui_layers: int = setting(2, "LightGCN layers of the collaborative embeddings", minimum=0)
        n_mm_layers: int = setting(2, "propagations of the modality embeddings (the last layer is kept)",
                                   minimum=0)
        n_hyper_layers: int = setting(1, "hypergraph layers", minimum=1)
        n_hyperedges: int = setting(4, "hyperedges per modality", minimum=1)
        keep_rate: float = setting(0.5, "membership dropout keeps this fraction", minimum=0, maximum=1,
                                   exclusive_minimum=True)
        alpha: float = setting(0.3, "weight of the global (hypergraph) embeddings", minimum=0)
        cl_weight: float = setting(0.0001, "weight of the summed cross-modal hypergraph NCE", minimum=0)
        reg_weight: float = setting(0.000001, "weight of the plain norms of the batch embeddings, ÷ batch length",
                                    minimum=0)
        freeze_features: bool = setting(True, "keep the raw content features constant (as the reference)")
        deterministic_eval: bool = setting(False, "softmax instead of Gumbel-softmax at evaluation "
                                                  "(the reference is noisy)")

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.n_ui_layers = settings.n_ui_layers
        self.n_mm_layers = settings.n_mm_layers
        self.n_hyper_layers = settings.n_hyper_layers
        self.keep_rate = settings.keep_rate
        self.alpha = settings.alpha
        self.cl_weight = settings.cl_weight
        self.reg_weight = settings.reg_weight
        self.deterministic_eval = settings.deterministic_eval
        content = {name: content_features(dataset, name, self.registry_name)[0] for name in MODALITIES}

        self.user_embedding = xavier_uniform_table(self.n_users, settings.embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, settings.embedding_size)
        for name, features in content.items():
            register_features(self, f"{name}_features", features, trainable=not settings.freeze_features)
            width = features.shape[1]
            self.register_parameter(f"{name}_projection", xavier_uniform_table(width, settings.embedding_size))
            self.register_parameter(f"{name}_hyperedges", xavier_uniform_table(width, settings.n_hyperedges))

        binary = sp.csr_matrix(dataset.train, dtype=np.float32)
        binary.data[:] = 1.0
        degrees = np.asarray(binary.sum(axis=1)).ravel()
        user_mean = sp.diags(np.divide(1.0, degrees, out=np.zeros_like(degrees), where=degrees > 0)) @ binary
        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)
        self.register_buffer("interactions", scipy_to_torch(binary), persistent=False)
        self.register_buffer("interactions_t", scipy_to_torch(binary.T), persistent=False)
        self.register_buffer("user_mean", scipy_to_torch(user_mean), persistent=False)
        self.register_buffer("user_mean_t", scipy_to_torch(user_mean.T), persistent=False)

    # ----------------------------------------------------------------- local embeddings
    def collaborative(self) -> torch.Tensor:
        """C: the LightGCN mean of layers 0..n_ui_layers of [E_u ; E_i] over Â_sym."""
        return layer_mean(self.adjacency, torch.cat([self.user_embedding, self.item_embedding]), self.n_ui_layers)

    def modality_user_init(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(Y_m, X_m): projected item content X_m = F_m W_m and each user's mean over its training items."""
        items = getattr(self, f"{modality}_features") @ getattr(self, f"{modality}_projection")
        return sparse_mm(self.user_mean, items, self.user_mean_t), items

    def modality_graph_embedding(self, modality: str) -> torch.Tensor:
        """G_m: the last of n_mm_layers propagations of [Y_m ; X_m] over Â_sym (no layer mean)."""
        embedding = torch.cat(self.modality_user_init(modality))
        for _ in range(self.n_mm_layers):
            embedding = sparse_mm(self.adjacency, embedding)
        return embedding

    def local(self, collaborative: torch.Tensor) -> torch.Tensor:
        """Lc = C + rownorm(G_v) + rownorm(G_t)."""
        return collaborative + sum(F.normalize(self.modality_graph_embedding(m), dim=1) for m in MODALITIES)

    # ----------------------------------------------------------------- global embeddings
    def memberships(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(Hᵢ, Hᵤ): soft hyperedge memberships of items and users, rows summing to 1, before dropout.

        Gumbel-softmax with fresh noise, except in evaluation with ``deterministic_eval``, where it
        is the plain softmax of the logits / τ.
        """
        item_logits = getattr(self, f"{modality}_features") @ getattr(self, f"{modality}_hyperedges")
        user_logits = sparse_mm(self.interactions, item_logits, self.interactions_t)
        if self.deterministic_eval and not self.training:
            return (item_logits / TEMPERATURE).softmax(dim=1), (user_logits / TEMPERATURE).softmax(dim=1)
        return (F.gumbel_softmax(item_logits, tau=TEMPERATURE, dim=1),
                F.gumbel_softmax(user_logits, tau=TEMPERATURE, dim=1))

    def hypergraph_embeddings(self, collaborative_items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Γ_m = [users ; items] per modality, from the collaborative item embeddings."""
        memberships = {m: self.memberships(m) for m in MODALITIES}
        embeddings = {}
        for modality, (items, users) in memberships.items():
            items = F.dropout(items, p=1 - self.keep_rate, training=self.training)
            users = F.dropout(users, p=1 - self.keep_rate, training=self.training)
            embeddings[modality] = torch.cat(
                hypergraph_propagation(items, users, collaborative_items, self.n_hyper_layers)
            )
        return embeddings

    def final(self, local: torch.Tensor, hypergraph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Z = Lc + alpha · rownorm(Γ_v + Γ_t)."""
        return local + self.alpha * F.normalize(sum(hypergraph.values()), dim=1)

    # ----------------------------------------------------------------- contract
    def loss(self, users, positives, negatives):
        collaborative = self.collaborative()
        hypergraph = self.hypergraph_embeddings(collaborative[self.n_users:])
        final = self.final(self.local(collaborative), hypergraph)
        u, p, n = final[users], final[self.n_users + positives], final[self.n_users + negatives]
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        image_users, image_items = hypergraph["image"].split([self.n_users, self.n_items])
        text_users, text_items = hypergraph["text"].split([self.n_users, self.n_items])
        contrastive = self.cl_weight * (
            summed_nce(image_users[users], text_users[users], text_users, TEMPERATURE)
            + summed_nce(image_items[positives], text_items[positives], text_items, TEMPERATURE)
        )
        regulariser = self.reg_weight * plain_norms(u, p, n, divisor=users.shape[0])
        return {"loss": ranking + contrastive + regulariser, "bpr": ranking, "cl": contrastive, "reg": regulariser}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Z's user and item rows with deterministic evaluation; None with the reference's noisy one,
        whose scores change with every call."""
        if not self.deterministic_eval:
            return None
        collaborative = self.collaborative()
        final = self.final(self.local(collaborative), self.hypergraph_embeddings(collaborative[self.n_users:]))
        return final[: self.n_users], final[self.n_users:]

    def scorer(self) -> ScoreFunction:
        """Scores from Z; the local part is computed once, the hypergraph part per call unless deterministic."""
        if self.deterministic_eval:
            return super().scorer()
        collaborative = self.collaborative()
        local = self.local(collaborative)
        collaborative_items = collaborative[self.n_users:]

        def score(user_ids: torch.Tensor) -> torch.Tensor:
            final = self.final(local, self.hypergraph_embeddings(collaborative_items))
            return final[user_ids.to(final.device)] @ final[self.n_users:].T

        return score
