"""SMORE: spectral modality fusion and modality-aware preference over MGCN-style views.

Ong and Khong, "Spectrum-based Modality Representation Fusion Graph Convolutional Network for
Multimodal Recommendation", WSDM 2025. Computation as in the authors' implementation, which MMRec
carries unchanged (docs/baselines.md §11):

- spectral filtering along the 64-d feature axis (orthonormal rfft/irfft, 33 complex bins):
  Ṽ = irfft(rfft(P_v) ⊙ W_v), T̃ = irfft(rfft(P_t) ⊙ W_t) and the fusion modality
  F̃ = irfft(rfft(P_v) ⊙ rfft(P_t) ⊙ W_f), a circular convolution of P_v and P_t divided by √64;
  the filters' real and imaginary parts start i.i.d. N(0, 1);
- each of Ṽ, T̃, F̃ purifies the item ID table through its own sigmoid gate; the purified items
  are propagated over the frozen KNN-w image graph (k = ``image_knn_k``), text graph
  (k = ``text_knn_k``) and their element-wise max (the fusion graph, not re-normalised), and reach
  users through R̂ (:class:`~fitmm.models.mgcn.MultiViewRecommender`);
- modality-aware preference: A_m = softmax over the 64 features of q_m(M_f) for m ∈ {v, t};
  side = mean(G_v ⊙ A_v ⊙ M_v, G_t ⊙ A_t ⊙ M_t, G_f ⊙ M_f), with behaviour gates
  G_m = σ(Linear(B)) passed through dropout (``gate_dropout``) in training only;
- final Z = B + side; the loss is MGCN's (BPR + HS ÷ 2048 + InfoNCE₀.₂ of side vs behaviour).

Defaults (``SMORE.Settings``): the authors' published best values for Amazon Clothing, the
configuration FITMM's authors pin in their copy of SMORE — ``n_ui_layers`` 3, ``n_ii_layers`` 1,
``image_knn_k`` 40, ``text_knn_k`` 10, ``cl_weight`` 0.01, ``reg_weight`` 1e-5, ``gate_dropout`` 0 —
with learning rate 1e-3 decayed by 0.96 per 50 epochs (MMRec's configuration); the Baby and Sports
rows are the presets ``baby`` and ``sports``. Features are fine-tuned as in the reference
(``freeze_features: false``); ``mask_placeholders`` and the imputation of placeholder rows are as
in MGCN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.graph.knn import max_pool_graphs
from fitmm.models.mgcn import MultiViewRecommender, sigmoid_gate
from fitmm.models.registry import register
from fitmm.settings import setting


def attention_query(width: int) -> nn.Sequential:
    """Linear(width → width) → tanh → Linear(width → width, no bias): a per-feature attention logit."""
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width, bias=False))


@register("smore")
class SMORE(MultiViewRecommender):
    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "width of the ID embeddings and content projections", minimum=1)
        n_ui_layers: int = setting(3, "LightGCN layers of the behaviour view", minimum=0)
        n_ii_layers: int = setting(1, "item–item propagations per modality", minimum=0)
        image_knn_k: int = setting(40, "neighbours per item in the image kNN graph", minimum=1)
        text_knn_k: int = setting(10, "neighbours per item in the text kNN graph", minimum=1)
        reg_weight: float = setting(0.00001, "weight of the half squares of the batch embeddings (÷ 2048)",
                                    minimum=0)
        cl_weight: float = setting(0.01, "InfoNCE weight", minimum=0)
        gate_dropout: float = setting(0.0, "dropout on the behaviour preference gates", minimum=0, maximum=1)
        freeze_features: bool = setting(False, "keep the raw content features constant (the reference "
                                               "fine-tunes them)")
        mask_placeholders: bool = setting(True, "items without real content get only a self-loop in the "
                                                "image and text graphs")

    training_defaults: ClassVar[dict] = {"lr_decay": 0.96}

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset, settings, knn_k={"image": settings.image_knn_k, "text": settings.text_knn_k})
        self.gate_dropout = settings.gate_dropout
        self.register_item_graph("fusion", max_pool_graphs(self.image_graph, self.text_graph))
        self.image_query = attention_query(settings.embedding_size)
        self.text_query = attention_query(settings.embedding_size)
        self.image_purifier = sigmoid_gate(settings.embedding_size)
        self.text_purifier = sigmoid_gate(settings.embedding_size)
        self.fusion_purifier = sigmoid_gate(settings.embedding_size)
        self.image_preference = sigmoid_gate(settings.embedding_size)
        self.text_preference = sigmoid_gate(settings.embedding_size)
        self.fusion_preference = sigmoid_gate(settings.embedding_size)
        n_bins = settings.embedding_size // 2 + 1
        self.image_filter = nn.Parameter(torch.randn(n_bins, 2))  # (real, imaginary) per frequency bin
        self.text_filter = nn.Parameter(torch.randn(n_bins, 2))
        self.fusion_filter = nn.Parameter(torch.randn(n_bins, 2))

    def spectral_filter(
        self, image: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ṽ, T̃, F̃: the filtered image and text projections and their filtered spectral product."""
        width = image.shape[1]
        image_spectrum = torch.fft.rfft(image, dim=1, norm="ortho")
        text_spectrum = torch.fft.rfft(text, dim=1, norm="ortho")

        def filtered(spectrum: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft(spectrum * torch.view_as_complex(weights), n=width, dim=1, norm="ortho")

        return (
            filtered(image_spectrum, self.image_filter),
            filtered(text_spectrum, self.text_filter),
            filtered(image_spectrum * text_spectrum, self.fusion_filter),
        )

    def preference_attention(self, fusion_view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A_v, A_t (nodes×d): softmax over the features of the image and text queries of M_f."""
        return self.image_query(fusion_view).softmax(dim=1), self.text_query(fusion_view).softmax(dim=1)

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        image, text, fusion = self.spectral_filter(*self.projected_features())
        image_items = self.item_embedding * self.image_purifier(image)
        text_items = self.item_embedding * self.text_purifier(text)
        fusion_items = self.item_embedding * self.fusion_purifier(fusion)
        behaviour = self.behaviour_view()
        image_view = self.item_item_view("image", image_items)
        text_view = self.item_item_view("text", text_items)
        fusion_view = self.item_item_view("fusion", fusion_items)
        image_attention, text_attention = self.preference_attention(fusion_view)

        def preference(gate: nn.Module) -> torch.Tensor:
            return F.dropout(gate(behaviour), p=self.gate_dropout, training=self.training)

        side = (
            preference(self.image_preference) * image_attention * image_view
            + preference(self.text_preference) * text_attention * text_view
            + preference(self.fusion_preference) * fusion_view
        ) / 3
        return behaviour, side
