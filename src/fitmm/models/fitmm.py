"""FITMM: frequency-aware multimodal recommendation with information-theoretic regularisation.

Yang et al., "FITMM: Adaptive Frequency-Aware Multimodal Recommendation via Information-Theoretic
Representation Learning", ACM Multimedia 2025, pp. 6193–6202. Implemented as ``docs/method.md``
describes it (section numbers below refer to it):

1. one LightGCN-style encoder per modality (ID, image, text): users have a free preference matrix,
   items their ID table or their raw content through a two-layer MLP; layer 0 is row-normalised and
   the encoder output is the sum of layers 0..L (§1); user rows are weighted per modality;
2. a graph-enhanced view: items mixed over a frozen content kNN graph (binary top-k, image weight
   λ), users their layer-0 preferences, optionally mixed over a user–user content graph (§2);
3. each view is split, per modality, into ``n_bands`` orthogonal spectral bands from the d×d Gram
   matrix (``fitmm.graph.spectral``), and the two views are added band by band (§3–4);
4. a residual task-adaptive gate per side, g(x) = 1 + s·σ(Wx + b) ("positive") or 1 + s·tanh(·)
   ("dual"), and learnable band weights ω = σ(θ) combine the bands (§5);
5. the losses, each chosen once when the model is built: BCE (authors) or BPR; the authors' gate
   IB surrogate or the band-allocation IB (``fitmm.models.band_allocation``, which shuts weak
   bands off); the within-band cross-modal consistency loss or the authors' band-to-band
   variant, with the uniformity term (§6–8).

Missing content: an item whose mask says it has no content in a modality gets the mean of the real
rows as that modality's raw input (``fitmm.models.content``), no content kNN edges but a self-loop,
and no influence on other items' neighbourhoods. Absent modalities are skipped: FITMM runs with
one content modality, or with IDs alone.

Cost. The spectral bases need every row (one d×d Gram matrix per view, modality and side, and one
batched eigen-decomposition of them all); everything after them — the bands, the gated final
representation, the consistency and uniformity terms — is computed for the batch's distinct users
and items only, each weighted by its multiplicity, which equals the authors' computation over all
batch rows, duplicates included. Scoring forms Σ_k ω_k g_k B_k without materialising the bands
(``weighted_band_sum``). The authors' IB surrogate is a mean over every node's gate, as theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.errors import InputError
from fitmm.graph.adjacency import layer_sum, scipy_to_torch, sparse_mm, sparse_transpose, symmetric_normalized, to_csr
from fitmm.graph.knn import mix_graphs
from fitmm.graph.precision import in_fp32
from fitmm.graph.spectral import band_bases, band_energies, band_pieces, modality_grams, weighted_band_sum
from fitmm.models.band_allocation import SNR_SCALES, BandAllocation, GateSurrogate
from fitmm.models.base import Recommender, batch_rows, xavier_uniform_table
from fitmm.models.content import content_features, content_knn_graph, register_features
from fitmm.models.losses import batch_uniformity, bpr_loss
from fitmm.models.registry import register
from fitmm.settings import setting

log = logging.getLogger(__name__)

CONTENT_MODALITIES = ("image", "text")


def _content_graph(features: dict[str, tuple[torch.Tensor, torch.Tensor]], k: int, image_weight: float,
                   mask_placeholders: bool, nodes: str) -> torch.Tensor:
    """S = λ·S_image + (1−λ)·S_text over the content modalities present (either alone if only one)."""
    graphs = {
        name: content_knn_graph(table, mask, k, weighting="binary", mask_placeholders=mask_placeholders,
                                model="fitmm", modality=name, nodes=nodes)
        for name, (table, mask) in features.items()
    }
    if len(graphs) == 2:
        return to_csr(mix_graphs(graphs["image"], graphs["text"], image_weight))
    return to_csr(next(iter(graphs.values())))


class _UnitRows(torch.autograd.Function):
    """x / max(‖x‖, eps) along the last dimension, as ``F.normalize``, with a backward of a few
    passes, (ḡ − y (y·ḡ)) / max(‖x‖, eps), where autograd's composition makes about eight over the
    whole tensor: layer 0 of every node is normalised this way on every training step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        clamped = norms > eps
        norms.clamp_min_(eps)
        unit = x / norms
        ctx.save_for_backward(unit, norms, clamped)
        return unit

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        unit, norms, clamped = ctx.saved_tensors
        radial = (unit * grad).sum(dim=-1, keepdim=True).mul_(clamped)  # no radial part below eps
        return torch.addcmul(grad, unit, radial, value=-1.0).div_(norms), None


