"""MGCN: multi-view graph convolution with a behaviour-guided purifier and a behaviour-aware fuser.

Yu, Li, Wang, Tang, Zhang and Wei, "Multi-View Graph Convolutional Network for Multimedia
Recommendation", ACM Multimedia 2023. Computation as in the authors' implementation, which MMRec
carries unchanged (docs/baselines.md §9):

- behaviour view B = LightGCN mean of ``n_ui_layers`` layers over Â_sym;
- purifier: the item ID table gated by σ(Linear(projected content)), per modality;
- item–item views: the purified items propagated ``n_ii_layers`` times over the frozen KNN-w graph
  of the raw features, users reached through R̂: M_m = [R̂ X_m ; X_m];
- fuser: β = softmax over the two modalities of a shared attention, common part C = Σ β_m M_m,
  side = (G_v ⊙ (M_v − C) + G_t ⊙ (M_t − C) + C) / 3 with preference gates G_m = σ(Linear(B));
- final Z = B + side; loss = BPR + ``reg_weight`` · HS(z_u, z_i⁺, z_i⁻) (÷ 2048) +
  ``cl_weight`` · [InfoNCE₀.₂(side_i⁺, B_i⁺) + InfoNCE₀.₂(side_u, B_u)].

Defaults (``MGCN.Settings``): d 64, ``n_ui_layers`` 2, ``n_ii_layers`` 1, ``knn_k`` 10,
``reg_weight`` 1e-4, learning rate 1e-3 decayed by 0.96 per 50 epochs — MMRec's configuration,
identical to the authors'. ``cl_weight`` 0.01: MMRec searches {0.001, 0.01, 0.1} and publishes no
per-dataset value; the authors' repository configuration fixes 0.01. Content features are
fine-tuned (``freeze_features: false``) as in the reference. ``mask_placeholders: true`` (a project
decision, docs/baselines.md §1.6) gives items without real content only a self-loop in that modality's
graph; ``false`` reproduces the reference, where placeholder rows are ordinary content. Either
way placeholder rows are replaced by the mean of the real rows (``fitmm.models.content``).

The fuser's softmax runs over the two modalities, as in MMRec's copy and docs/baselines.md; note that
the revision of the authors' repository stored at commit 09095cb builds it with ``dim=0`` (over
nodes), which is not reproduced here.

The parts SMORE shares with MGCN (ID tables, fine-tuned features and their projections, the
behaviour view, the KNN-w item views, the loss) live in :class:`MultiViewRecommender`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fitmm.data.dataset import MODALITIES, Dataset
from fitmm.graph.adjacency import (
    layer_mean,
    scipy_to_torch,
    sparse_mm,
    sparse_transpose,
    symmetric_normalized,
    to_csr,
    user_item_block,
)
from fitmm.models.base import Recommender, xavier_uniform_table
from fitmm.models.content import content_features, content_knn_graph, register_features
from fitmm.models.losses import REFERENCE_BATCH_SIZE, bpr_loss, half_squares, info_nce
from fitmm.models.registry import register
from fitmm.settings import setting

CONTRASTIVE_TEMPERATURE = 0.2
"""InfoNCE temperature, hard-coded in the MGCN and SMORE references."""


def sigmoid_gate(width: int) -> nn.Sequential:
    """σ(Linear(width → width)) with PyTorch's default Linear init: the references' gates."""
    return nn.Sequential(nn.Linear(width, width), nn.Sigmoid())


class MultiViewRecommender(Recommender):
    """Behaviour view plus content item–item views, as MGCN and SMORE build them.

    Reads the settings MGCN and SMORE share (``embedding_size``, ``n_ui_layers``, ``n_ii_layers``,
    ``reg_weight``, ``cl_weight``, ``freeze_features``, ``mask_placeholders``) from ``settings``;
    ``knn_k`` gives each modality's graph size. Holds the Xavier-uniform ID tables, the content
    tables (fine-tuned unless ``freeze_features``) with their Linear projections to
    ``embedding_size``, Â_sym, R̂ (and its transpose), and per modality the frozen KNN-w graph of
    the raw features (and its transpose, for the backward).
    Subclasses implement :meth:`views`, returning the behaviour view B and the side view, both
    (users + items)×d; the final embedding is B + side.
    """

    def __init__(self, dataset: Dataset, settings, knn_k: dict[str, int]) -> None:
        super().__init__(dataset)
        self.n_ui_layers = settings.n_ui_layers
        self.n_ii_layers = settings.n_ii_layers
        self.reg_weight = settings.reg_weight
        self.cl_weight = settings.cl_weight
        embedding_size = settings.embedding_size
        content = {name: content_features(dataset, name, self.registry_name) for name in MODALITIES}

        self.user_embedding = xavier_uniform_table(self.n_users, embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, embedding_size)
        for name, (features, _) in content.items():
            register_features(self, f"{name}_features", features, trainable=not settings.freeze_features)
        self.image_projection = nn.Linear(content["image"][0].shape[1], embedding_size)
        self.text_projection = nn.Linear(content["text"][0].shape[1], embedding_size)

        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)
        user_item = user_item_block(dataset.train)
        self.register_buffer("user_item", scipy_to_torch(user_item), persistent=False)
        self.register_buffer("user_item_t", scipy_to_torch(user_item.T), persistent=False)
        for name, (features, mask) in content.items():
            graph = content_knn_graph(features, mask, knn_k[name], weighting="cosine",
                                      mask_placeholders=settings.mask_placeholders, model=self.registry_name,
                                      modality=name)
            self.register_item_graph(name, graph)

    def register_item_graph(self, name: str, graph: torch.Tensor) -> None:
        """Keep a fixed item–item graph and its transpose as non-persistent CSR buffers."""
        self.register_buffer(f"{name}_graph", to_csr(graph), persistent=False)
        self.register_buffer(f"{name}_graph_t", sparse_transpose(graph), persistent=False)

    def projected_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """P_v and P_t: every item's image and text content projected to the embedding width."""
        return self.image_projection(self.image_features), self.text_projection(self.text_features)

    def behaviour_view(self) -> torch.Tensor:
        """B: the LightGCN mean of layers 0..n_ui_layers of [E_u ; E_i] over Â_sym."""
        return layer_mean(self.adjacency, torch.cat([self.user_embedding, self.item_embedding]), self.n_ui_layers)

    def item_item_view(self, graph_name: str, items: torch.Tensor) -> torch.Tensor:
        """[R̂ X ; X] with X = S^{n_ii_layers} ``items`` over the item graph ``graph_name``."""
        graph, graph_t = getattr(self, f"{graph_name}_graph"), getattr(self, f"{graph_name}_graph_t")
        for _ in range(self.n_ii_layers):
            items = sparse_mm(graph, items, graph_t)
        return torch.cat([sparse_mm(self.user_item, items, self.user_item_t), items])

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(behaviour view, side view), both (users + items)×d."""
        raise NotImplementedError

    def loss(self, users, positives, negatives):
        behaviour, side = self.views()
        final = behaviour + side
        positive_rows, negative_rows = self.n_users + positives, self.n_users + negatives
        u, p, n = final[users], final[positive_rows], final[negative_rows]
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        regulariser = self.reg_weight * half_squares(u, p, n, divisor=REFERENCE_BATCH_SIZE)
        contrastive = self.cl_weight * (
            info_nce(side[positive_rows], behaviour[positive_rows], CONTRASTIVE_TEMPERATURE)
            + info_nce(side[users], behaviour[users], CONTRASTIVE_TEMPERATURE)
        )
        return {"loss": ranking + regulariser + contrastive, "bpr": ranking, "reg": regulariser, "cl": contrastive}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        behaviour, side = self.views()
        final = behaviour + side
        return final[: self.n_users], final[self.n_users:]


@register("mgcn")
class MGCN(MultiViewRecommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings and content projections", minimum=1)
        n_ui_layers: int = setting(2, "LightGCN layers of the behaviour view", minimum=0)
        n_ii_layers: int = setting(1, "item–item propagations per modality", minimum=0)
        knn_k: int = setting(10, "neighbours per item in the image and text kNN graphs", minimum=1)
        reg_weight: float = setting(0.0001, "weight of the half squares of the batch embeddings (÷ 2048)",
                                    minimum=0)
        cl_weight: float = setting(0.01, "InfoNCE weight", minimum=0)
        freeze_features: bool = setting(False, "keep the raw content features constant (the reference "
                                               "fine-tunes them)")
        mask_placeholders: bool = setting(True, "items without real content get only a self-loop in that "
                                                "modality's graph")

    training_defaults: ClassVar[dict] = {"lr_decay": 0.96}

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset, settings, knn_k={"image": settings.knn_k, "text": settings.knn_k})
        self.attention_query = nn.Sequential(
            nn.Linear(settings.embedding_size, settings.embedding_size), nn.Tanh(),
            nn.Linear(settings.embedding_size, 1, bias=False),
        )
        self.image_purifier = sigmoid_gate(settings.embedding_size)
        self.text_purifier = sigmoid_gate(settings.embedding_size)
        self.image_preference = sigmoid_gate(settings.embedding_size)
        self.text_preference = sigmoid_gate(settings.embedding_size)

    def purified_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """X_v, X_t: the item ID table gated by σ(Linear(P_v)) and σ(Linear(P_t)) (items×d)."""
        image, text = self.projected_features()
        return self.item_embedding * self.image_purifier(image), self.item_embedding * self.text_purifier(text)

    def modality_weights(self, image_view: torch.Tensor, text_view: torch.Tensor) -> torch.Tensor:
        """(β_v, β_t) per node (nodes×2): softmax over the two modalities of the shared query."""
        logits = torch.cat([self.attention_query(image_view), self.attention_query(text_view)], dim=1)
        return logits.softmax(dim=1)

    def fuse(self, image_view: torch.Tensor, text_view: torch.Tensor, behaviour: torch.Tensor) -> torch.Tensor:
        """The side view (G_v ⊙ (M_v − C) + G_t ⊙ (M_t − C) + C) / 3, C = β_v M_v + β_t M_t."""
        weights = self.modality_weights(image_view, text_view)
        common = weights[:, :1] * image_view + weights[:, 1:] * text_view
        image_specific = self.image_preference(behaviour) * (image_view - common)
        text_specific = self.text_preference(behaviour) * (text_view - common)
        return (image_specific + text_specific + common) / 3

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        image_items, text_items = self.purified_items()
        behaviour = self.behaviour_view()
        side = self.fuse(self.item_item_view("image", image_items), self.item_item_view("text", text_items), behaviour)
        return behaviour, side
