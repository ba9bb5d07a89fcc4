"""FREEDOM: a frozen item–item content graph and a degree-sensitively pruned user–item graph.

Zhou and Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM Multimedia 2023. Computation as in the authors' implementation, which MMRec
carries unchanged (docs/baselines.md §7):

- frozen item graph S = α·KNN-bin(F_v, k) + (1 − α)·KNN-bin(F_t, k), built once from the raw
  features (α = ``mm_image_weight``; with one modality, that modality's graph alone);
- before every epoch, M = int((1 − ρ)·|ℰ|) training edges are drawn without replacement with
  probability ∝ 1/sqrt(d_u·d_i) (full-graph degrees), ρ = ``dropout`` being the fraction
  *dropped*; the survivors, entered in both directions, get 1/sqrt(d'_u·d'_i) with the degrees d'
  of the kept subgraph. Training propagates on that graph, evaluation on the full Â_sym;
- z_u, I_g = LightGCN mean of ``n_ui_layers`` layers; z_i = I_g + S^{n_ii_layers} E_i (the item
  graph convolves the ID table; content never enters z);
- loss = BPR(z) + ``reg_weight`` · Σ_m BPR(z_u·P_m[i⁺], z_u·P_m[i⁻]) with P_m = Linear(F_m), the
  projected (fine-tuned) content of each modality. No L2 term.

Defaults (``FREEDOM.Settings``): d 64, ``knn_k`` 10, ``n_ii_layers`` 1 (``n_mm_layers`` in the
reference), ``n_ui_layers`` 2, ``mm_image_weight`` 0.1, learning rate 1e-3 without decay — the
authors' configuration, identical in MMRec. The authors search ``dropout`` ∈ {0.8, 0.9} ×
``reg_weight`` ∈ {0, 1e-5, 1e-4, 1e-3} and publish no per-dataset values; the defaults 0.8 and
1e-4 are the pair the FITMM authors' copy of the harness pins. ``freeze_features: false``: the
reference fine-tunes the raw features (they feed only the auxiliary losses; the graph stays the
one built from the initial features). ``mask_placeholders: true`` (project decision, docs/baselines.md
§1.6) gives items without real content in a modality only a self-loop in that modality's graph;
``false`` is the reference behaviour. Placeholder rows are the mean of the real rows either way.

Work per batch: the auxiliary losses project only the batch's distinct items (the reference projects
every item on every batch; the loss is the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.adjacency import layer_mean, scipy_to_torch, sparse_mm, symmetric_normalized
from fitmm.graph.knn import mix_graphs
from fitmm.models.base import Recommender, batch_rows, xavier_uniform_table
from fitmm.models.content import available_content, content_knn_graph, register_features
from fitmm.models.losses import bpr_loss
from fitmm.models.registry import register
from fitmm.settings import setting


@register("freedom")
class FREEDOM(Recommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings and content projections", minimum=1)
        n_ui_layers: int = setting(2, "LightGCN layers over the (pruned) user–item graph", minimum=0)
        n_ii_layers: int = setting(1, "item–item graph convolutions of the ID table", minimum=0)
        knn_k: int = setting(10, "neighbours per item in the binary kNN graph of each modality", minimum=1)
        mm_image_weight: float = setting(0.1, "weight of the image graph in the frozen item graph",
                                         minimum=0, maximum=1)
        dropout: float = setting(0.8, "fraction of training edges dropped per epoch", minimum=0, maximum=1)
        reg_weight: float = setting(0.0001, "weight of the content BPR losses", minimum=0)
        freeze_features: bool = setting(False, "keep the raw content features constant (the reference "
                                               "fine-tunes them)")
        mask_placeholders: bool = setting(True, "items without real content get only a self-loop in that "
                                                "modality's graph")

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        self.n_ui_layers = settings.n_ui_layers
        self.n_ii_layers = settings.n_ii_layers
        self.dropout = settings.dropout
        self.reg_weight = settings.reg_weight
        content = available_content(dataset, self.registry_name)
        self.modalities = tuple(content)

        self.user_embedding = xavier_uniform_table(self.n_users, settings.embedding_size)
        self.item_embedding = xavier_uniform_table(self.n_items, settings.embedding_size)
        self.projections = nn.ModuleDict()
        graphs = {}
        for name, (features, mask) in content.items():
            register_features(self, f"{name}_features", features, trainable=not settings.freeze_features)
            self.projections[name] = nn.Linear(features.shape[1], settings.embedding_size)
            graphs[name] = content_knn_graph(features, mask, settings.knn_k, weighting="binary",
                                             mask_placeholders=settings.mask_placeholders, model=self.registry_name,
                                             modality=name)
        if len(graphs) == 2:
            item_graph = mix_graphs(graphs["image"], graphs["text"], settings.mm_image_weight)
        else:
            (item_graph,) = graphs.values()
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("item_graph_t", item_graph.t().coalesce(), persistent=False)

        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)
        edges = dataset.train.tocoo()
        edge_users = torch.from_numpy(edges.row.astype("int64"))
        edge_items = torch.from_numpy(edges.col.astype("int64"))
        user_degree = torch.bincount(edge_users, minlength=self.n_users).double()
        item_degree = torch.bincount(edge_items, minlength=self.n_items).double()
        self.register_buffer("edge_users", edge_users, persistent=False)
        self.register_buffer("edge_items", edge_items, persistent=False)
        self.register_buffer(
            "edge_keep_weights", (user_degree[edge_users] * item_degree[edge_items]).rsqrt().float(), persistent=False
        )
        self.register_buffer("training_adjacency", self.pruned_adjacency(), persistent=False)

    def pruned_adjacency(self) -> torch.Tensor:
        """A fresh degree-sensitive sample of the training graph, N×N, symmetric, renormalised.

        With ``dropout`` ≤ 0 nothing is dropped and the full Â_sym is returned.
        """
        if self.dropout <= 0:
            return self.adjacency
        n_kept = int(self.edge_users.numel() * (1.0 - self.dropout))
        kept = torch.multinomial(self.edge_keep_weights, n_kept, replacement=False)
        users, items = self.edge_users[kept], self.edge_items[kept]
        user_degree = torch.bincount(users, minlength=self.n_users).float()
        item_degree = torch.bincount(items, minlength=self.n_items).float()
        values = (user_degree[users] * item_degree[items]).rsqrt()
        item_nodes = items + self.n_users
        indices = torch.stack([torch.cat([users, item_nodes]), torch.cat([item_nodes, users])])
        n_nodes = self.n_users + self.n_items
        graph = torch.sparse_coo_tensor(indices, torch.cat([values, values]), (n_nodes, n_nodes),
                                        check_invariants=False, device=indices.device)
        return graph.coalesce().to_sparse_csr()

    def on_epoch_start(self, epoch: int) -> None:
        """Resample the pruned user–item graph (once per epoch, as the reference)."""
        self.training_adjacency = self.pruned_adjacency()

    def propagate(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_u, z_i): LightGCN mean over ``adjacency`` plus the item-graph convolution of E_i."""
        item_graph_part = self.item_embedding
        for _ in range(self.n_ii_layers):
            item_graph_part = sparse_mm(self.item_graph, item_graph_part, self.item_graph_t)
        final = layer_mean(adjacency, torch.cat([self.user_embedding, self.item_embedding]), self.n_ui_layers)
        return final[: self.n_users], final[self.n_users:] + item_graph_part

    def projected_content(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        """P_m rows of ``items``: Linear(F_m) of the (fine-tuned) raw content."""
        return self.projections[modality](getattr(self, f"{modality}_features")[items])

    def loss(self, users, positives, negatives):
        user_final, item_final = self.propagate(self.training_adjacency)
        u, p, n = user_final[users], item_final[positives], item_final[negatives]
        parts = {"bpr": bpr_loss((u * p).sum(1), (u * n).sum(1))}
        batch_items, rows = batch_rows(torch.cat([positives, negatives]))
        for modality in self.modalities:
            content_p, content_n = self.projected_content(modality, batch_items)[rows].split(users.shape[0])
            parts[f"bpr_{modality}"] = bpr_loss((u * content_p).sum(1), (u * content_n).sum(1))
        auxiliary = sum(parts[f"bpr_{modality}"] for modality in self.modalities)
        return {"loss": parts["bpr"] + self.reg_weight * auxiliary, **parts}

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.adjacency)
