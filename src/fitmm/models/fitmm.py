"""FITMM: frequency-aware multimodal recommendation with information-theoretic regularisation.

Yang et al., "FITMM: Adaptive Frequency-Aware Multimodal Recommendation via Information-Theoretic
Representation Learning", ACM Multimedia 2025, pp. 6193–6202. Implemented from FITMM.md
(section numbers below refer to it):

1. one LightGCN-style encoder per modality (ID, image, text): users have a free preference matrix,
   items their ID table or their raw content through a two-layer MLP; layer 0 is row-normalised and
   the encoder output is the sum of layers 0..L (§1); user rows are weighted per modality;
2. a graph-enhanced view: items mixed over a frozen content kNN graph (binary top-k, image weight
   λ), users their layer-0 preferences, optionally mixed over a user–user content graph (§2);
3. each view is split, per modality, into ``n_bands`` orthogonal spectral bands from the d×d Gram
   matrix (``fitmm.graph.spectral``), and the two views are added band by band (§3–4);
4. a residual task-adaptive gate per side, g(x) = 1 + s·σ(Wx + b) ("positive") or 1 + s·tanh(·)
   ("dual"), and learnable band weights ω = σ(θ) combine the bands (§5);
5. the losses: BCE (authors) or BPR; the authors' gate IB surrogate or the band-allocation IB term
   (``fitmm.graph.bottleneck``, which shuts weak bands off); the within-band cross-modal
   consistency loss or the authors' band-to-band variant, with the uniformity term (§6–8).

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
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from fitmm.data.dataset import Dataset
from fitmm.errors import InputError
from fitmm.graph.adjacency import (
    layer_sum, scipy_to_torch, sparse_mm, sparse_transpose, symmetric_normalized, to_csr,
)
from fitmm.graph.bottleneck import band_allocation_gains, band_ib_lagrangian, band_snr, gate_ib_surrogate
from fitmm.graph.knn import knn_graph, mix_graphs
from fitmm.graph.spectral import band_bases, band_energies, band_pieces, modality_grams, weighted_band_sum
from fitmm.models.base import Recommender, ScoreFunction, embedding_scorer, xavier_uniform_table
from fitmm.models.content import content_features, register_features
from fitmm.models.losses import batch_uniformity, bpr_loss
from fitmm.models.registry import register

log = logging.getLogger(__name__)

CONTENT_MODALITIES = ("image", "text")
SNR_MOMENTUM = 0.9


def _content_graph(features: dict[str, tuple[torch.Tensor, torch.Tensor]], k: int, image_weight: float,
                   mask_placeholders: bool) -> torch.Tensor:
    """S = λ·S_image + (1−λ)·S_text over the content modalities present (either alone if only one)."""
    graphs = {
        name: knn_graph(table, k, mask=mask if mask_placeholders else None, weighting="binary")
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


def _pairwise_cosine_gaps(parts: torch.Tensor) -> torch.Tensor:
    """Per leading index, the mean over unordered pairs (a, b) of (1 − cos(parts[..., a, :], parts[..., b, :]))².

    ``parts`` is (…, P, w): P vectors per row, compared pairwise in one batched product; returns (…).
    """
    unit = F.normalize(parts, dim=-1)
    cosines = unit @ unit.mT  # (…, P, P)
    first, second = torch.triu_indices(parts.shape[-2], parts.shape[-2], offset=1, device=parts.device)
    return (1.0 - cosines[..., first, second]).square().mean(dim=-1)


@register("fitmm")
class FITMM(Recommender):
    """FITMM: orthogonal spectral bands per modality, residual task-adaptive gate, IB regularisation."""

    def __init__(
        self,
        dataset: Dataset,
        embedding_size: int,
        n_layers: int,
        n_bands: int,
        content_modalities: list[str],
        hidden_size: int,
        freeze_features: bool,
        mask_placeholders: bool,
        item_graph: bool,
        knn_k: int,
        image_weight: float,
        mm_layers: int,
        user_graph_k: int,
        gate_direction: str,
        gate_scale_init: float,
        rec_loss: str,
        ib: str,
        ib_weight: float,
        ib_alpha: float,
        ib_mu: float,
        ib_threshold: float,
        ib_beta: float,
        ib_warmup_epochs: int,
        consistency: str,
        consistency_weight: float,
        uniformity: bool,
    ) -> None:
        super().__init__(dataset)
        for name, value, allowed in (
            ("gate_direction", gate_direction, ("positive", "dual", "none")),
            ("rec_loss", rec_loss, ("bce", "bpr")),
            ("ib", ib, ("surrogate", "allocation", "none")),
            ("consistency", consistency, ("cross_modal", "band_to_band", "none")),
        ):
            if value not in allowed:
                raise InputError(f"fitmm: {name} must be one of {', '.join(allowed)}, got '{value}'")
        unknown = set(content_modalities) - set(CONTENT_MODALITIES)
        if unknown:
            raise InputError(f"fitmm: unknown content modality {sorted(unknown)[0]}; choose from image, text")
        if ib == "surrogate" and gate_direction == "none":
            raise InputError("fitmm: the IB surrogate regularises the gate; with gate_direction none use ib: none")
        self.d = embedding_size
        self.n_layers = n_layers
        self.n_bands = n_bands
        self.mm_layers = mm_layers
        self.gate_direction = gate_direction
        self.rec_loss = rec_loss
        self.ib = ib
        self.ib_weight = ib_weight
        self.ib_alpha, self.ib_mu, self.ib_threshold, self.ib_beta = ib_alpha, ib_mu, ib_threshold, ib_beta
        self.ib_warmup_epochs = ib_warmup_epochs
        self.consistency = consistency
        self.consistency_weight = consistency_weight
        self.uniformity = uniformity

        present = [m for m in content_modalities if m in dataset.modalities]
        for missing in sorted(set(content_modalities) - set(present)):
            log.warning("fitmm: dataset '%s' has no %s features; training without that modality",
                        dataset.name, missing)
        self.modalities = ["id", *present]
        n_modalities = len(self.modalities)

        self.user_preference = nn.Parameter(torch.empty(n_modalities, self.n_users, embedding_size))
        for table in self.user_preference:
            nn.init.xavier_uniform_(table)
        self.item_id_embedding = xavier_uniform_table(self.n_items, embedding_size)
        self.user_modality_weight = nn.Parameter(torch.softmax(torch.randn(self.n_users, n_modalities), dim=1))
        content = {name: content_features(dataset, name, "fitmm") for name in present}
        self.projections = nn.ModuleDict()
        for name, (table, _) in content.items():
            register_features(self, f"{name}_features", table, trainable=not freeze_features)
            self.projections[name] = nn.Sequential(
                nn.Linear(table.shape[1], hidden_size), nn.LeakyReLU(), nn.Linear(hidden_size, embedding_size)
            )

        self.register_buffer("adjacency", scipy_to_torch(symmetric_normalized(dataset.train)), persistent=False)
        self.use_item_graph = item_graph and bool(content)
        if item_graph and not content:
            log.warning("fitmm: no content features, so no item–item graph")
        if self.use_item_graph:
            graph = _content_graph(content, knn_k, image_weight, mask_placeholders)
            self.register_buffer("item_graph", graph, persistent=False)
            self.register_buffer("item_graph_t", sparse_transpose(graph), persistent=False)
        self.use_user_graph = user_graph_k > 0 and bool(content)
        if self.use_user_graph:
            profiles = self._user_profiles(dataset, content, mask_placeholders)
            graph = _content_graph(profiles, user_graph_k, image_weight, mask_placeholders)
            self.register_buffer("user_graph", graph, persistent=False)
            self.register_buffer("user_graph_t", sparse_transpose(graph), persistent=False)

        width = n_modalities * embedding_size
        if gate_direction != "none":
            self.user_gate = nn.Linear(width, n_bands)
            self.item_gate = nn.Linear(width, n_bands)
            self.user_gate_scale = nn.Parameter(torch.tensor(gate_scale_init))
            self.item_gate_scale = nn.Parameter(torch.tensor(gate_scale_init))
        self.band_logit = nn.Parameter(torch.ones(n_bands))
        # Band-allocation IB: a running per-band SNR estimate decides which bands stay open, once
        # the warm-up epochs are over (an untrained band has no signal yet).
        self.register_buffer("band_snr_estimate", torch.full((n_bands,), float("inf")))
        self.register_buffer("shutoff_active", torch.tensor(False))

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

    def _views(self) -> dict[str, torch.Tensor]:
        """The undecomposed representations: user_rep, item_rep (§1) and their graph views (§2)."""
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
        return {"user_rep": weighted_users.view_as(users), "item_rep": items, "user_graph": user_graph,
                "item_graph": item_graph}

    def _gate(self, side: str, x: torch.Tensor) -> torch.Tensor | None:
        if self.gate_direction == "none":
            return None
        logits = getattr(self, f"{side}_gate")(x)
        deviation = torch.sigmoid(logits) if self.gate_direction == "positive" else torch.tanh(logits)
        return 1.0 + getattr(self, f"{side}_gate_scale") * deviation

    def on_epoch_start(self, epoch: int) -> None:
        self.shutoff_active.fill_(self.ib == "allocation" and epoch >= self.ib_warmup_epochs)

    def open_bands(self) -> torch.Tensor:
        """1 for the bands in use, 0 for those the band-allocation IB has shut off."""
        if not bool(self.shutoff_active) or not torch.isfinite(self.band_snr_estimate).all():
            return torch.ones_like(self.band_logit)
        gains = band_allocation_gains(self.band_snr_estimate, self.ib_beta, 1.0)
        is_open = gains > 0
        is_open[torch.argmax(self.band_snr_estimate)] = True  # never shut every band
        return is_open.to(self.band_logit.dtype)

    def _sides(self, rows: dict[str, torch.Tensor] | None = None, with_bands: bool = True) -> dict:
        """Per side: the bands Z_k (M, r, width) if ``with_bands``, the gate (r, M), every node's gate
        (n, M) and the final rows (r, width).

        The spectral bases come from all rows of each view; everything after them is computed for
        ``rows[side]`` only (all rows if None): a training batch never pays for the other rows.
        """
        views = self._views()
        band_weight = torch.sigmoid(self.band_logit) * self.open_bands()
        bases = self._bases(views) if self.n_bands > 1 else None
        sides = {}
        for side in ("user", "item"):
            rep, graph = views[f"{side}_rep"], views[f"{side}_graph"]
            all_gates = gate = self._gate(side, rep)  # every node's gate: the IB surrogate needs them
            if rows is not None:
                rep, graph = rep.index_select(0, rows[side]), graph.index_select(0, rows[side])
                gate = None if all_gates is None else all_gates.index_select(0, rows[side])
            pair = torch.stack([rep, graph])
            factor = band_weight if gate is None else band_weight * gate  # (M,) or (r, M)
            bands = None
            if bases is None:
                bands = pair.sum(0).unsqueeze(0)
                final = bands[0] * factor  # one band: (1,) or (r, 1) broadcasts over the width
            elif with_bands:
                bands = band_pieces(pair, bases[side], self.n_bands).sum(dim=1)  # Z_k = B_k(rep) + B_k(graph)
                pattern = "k,krw->rw" if gate is None else "rk,krw->rw"
                final = torch.einsum(pattern, factor, bands)
            else:
                final = weighted_band_sum(pair, bases[side], factor).sum(0)
            sides[side] = {"bands": bands, "gate": gate, "all_gates": all_gates, "final": final}
        return sides

    def _bases(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each view's per-modality band bases (2 views, m, d, d) per side, from one eigen-decomposition."""
        grams = torch.stack([
            torch.stack([modality_grams(views[f"{side}_{view}"], len(self.modalities)) for view in ("rep", "graph")])
            for side in ("user", "item")
        ])
        user, item = band_bases(grams, self.n_bands)
        return {"user": user, "item": item}

    def scorer(self) -> ScoreFunction:
        sides = self._sides(with_bands=False)
        return embedding_scorer(sides["user"]["final"], sides["item"]["final"])

    # ------------------------------------------------------------------ losses
    def loss(self, users, positives, negatives):
        """The losses of a batch, computed on its distinct users and items only."""
        user_rows, users = torch.unique(users, return_inverse=True)
        item_rows, items = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        positives, negatives = items.split(positives.numel())
        needs_bands = self.ib == "allocation" or self.consistency != "none"
        sides = self._sides({"user": user_rows, "item": item_rows}, with_bands=needs_bands)
        user_final, item_final = sides["user"]["final"], sides["item"]["final"]
        u = user_final.index_select(0, users)
        positive_scores = (u * item_final.index_select(0, positives)).sum(1)
        negative_scores = (u * item_final.index_select(0, negatives)).sum(1)
        if self.rec_loss == "bce":
            logits = torch.cat([positive_scores, negative_scores])
            targets = torch.cat([torch.ones_like(positive_scores), torch.zeros_like(negative_scores)])
            recommendation = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            recommendation = bpr_loss(positive_scores, negative_scores)
        parts = {"rec": recommendation}
        total = recommendation
        if self.ib != "none" and self.ib_weight:
            parts["ib"] = self._ib_loss(sides, users, positives, negatives)
            total = total + self.ib_weight * parts["ib"]
        if self.consistency != "none" and self.consistency_weight:
            parts["cons"] = self._consistency_loss(sides, users, positives)
            total = total + self.consistency_weight * parts["cons"]
        parts["loss"] = total
        return parts

    def _ib_loss(self, sides, users, positives, negatives) -> torch.Tensor:
        """``users``, ``positives`` and ``negatives`` index the rows of ``sides``."""
        if self.ib == "surrogate":
            return sum(
                gate_ib_surrogate(sides[side]["all_gates"], self.ib_alpha, self.ib_mu, self.ib_threshold,
                                  self.gate_direction)
                for side in ("user", "item")
            )
        user_bands, item_bands = sides["user"]["bands"], sides["item"]["bands"]
        band_users = user_bands.index_select(1, users)
        positive = (band_users * item_bands.index_select(1, positives)).sum(-1).T  # (B, M) per band
        negative = (band_users * item_bands.index_select(1, negatives)).sum(-1).T
        snr = band_snr(positive.detach(), negative.detach())
        with torch.no_grad():
            if torch.isfinite(self.band_snr_estimate).all():
                self.band_snr_estimate.mul_(SNR_MOMENTUM).add_((1 - SNR_MOMENTUM) * snr)
            else:
                self.band_snr_estimate.copy_(snr)
        band_weight = torch.sigmoid(self.band_logit)
        total = 0.0
        for side, rows in (("user", users), ("item", positives)):
            gate = sides[side]["gate"]
            if gate is None:
                gains, max_gain = band_weight.expand(rows.numel(), -1), 1.0
            else:
                gains = band_weight * gate[rows]
                max_gain = 1.0 + getattr(self, f"{side}_gate_scale").detach().abs()
            total = total + band_ib_lagrangian(gains, snr, self.ib_beta, max_gain).sum(-1).mean()
        return total

    def _consistency_loss(self, sides, users, positives) -> torch.Tensor:
        """Within-band cross-modal (paper) or band-to-band (authors) alignment, plus uniformity.

        ``users`` and ``positives`` index the rows of ``sides``.
        """
        n_modalities = len(self.modalities)
        total = torch.zeros((), dtype=self.band_logit.dtype, device=self.band_logit.device)
        for side, rows in (("user", users), ("item", positives)):
            # every term is a mean over the batch's rows: computed once per distinct row, weighted
            distinct, inverse = torch.unique(rows, return_inverse=True)
            counts = torch.bincount(inverse, minlength=distinct.numel()).to(total.dtype)
            share = counts / counts.sum()
            batch_bands = sides[side]["bands"].index_select(1, distinct)  # (M, r, width)
            if self.consistency == "cross_modal" and n_modalities > 1:
                # per band and row, the modality parts side by side: (M, r, modalities, d)
                gaps = _pairwise_cosine_gaps(batch_bands.unflatten(-1, (n_modalities, self.d)))
                total = total + (gaps @ share).mean()
            elif self.consistency == "band_to_band" and self.n_bands > 1:
                total = total + _pairwise_cosine_gaps(batch_bands.transpose(0, 1)) @ share  # (r, M, width)
            if self.uniformity:
                for k in range(self.n_bands // 2, self.n_bands):
                    total = total + batch_uniformity(batch_bands[k], counts)
        return total

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> dict:
        """Band energy shares per side and modality, mean gate per band, band weights (JSON-ready)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            sides = self._sides()
        self.train(was_training)
        n_modalities = len(self.modalities)
        out = {"band_energy_share": {}, "gate_mean": {},
               "band_weights": (torch.sigmoid(self.band_logit) * self.open_bands()).tolist(),
               "open_bands": self.open_bands().tolist()}
        for side, values in sides.items():
            bands = values["bands"]
            energy = band_energies(bands, n_modalities)
            share = energy / energy.sum(dim=0, keepdim=True).clamp_min(1e-12)
            out["band_energy_share"][side] = {m: share[:, i].tolist() for i, m in enumerate(self.modalities)}
            gate = values["gate"]
            out["gate_mean"][side] = ([1.0] * self.n_bands) if gate is None else gate.mean(dim=0).tolist()
        if self.ib == "allocation":
            out["band_snr"] = self.band_snr_estimate.tolist()
        return out
