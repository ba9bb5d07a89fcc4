"""LATTICE: a learned item–item graph, skip-connected to the raw-feature graph, on a LightGCN backbone.

Zhang, Zhu, Liu, Wu, Wang and Wang, "Mining Latent Structures for Multimedia Recommendation",
ACM Multimedia 2021. Computation as in the authors' implementation and MMRec's port of it
(docs/baselines.md §6):

- backbone: (U_cf ; I_cf) = mean of layers 0..``n_ui_layers`` of [E_u ; E_i] over Â_row+I, the
  row-normalised user–item graph with self-loops (not Â_sym);
- initial graphs S⁰_m = KNN-w(F_m, k), built once from the raw features and fixed;
- learned graphs G_m = top-k of cos(P_m), P_m = Linear_m(F_m) of the fine-tuned features, cosine
  values kept, un-normalised; modality weights w = softmax(θ), θ initialised to 0.5 each;
- S = (1 − λ)·symnorm(Σ_m w_m G_m) + λ·Σ_m w_m S⁰_m (learned graphs mixed *then* normalised,
  initial ones normalised *then* mixed), λ = ``lambda_coeff``;
- H = S^{n_ii_layers} E_i; z_u = U_cf, z_i = I_cf + H/‖H‖ (rows of H L2-normalised);
- loss = BPR(z) + ``reg_weight`` · ½(‖z_u‖² + ‖z_i⁺‖² + ‖z_i⁻‖²)_F / 2048.

S is rebuilt, with gradient, on the first training batch of every epoch (``on_epoch_start`` sets
the flag); the other batches of the epoch use a detached copy, so the projections, θ and the
feature tables get gradient once per epoch. Every scoring rebuilds S from the current parameters.
With a single modality, w = (1) and S uses that modality's graphs alone, as in the reference.

Memory. The reference holds the learned graph, and the similarity it is cut from, as dense I×I
matrices (several of them, ≈ 2.1 GB each on Amazon Clothing). Here G_m is kept as top-k neighbour
lists (I×k columns and values), the similarities are computed in blocks of
``SIMILARITY_BLOCK_ROWS`` rows without gradient and only the kept cosines are recomputed with
gradient, so the extra memory is one block×I similarity slab plus O(I·k·M·d) for the convolution
through the lists (M modalities; ≈ 120 MB on Clothing) — the same values, no I×I matrix.

Guards. A row of the mixed learned graph whose degree is ≤ 0 (possible in principle: projected
cosines can be negative) gets a factor 0 instead of the reference's NaN; how many rows that hit at
the latest build is reported in ``diagnostics()``. The HS divisor is the references' configured
batch size, 2048, for every batch (the last, shorter one included).

Defaults (``LATTICE.Settings``): d 64, ``feat_embed_dim`` 64, ``n_ui_layers`` 2
(``weight_size`` [64, 64] in the reference), ``n_ii_layers`` 1, ``knn_k`` 10, ``lambda_coeff`` 0.9,
learning-rate decay 0.96 per 50 epochs — MMRec's configuration, the same as the authors'.
Learning rate 5e-4 and ``reg_weight`` 1e-5: the defaults of the authors' code, whose default
dataset is Baby (MMRec searches lr ∈ {1e-4, 5e-4, 1e-3, 5e-3} × reg ∈ {0, 1e-5, 1e-4, 1e-3} and
publishes no per-dataset values). ``freeze_features: false`` as the reference.
``mask_placeholders: true`` (project decision, docs/baselines.md §1.6): items without real content in a
modality get only a self-loop in that modality's initial *and* learned graph and are nobody's
neighbour there; ``false`` is the reference behaviour. Placeholder rows are the mean of the real
rows either way (``fitmm.models.content``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.adjacency import layer_mean, row_normalized_with_self_loops, scipy_to_torch, sparse_mm
from fitmm.models.base import Recommender, xavier_uniform_table
from fitmm.models.content import available_content, content_knn_graph, register_features
from fitmm.models.losses import REFERENCE_BATCH_SIZE, bpr_loss, half_squares
from fitmm.models.registry import register
from fitmm.settings import setting

SIMILARITY_BLOCK_ROWS = 2048
"""Rows of the item–item cosine similarity computed at a time when the learned graph is built."""


def learned_neighbours(projected: torch.Tensor, k: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """G_m as neighbour lists: each item's k most cosine-similar items and the cosines, un-normalised.

    Returns ``(columns, values)``, both items×k; ``values`` is differentiable in ``projected``.
    With ``mask`` (True = real content), a placeholder row gets a self-loop of weight 1 (and k − 1
    empty entries: itself with weight 0) and is never a neighbour of a real row.
    """
    n_items = projected.shape[0]
    unit = F.normalize(projected, dim=1)
    rows = torch.arange(n_items, device=unit.device) if mask is None else mask.nonzero().squeeze(1)
    candidates = unit[rows]
    with torch.no_grad():
        picks = torch.cat([
            (candidates[start:start + SIMILARITY_BLOCK_ROWS] @ candidates.T).topk(k, dim=1).indices
            for start in range(0, rows.numel(), SIMILARITY_BLOCK_ROWS)
        ])
    neighbours = rows[picks]
    cosines = (candidates.unsqueeze(1) * unit[neighbours]).sum(dim=-1)
    if mask is None:
        return neighbours, cosines
    columns = torch.arange(n_items, device=unit.device).unsqueeze(1).repeat(1, k)
    columns[rows] = neighbours
    self_loops = torch.zeros(n_items, k, dtype=cosines.dtype, device=cosines.device)
    self_loops[:, 0] = 1.0
    return columns, self_loops.index_copy(0, rows, cosines)


@dataclass(frozen=True)
class ItemGraph:
    """S, in the pieces it is applied with: the normalised learned part and the modality weights.

    ``columns``/``values`` (items × k·M): symnorm(Σ_m w_m G_m) as neighbour lists;
    ``modality_weights`` (M): w, which also mixes the fixed initial graphs.
    """

    columns: torch.Tensor
    values: torch.Tensor
    modality_weights: torch.Tensor

    def detach(self) -> ItemGraph:
        return ItemGraph(self.columns, self.values.detach(), self.modality_weights.detach())


@register("lattice")
class LATTICE(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings", minimum=1)
        feat_embed_dim: int = setting(64, "width of the content projections the learned graph is built from",
                                      minimum=1)
        n_ui_layers: int = setting(2, "LightGCN backbone layers", minimum=0)
        n_ii_layers: int = setting(1, "item-graph convolutions", minimum=0)
        knn_k: int = setting(10, "neighbours per item in the initial and learned graphs", minimum=1)
        lambda_coeff: float = setting(0.9, "weight of the initial (raw-feature) graph in the skip connection",
                                      minimum=0, maximum=1)
        reg_weight: float = setting(0.00001, "weight of the half squares of the batch embeddings (÷ 2048)",
                                    minimum=0)
        freeze_features: bool = setting(False, "keep the raw content features constant (the reference "
                                               "fine-tunes them)")
        mask_placeholders: bool = setting(True, "items without real content get only a self-loop in that "
                                                "modality's graphs")

    training_defaults: ClassVar[dict] = {"learning_rate": 0.0005, "lr_decay": 0.96}

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.n_ui_layers = settings.n_ui_layers
        self.n_ii_layers = settings.n_ii_layers
        self.knn_k = settings.knn_k
        self.lambda_coeff = settings.lambda_coeff
        self.reg_weight = settings.reg_weight
        content = available_content(dataset, self.registry_name)
        self.modalities = tuple(content)

        self.user_embedding = xavier_uniform_table(self.n_users, settings.embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, settings.embedding_size)
        self.projections = nn.ModuleDict()
        for name, (features, mask) in content.items():
            register_features(self, f"{name}_features", features, trainable=not settings.freeze_features)
            self.projections[name] = nn.Linear(features.shape[1], settings.feat_embed_dim)
            self.register_buffer(f"{name}_mask", mask if settings.mask_placeholders else None, persistent=False)
            graph = content_knn_graph(features, mask, settings.knn_k, weighting="cosine",
                                      mask_placeholders=settings.mask_placeholders,
                                      model=self.registry_name, modality=name)
            self.register_buffer(f"{name}_graph", graph, persistent=False)
            self.register_buffer(f"{name}_graph_t", graph.t().coalesce(), persistent=False)
        self.modality_logits = nn.Parameter(torch.full((len(self.modalities),), 0.5))

        adjacency = row_normalized_with_self_loops(dataset.train)
        self.register_buffer("adjacency", scipy_to_torch(adjacency), persistent=False)
        self.register_buffer("adjacency_t", scipy_to_torch(adjacency.T), persistent=False)

        self.rebuild_graph = True
        self.epoch_graph: ItemGraph | None = None
        self.nonpositive_degree_rows = 0

    def on_epoch_start(self, epoch: int) -> None:
        """Mark S for rebuilding on the epoch's first training batch."""
        self.rebuild_graph = True

    def build_item_graph(self) -> ItemGraph:
        """S from the current projections and modality weights (differentiable in both)."""
        weights = self.modality_logits.softmax(dim=0)
        columns, values = [], []
        for weight, modality in zip(weights, self.modalities):
            projected = self.projections[modality](getattr(self, f"{modality}_features"))
            modality_columns, cosines = learned_neighbours(projected, self.knn_k, getattr(self, f"{modality}_mask"))
            columns.append(modality_columns)
            values.append(weight * cosines)
        columns, values = torch.cat(columns, dim=1), torch.cat(values, dim=1)
        degree = values.sum(dim=1)
        positive = degree > 0
        self.nonpositive_degree_rows = int((~positive).sum())
        scale = torch.where(positive, torch.where(positive, degree, 1.0).rsqrt(), 0.0)
        return ItemGraph(columns, scale.unsqueeze(1) * values * scale[columns], weights)

    def convolve_items(self, graph: ItemGraph) -> torch.Tensor:
        """H = S^{n_ii_layers} E_i."""
        h = self.item_embedding
        for _ in range(self.n_ii_layers):
            learned = (graph.values.unsqueeze(-1) * h[graph.columns]).sum(dim=1)
            initial = sum(
                weight * sparse_mm(getattr(self, f"{modality}_graph"), h, getattr(self, f"{modality}_graph_t"))
                for weight, modality in zip(graph.modality_weights, self.modalities)
            )
            h = (1 - self.lambda_coeff) * learned + self.lambda_coeff * initial
        return h

    def propagate(self, graph: ItemGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_u, z_i): the backbone's layer mean over Â_row+I, items plus the row-normalised H."""
        backbone = layer_mean(self.adjacency, torch.cat([self.user_embedding, self.item_embedding]),
                              self.n_ui_layers, self.adjacency_t)
        items = backbone[self.n_users:] + F.normalize(self.convolve_items(graph), dim=1)
        return backbone[: self.n_users], items

    def loss(self, users, positives, negatives):
        if self.rebuild_graph:
            graph = self.build_item_graph()
            self.epoch_graph = graph.detach()
            self.rebuild_graph = False
        else:
            graph = self.epoch_graph
        user_final, item_final = self.propagate(graph)
        u, p, n = user_final[users], item_final[positives], item_final[negatives]
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        regulariser = self.reg_weight * half_squares(u, p, n, divisor=REFERENCE_BATCH_SIZE)
        return {"loss": ranking + regulariser, "bpr": ranking, "reg": regulariser}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.build_item_graph())

    def diagnostics(self) -> dict:
        weights = self.modality_logits.detach().softmax(dim=0).tolist()
        return {
            "modality_weights": dict(zip(self.modalities, weights)),
            "learned_graph_nonpositive_degree_rows": self.nonpositive_degree_rows,
        }