def _unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` with a cheaper backward (``_UnitRows``)."""
    return _UnitRows.apply(x, eps)


@in_fp32
def _pairwise_cosine_gaps(parts: torch.Tensor) -> torch.Tensor:
    """Per leading index, the mean over unordered pairs (a, b) of (1 − cos(parts[..., a, :], parts[..., b, :]))².

    ``parts`` is (…, P, w): P vectors per row, compared pairwise in one batched product; returns (…).
    """
    unit = F.normalize(parts, dim=-1)
    cosines = unit @ unit.mT  # (…, P, P)
    first, second = torch.triu_indices(parts.shape[-2], parts.shape[-2], offset=1, device=parts.device)
    return (1.0 - cosines[..., first, second]).square().mean(dim=-1)


@in_fp32
def _bce_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """The authors' loss: binary cross-entropy over the positive and the negative logits, averaged over both."""
    logits = torch.cat([positive_scores, negative_scores])
    targets = torch.cat([torch.ones_like(positive_scores), torch.zeros_like(negative_scores)])
    return F.binary_cross_entropy_with_logits(logits, targets)


class ResidualGate(nn.Module):
    """g(x) = 1 + s·σ(Wx + b) ("positive") or 1 + s·tanh(Wx + b) ("dual"): one factor per band (§5)."""

    def __init__(self, width: int, n_bands: int, direction: str, scale_init: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width, n_bands)
        self.scale = nn.Parameter(torch.tensor(scale_init))
        self.squash = torch.sigmoid if direction == "positive" else torch.tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.scale * self.squash(self.linear(x))


@dataclass
class View:
    """One side's undecomposed representations (§1–2): the plain one and the graph-enhanced one."""

    plain: torch.Tensor  # (n, width): user_rep or item_rep
    graph: torch.Tensor  # (n, width): user_graph or item_graph


@dataclass
class SideState:
    """One side after the bands and the gate, for the rows asked for (all rows, or a batch's)."""

    bands: torch.Tensor | None  # (M, r, width): Z_k = B_k(plain) + B_k(graph); None when not needed
    gate: torch.Tensor | None  # (r, M); None without a gate
    all_gates: torch.Tensor | None  # (n, M): every node's gate (the IB surrogate averages them all)
    final: torch.Tensor  # (r, width): Σ_k ω_k g_k Z_k


@dataclass
class Sides:
    user: SideState
    item: SideState


@register("fitmm")
class FITMM(Recommender):
    """FITMM: orthogonal spectral bands per modality, residual task-adaptive gate, IB regularisation."""

    @dataclass(frozen=True)
    class Settings:
        embedding_size: int = setting(64, "d, the width of each modality's block", minimum=1)
        n_layers: int = setting(2, "L, user–item propagation layers (sum of layers 0..L)", minimum=0)
        n_bands: int = setting(3, "M spectral bands per modality (1 = no decomposition; at most d)", minimum=1)
        content_modalities: list[str] = setting(["image", "text"], "content modalities used besides IDs "
                                                "(those the dataset lacks are skipped; [] = IDs only)",
                                                choices=CONTENT_MODALITIES)
        hidden_size: int = setting(256, "hidden width of the content MLP Linear → LeakyReLU → Linear", minimum=1)
        freeze_features: bool = setting(False, "keep the raw content features constant (the authors "
                                               "fine-tune them)")
        mask_placeholders: bool = setting(True, "items without content: no kNN edges, mean-imputed raw input")
        item_graph: bool = setting(True, "graph-enhanced item view over the content kNN graph")
        knn_k: int = setting(10, "top-k neighbours of the content graphs (the item itself included)", minimum=1)
        image_weight: float = setting(0.1, "λ in S = λ·S_image + (1−λ)·S_text", minimum=0, maximum=1)
        mm_layers: int = setting(1, "L_mm, propagations over the item (and user) content graph", minimum=0)
        user_graph_k: int = setting(0, "> 0: a user–user content kNN graph with this k (off in the authors' "
                                       "release)", minimum=0)
        gate_direction: str = setting("positive", "positive: 1 + s·σ(Wx+b); dual: 1 + s·tanh(Wx+b); none: no gate",
                                      choices=("positive", "dual", "none"))
        gate_scale_init: float = setting(0.5, "s at initialisation")
        rec_loss: str = setting("bce", "recommendation loss: bce (authors) or bpr", choices=("bce", "bpr"))
        ib: str = setting("surrogate", "information bottleneck: surrogate (authors), allocation (band "
                                       "allocation), none", choices=("surrogate", "allocation", "none"))
        ib_weight: float = setting(1.0, "w_IB", minimum=0)
        ib_alpha: float = setting(1.0, "surrogate α", minimum=0)
        ib_mu: float = setting(1.0, "surrogate μ", minimum=0)
        ib_threshold: float = setting(0.0, "surrogate φ⁺")
        ib_beta: float = setting(5.0, "band-allocation β: a band is shut off when (β−1)·SNR ≤ 1", minimum=0)
        ib_snr_scale: str = setting("pair", "band allocation: SNR per pair, or the evidence over an epoch's pairs "
                                            "(docs/method.md §6)", choices=SNR_SCALES)
        ib_warmup_epochs: int = setting(10, "band allocation: epochs before bands may be shut off", minimum=0)
        consistency: str = setting("band_to_band", "consistency loss: cross_modal (paper), band_to_band "
                                                   "(authors), none",
                                   choices=("cross_modal", "band_to_band", "none"))
        consistency_weight: float = setting(0.001, "w_cons", minimum=0)
        uniformity: bool = setting(True, "the authors' uniformity term on the upper half of the bands")

    training_defaults: ClassVar[dict] = {"learning_rate": 0.0001, "epochs": 300}

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        super().__init__(dataset)
        if settings.ib == "surrogate" and settings.gate_direction == "none":
            raise InputError("fitmm: the IB surrogate regularises the gate; with gate_direction none use ib: none")
        if settings.n_bands > settings.embedding_size:
            raise InputError(f"fitmm: n_bands {settings.n_bands} is more than the {settings.embedding_size} "
                             "directions of a modality block (embedding_size)")
        self.d = settings.embedding_size
        self.n_layers = settings.n_layers
        self.n_bands = settings.n_bands
        self.mm_layers = settings.mm_layers

        present = [m for m in settings.content_modalities if m in dataset.modalities]
        for missing in sorted(set(settings.content_modalities) - set(present)):
            log.warning("fitmm: dataset '%s' has no %s features; training without that modality",
                        dataset.name, missing)
        self.modalities = ["id", *present]
        n_modalities = len(self.modalities)

        self.user_preference = nn.Parameter(torch.empty(n_modalities, self.n_users, settings.embedding_size))
        for table in self.user_preference:
            nn.init.xavier_uniform_(table)
        self.item_id_embedding = xavier_uniform_table(self.n_items, settings.embedding_size)
        self.user_modality_weight = nn.Parameter(torch.softmax(torch.randn(self.n_users, n_modalities), dim=1))
        content = {name: content_features(dataset, name, "fitmm") for name in present}
        self.projections = nn.ModuleDict()
        for name, (table, _) in content.items():
            register_features(self, f"{name}_features", table, trainable=not settings.freeze_features)
            self.projections[name] = nn.Sequential(
                nn.Linear(table.shape[1], settings.hidden_size), nn.LeakyReLU(),
                nn.Linear(settings.hidden_size, settings.embedding_size),
            )

        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)
        self.use_item_graph = settings.item_graph and bool(content)
        if settings.item_graph and not content:
            log.warning("fitmm: no content features, so no item–item graph")
        if self.use_item_graph:
            graph = _content_graph(content, settings.knn_k, settings.image_weight, settings.mask_placeholders, "items")
            self.register_buffer("item_graph", graph, persistent=False)
            self.register_buffer("item_graph_t", sparse_transpose(graph), persistent=False)
        self.use_user_graph = settings.user_graph_k > 0 and bool(content)
        if self.use_user_graph:
            profiles = self._user_profiles(dataset, content, settings.mask_placeholders)
            graph = _content_graph(profiles, settings.user_graph_k, settings.image_weight, settings.mask_placeholders,
                                   "users")
            self.register_buffer("user_graph", graph, persistent=False)
            self.register_buffer("user_graph_t", sparse_transpose(graph), persistent=False)

        width = n_modalities * settings.embedding_size
        self.gates = None
        if settings.gate_direction != "none":
            self.gates = nn.ModuleDict({side: ResidualGate(width, settings.n_bands, settings.gate_direction,
                                                           settings.gate_scale_init) for side in ("user", "item")})
        self.band_logit = nn.Parameter(torch.ones(settings.n_bands))

        # the loss terms, chosen once
        self.recommendation_loss = _bce_loss if settings.rec_loss == "bce" else bpr_loss
        self.ib_weight = settings.ib_weight
        self.surrogate = self.allocation = None
        if settings.ib == "surrogate":
            self.surrogate = GateSurrogate(settings.ib_alpha, settings.ib_mu, settings.ib_threshold,
                                           settings.gate_direction)
        elif settings.ib == "allocation":
            self.allocation = BandAllocation(settings.n_bands, n_modalities, settings.ib_beta,
                                             settings.ib_warmup_epochs, settings.ib_snr_scale)
        self.consistency_weight = settings.consistency_weight
        self.alignment = {"cross_modal": self._cross_modal_gaps if n_modalities > 1 else None,
                          "band_to_band": self._band_to_band_gaps if settings.n_bands > 1 else None,
                          "none": None}[settings.consistency]
        self.uniformity = settings.uniformity and settings.consistency != "none"
        self.needs_bands = self.allocation is not None or settings.consistency != "none"

    @staticmethod
    def _user_profiles(dataset: Dataset, content: dict, mask_placeholders: bool) -> dict:
        """Each user's content profile: the mean real content of the user's training items."""
        profiles = {}
        for name, (table, mask) in content.items():
            real = mask.numpy() if mask_placeholders else np.ones(dataset.n_items, dtype=bool)
            weights = sp.csr_matrix(dataset.train.multiply(real[None, :]), dtype=np.float32)
            counts = np.asarray(weights.sum(axis=1)).ravel()
            means = weights @ table.numpy().astype(np.float64)
            has_content = counts > 0
            means[has_content] /= counts[has_content, None]
            means[~has_content] = means[has_content].mean(axis=0)
            profiles[name] = (torch.from_numpy(means.astype(np.float32)), torch.from_numpy(has_content))
        return profiles

    # ------------------------------------------------------------------ forward
    def _item_inputs(self) -> list[torch.Tensor]:
        inputs = [self.item_id_embedding]
        for name in self.modalities[1:]:
            inputs.append(self.projections[name](getattr(self, f"{name}_features")))
        return inputs

    def _views(self) -> tuple[View, View]:
        """The user and item views: user_rep, item_rep (§1) and their graph-enhanced versions (§2)."""
        n_modalities = len(self.modalities)
        preferences = self.user_preference.transpose(0, 1).reshape(self.n_users, n_modalities * self.d)
        layer0 = torch.cat([preferences, torch.cat(self._item_inputs(), dim=1)])
        layer0 = _unit_rows(layer0.view(-1, n_modalities, self.d)).view_as(layer0)  # per modality
        encoded = layer_sum(self.adjacency, layer0, self.n_layers)
        users, items = encoded.split([self.n_users, self.n_items])  # one gradient copy back, not two
        weighted_users = users.view(self.n_users, n_modalities, self.d) * self.user_modality_weight.unsqueeze(2)
        user_graph = preferences
        for _ in range(self.mm_layers if self.use_user_graph else 0):
            user_graph = sparse_mm(self.user_graph, user_graph, self.user_graph_t)
        item_graph = items
        for _ in range(self.mm_layers if self.use_item_graph else 0):
            item_graph = sparse_mm(self.item_graph, item_graph, self.item_graph_t)
        return View(weighted_users.view_as(users), user_graph), View(items, item_graph)

    def on_epoch_start(self, epoch: int) -> None:
        if self.allocation is not None:
            self.allocation.start_epoch(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        if self.allocation is not None:
            self.allocation.end_epoch()

    def open_bands(self) -> torch.Tensor:
        """1 for the bands in use, 0 for those the band-allocation IB has shut off."""
        if self.allocation is None:
            return torch.ones_like(self.band_logit)
        return self.allocation.open

    def _sides(self, user_rows: torch.Tensor | None = None, item_rows: torch.Tensor | None = None,
               with_bands: bool = True) -> Sides:
        """Both sides' bands (if ``with_bands``), gates and final rows (§3–5).

        The spectral bases come from all rows of each view; everything after them is computed for
        ``user_rows`` and ``item_rows`` only (all rows if None): a training batch never pays for the
        other rows.
        """
        views = self._views()
        band_weight = torch.sigmoid(self.band_logit) * self.open_bands()
        bases = self._bases(views) if self.n_bands > 1 else None
        states = []
        for index, (view, rows) in enumerate(zip(views, (user_rows, item_rows))):
            gate_module = None if self.gates is None else self.gates["user" if index == 0 else "item"]
            all_gates = gate = None if gate_module is None else gate_module(view.plain)
            plain, graph = view.plain, view.graph
            if rows is not None:
                plain, graph = plain.index_select(0, rows), graph.index_select(0, rows)
                gate = None if all_gates is None else all_gates.index_select(0, rows)
            pair = torch.stack([plain, graph])
            factor = band_weight if gate is None else band_weight * gate  # (M,) or (r, M)
            bands = None
            if bases is None:
                bands = pair.sum(0).unsqueeze(0)
                final = bands[0] * factor  # one band: (1,) or (r, 1) broadcasts over the width
            elif with_bands:
                bands = band_pieces(pair, bases[index], self.n_bands).sum(dim=1)  # Z_k = B_k(rep) + B_k(graph)
                pattern = "k,krw->rw" if gate is None else "rk,krw->rw"
                final = torch.einsum(pattern, factor, bands)
            else:
                final = weighted_band_sum(pair, bases[index], factor).sum(0)
            states.append(SideState(bands, gate, all_gates, final.float()))  # scores and losses in fp32
        return Sides(*states)

    def _bases(self, views: tuple[View, View]) -> torch.Tensor:
        """Each view's per-modality band bases, (side, 2 views, m, d, d), from one eigen-decomposition."""
        grams = torch.stack([
            torch.stack([modality_grams(view.plain, len(self.modalities)),
                         modality_grams(view.graph, len(self.modalities))])
            for view in views
        ])
        return band_bases(grams, self.n_bands)

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        sides = self._sides(with_bands=False)
        return sides.user.final, sides.item.final

    # ------------------------------------------------------------------ losses
    def loss(self, users, positives, negatives):
        """The losses of a batch, computed on its distinct users and items only."""
        user_rows, users = batch_rows(users)
        item_rows, items = batch_rows(torch.cat([positives, negatives]))
        positives, negatives = items.split(positives.numel())
        sides = self._sides(user_rows, item_rows, with_bands=self.needs_bands)
        u = sides.user.final.index_select(0, users)
        positive_scores = (u * sides.item.final.index_select(0, positives)).sum(1)
        negative_scores = (u * sides.item.final.index_select(0, negatives)).sum(1)
        recommendation = self.recommendation_loss(positive_scores, negative_scores)
        parts = {"rec": recommendation}
        total = recommendation
        if self.ib_weight and (self.surrogate is not None or self.allocation is not None):
            if self.surrogate is not None:
                parts["ib"] = self.surrogate(sides.user.all_gates, sides.item.all_gates)
            else:
                parts["ib"] = self._allocation_loss(sides, users, positives, negatives)
            total = total + self.ib_weight * parts["ib"]
        if self.consistency_weight and (self.alignment is not None or self.uniformity):
            parts["cons"] = self._consistency_loss(sides, users, positives)
            total = total + self.consistency_weight * parts["cons"]
        parts["loss"] = total
        return parts

    def _allocation_loss(self, sides: Sides, users, positives, negatives) -> torch.Tensor:
        """The band-allocation Lagrangian on the batch's effective gains; the batch's band scores
        feed the allocation's SNR. ``users``, ``positives`` and ``negatives`` index the rows of ``sides``."""
        blocks = (len(self.modalities), self.d)
        band_users = sides.user.bands.index_select(1, users).unflatten(-1, blocks)
        positive = (band_users * sides.item.bands.index_select(1, positives).unflatten(-1, blocks)).sum(-1)
        negative = (band_users * sides.item.bands.index_select(1, negatives).unflatten(-1, blocks)).sum(-1)
        self.allocation.observe(positive.permute(1, 0, 2), negative.permute(1, 0, 2))  # (B, M, modalities)
        band_weight = torch.sigmoid(self.band_logit)
        gains = []
        for state, rows, side in ((sides.user, users, "user"), (sides.item, positives, "item")):
            if state.gate is None:
                gains.append((band_weight.expand(rows.numel(), -1), 1.0))
            else:
                gains.append((band_weight * state.gate[rows], 1.0 + self.gates[side].scale.detach().abs()))
        return self.allocation(gains)

    def _cross_modal_gaps(self, bands: torch.Tensor) -> torch.Tensor:
        """Per band and row, the modality parts compared pairwise: (M, r)."""
        return _pairwise_cosine_gaps(bands.unflatten(-1, (len(self.modalities), self.d)))

    @staticmethod
    def _band_to_band_gaps(bands: torch.Tensor) -> torch.Tensor:
        """Per row, the bands compared pairwise: (r,)."""
        return _pairwise_cosine_gaps(bands.transpose(0, 1))

    def _consistency_loss(self, sides: Sides, users, positives) -> torch.Tensor:
        """Within-band cross-modal (paper) or band-to-band (authors) alignment, plus uniformity.

        ``users`` and ``positives`` index the rows of ``sides``.
        """
        total = torch.zeros((), dtype=self.band_logit.dtype, device=self.band_logit.device)
        for state, rows in ((sides.user, users), (sides.item, positives)):
            # every term is a mean over the batch's rows: computed once per distinct row, weighted
            distinct, inverse = torch.unique(rows, return_inverse=True)
            counts = torch.bincount(inverse, minlength=distinct.numel()).to(total.dtype)
            share = counts / counts.sum()
            batch_bands = state.bands.index_select(1, distinct)  # (M, r, width)
            if self.alignment is not None:
                total = total + (self.alignment(batch_bands) @ share).mean()
            if self.uniformity:
                for k in range(self.n_bands // 2, self.n_bands):
                    total = total + batch_uniformity(batch_bands[k], counts)
        return total

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> dict:
        """Band energy shares per side and modality, mean gate per band, band weights, and the band
        allocation's SNR and gains (JSON-ready)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            sides = self._sides()
        self.train(was_training)
        n_modalities = len(self.modalities)
        out = {"band_energy_share": {}, "gate_mean": {},
               "band_weights": (torch.sigmoid(self.band_logit) * self.open_bands()).tolist(),
               "open_bands": self.open_bands().tolist()}
        for side, state in (("user", sides.user), ("item", sides.item)):
            energy = band_energies(state.bands, n_modalities)
            share = energy / energy.sum(dim=0, keepdim=True).clamp_min(1e-12)
            out["band_energy_share"][side] = {m: share[:, i].tolist() for i, m in enumerate(self.modalities)}
            out["gate_mean"][side] = ([1.0] * self.n_bands) if state.gate is None else state.gate.mean(dim=0).tolist()
        if self.allocation is not None:
            out.update(self.allocation.diagnostics(self.modalities))
        return out
