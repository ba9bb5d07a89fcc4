"""FITMM: its components on small cases, its presets and ablation switches, and real training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_rows, write_inter

import fitmm
from fitmm.data import load_dataset
from fitmm.errors import InputError
from fitmm.models.fitmm import _pairwise_cosine_gaps, _unit_rows
from fitmm.models.losses import batch_uniformity
from fitmm.training.runs import build_model
from fitmm.training.settings import resolve_settings


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml100k")


def make(dataset, **overrides):
    return build_model(resolve_settings("fitmm", overrides=overrides), dataset)


def batch(dataset, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    users = torch.randint(0, dataset.n_users, (size,), generator=generator)
    return users, torch.randint(0, dataset.n_items, (size,), generator=generator), \
        torch.randint(0, dataset.n_items, (size,), generator=generator)


def test_bands_add_up_to_both_views(ml100k):
    model = make(ml100k)
    views = model._views()
    sides = model._sides()
    for state, view in zip((sides.user, sides.item), views):
        torch.testing.assert_close(state.bands.sum(dim=0), view.plain + view.graph, atol=1e-4, rtol=1e-4)
    assert sides.item.bands.shape == (3, ml100k.n_items, 3 * 64)


def test_final_representation_is_the_gated_weighted_band_sum(ml100k):
    model = make(ml100k)
    sides = model._sides()
    omega = torch.sigmoid(model.band_logit)
    item = sides.item
    expected = sum(omega[k] * item.gate[:, k:k + 1] * item.bands[k] for k in range(3))
    torch.testing.assert_close(item.final, expected)
    # scoring forms the same representation without the bands
    with torch.no_grad():
        scores = model.scorer()(torch.arange(7))
    torch.testing.assert_close(scores, sides.user.final[:7] @ item.final.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("direction", ["positive", "dual"])
def test_gate_is_residual_and_bounded(ml100k, direction):
    model = make(ml100k, gate_direction=direction)
    x = torch.randn(50, 192) * 10
    gate = model.gates["user"](x)
    scale = model.gates["user"].scale.item()
    low = 1.0 if direction == "positive" else 1.0 - scale
    assert gate.min() >= low - 1e-6 and gate.max() <= 1.0 + scale + 1e-6
    with torch.no_grad():
        model.gates["user"].scale.zero_()
    assert torch.equal(model.gates["user"](x), torch.ones(50, 3))  # the identity plus a learned deviation


def test_placeholder_items_get_no_content_edges(ml100k):
    model = make(ml100k, content_modalities=["image"])
    graph = model.item_graph.to_dense()
    mask = torch.from_numpy(ml100k.modalities["image"].mask)
    placeholders = (~mask).nonzero().squeeze(1)
    off_diagonal = graph - torch.diag(torch.diagonal(graph))
    assert off_diagonal[placeholders].abs().sum() == 0  # no neighbours of their own
    assert off_diagonal[:, placeholders].abs().sum() == 0  # never anyone's neighbour
    assert torch.all(torch.diagonal(graph)[placeholders] > 0)


def test_content_graph_mixes_image_and_text_with_lambda(ml100k):
    model = make(ml100k, image_weight=0.25)
    graph = model.item_graph.to_dense()
    real = np.flatnonzero(ml100k.modalities["image"].mask)[0]
    # every real item keeps 10 image and 10 text neighbours, each worth 1/10 in its graph
    assert graph[real].sum().item() == pytest.approx(0.25 + 0.75, abs=1e-5)


@pytest.mark.parametrize("modalities", [[], ["text"]])
def test_runs_with_fewer_modalities(ml100k, modalities):
    model = make(ml100k, content_modalities=modalities)
    assert model.modalities == ["id", *modalities]
    parts = model.loss(*batch(ml100k))
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])


def test_id_only_dataset_trains_without_content(tmp_path):
    folder = tmp_path / "idonly"
    write_inter(folder, small_rows(n_users=12, n_items=20))
    data = load_dataset(folder)
    model = make(data, knn_k=3)
    assert model.modalities == ["id"] and not model.use_item_graph
    parts = model.loss(*batch(data, size=16))
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])


def test_bce_is_the_mean_over_both_logits(ml100k):
    model = make(ml100k, ib="none", consistency="none")
    users, positives, negatives = batch(ml100k)
    parts = model.loss(users, positives, negatives)
    sides = model._sides()
    u = sides.user.final[users]
    pos = (u * sides.item.final[positives]).sum(1)
    neg = (u * sides.item.final[negatives]).sum(1)
    expected = -(torch.log(torch.sigmoid(pos)) + torch.log(1 - torch.sigmoid(neg))).mean() / 2
    assert parts["rec"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["rec"].item())


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: similarities far below the exp floor
def test_uniformity_value_and_gradient_equal_the_direct_computation_with_duplicates(scale):
    generator = torch.Generator().manual_seed(0)
    rows = (torch.randn(10, 6, generator=generator, dtype=torch.float64) * scale).requires_grad_()
    index = torch.tensor([3, 1, 3, 3, 7, 1, 0])
    z = rows[index]
    direct = -(torch.log_softmax(z @ z.T, dim=1)).mean(dim=1).mean()
    expected_gradient, = torch.autograd.grad(direct, rows)

    distinct, inverse = torch.unique(index, return_inverse=True)
    counts = torch.bincount(inverse)
    ours = batch_uniformity(rows[distinct], counts)
    gradient, = torch.autograd.grad(ours, rows)
    assert ours.item() == pytest.approx(direct.item(), rel=1e-9)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-7, atol=1e-9)


def test_unit_rows_equal_f_normalize_in_value_and_gradient_zero_rows_included():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 5, generator=generator, dtype=torch.float64)
    x[2, 1] = 0.0  # a zero block: F.normalize divides by eps there
    x[4, 0] = 1e-14
    weights = torch.randn(7, 3, 5, generator=generator, dtype=torch.float64)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    (_unit_rows(ours) * weights).sum().backward()
    (F.normalize(theirs, dim=-1) * weights).sum().backward()
    torch.testing.assert_close(_unit_rows(x), F.normalize(x, dim=-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=0)
    assert ours.grad[2, 1].abs().max() > 1e6  # the eps branch really was taken


def test_pairwise_cosine_gaps_by_hand():
    # row 1: (1,0) vs (0,2): cos 0, gap 1; row 2: (1,1) vs (2,2): cos 1, gap 0
    parts = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [2.0, 2.0]]])
    torch.testing.assert_close(_pairwise_cosine_gaps(parts), torch.tensor([1.0, 0.0]))
    # three vectors per row: pairs (0,1) cos 0, (0,2) cos 1, (1,2) cos 0 → gaps 1, 0, 1
    three = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
    torch.testing.assert_close(_pairwise_cosine_gaps(three), torch.tensor([2 / 3]))


def test_band_to_band_consistency_weights_duplicate_rows(ml100k):
    model = make(ml100k, uniformity=False)
    sides = model._sides()
    users = torch.tensor([5, 5, 5, 9])
    positives = torch.tensor([2, 7, 7, 7])
    expected = sum(
        _pairwise_cosine_gaps(state.bands[:, rows].transpose(0, 1)).mean()
        for state, rows in ((sides.user, users), (sides.item, positives))
    )
    assert model._consistency_loss(sides, users, positives).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cross_modal_consistency_is_zero_when_modalities_agree(ml100k):
    model = make(ml100k, consistency="cross_modal", uniformity=False)
    users, positives, _ = batch(ml100k)
    sides = model._sides()
    for state in (sides.user, sides.item):
        one = state.bands[..., :64]
        state.bands = one.repeat(1, 1, 3) * torch.tensor([1.0, 2.0, 0.5]).repeat_interleave(64)
    assert model._consistency_loss(sides, users, positives).item() == pytest.approx(0.0, abs=1e-6)


def test_band_allocation_measures_each_epoch_and_shuts_off_a_noise_band_after_warmup(ml100k):
    model = make(ml100k, preset="paper", ib_snr_scale="pair")
    allocation = model.allocation
    model.on_epoch_start(0)
    assert model.loss(*batch(ml100k))["ib"].item() == 0.0  # no SNR before the first epoch ends
    model.on_epoch_end(0)
    assert allocation.measured and allocation.count == 64
    with torch.no_grad():
        allocation.snr[:, 0] = torch.tensor([2.0, 0.5, 0.01], dtype=torch.float64)  # threshold 1/(β−1) = 0.25
    model.on_epoch_start(1)
    assert model.open_bands().tolist() == [1.0, 1.0, 1.0]  # warm-up: every band open
    model.on_epoch_start(allocation.warmup_epochs)
    assert allocation.count == 0 and model.open_bands().tolist() == [1.0, 1.0, 0.0]
    sides = model._sides()
    omega = torch.sigmoid(model.band_logit)
    item = sides.item
    expected = sum(omega[k] * item.gate[:, k:k + 1] * item.bands[k] for k in range(2))
    torch.testing.assert_close(item.final, expected)
    assert model.loss(*batch(ml100k))["ib"].item() != 0.0
    diagnostics = model.diagnostics()
    assert diagnostics["band_snr"] == pytest.approx([2.0, 0.5, 0.01])
    assert diagnostics["band_gain"][2] == 0.0 < diagnostics["band_gain"][1]
    assert set(diagnostics["band_snr_by_modality"]) == {"id", "image", "text"}


def test_band_allocation_snr_scales_are_the_same_statistic(ml100k):
    measured = {}
    for scale in ("pair", "epoch"):
        model = make(ml100k, preset="paper", ib_snr_scale=scale)
        model.on_epoch_start(0)
        for seed in range(3):
            model.loss(*batch(ml100k, size=256, seed=seed))
        model.on_epoch_end(0)
        measured[scale] = model.allocation.band_snr()
    torch.testing.assert_close(measured["epoch"], measured["pair"] * 3 * 256)


def test_surrogate_ib_uses_the_gates(ml100k):
    model = make(ml100k, consistency="none")
    parts = model.loss(*batch(ml100k))
    with torch.no_grad():
        model.gates["user"].scale.zero_()
        model.gates["item"].scale.zero_()
    assert parts["ib"].item() > 0
    assert model.loss(*batch(ml100k))["ib"].item() == pytest.approx(0.0, abs=1e-7)


def test_impossible_band_count_is_a_clear_error(ml100k):
    with pytest.raises(InputError, match="n_bands 65 is more than the 64 directions"):
        make(ml100k, n_bands=65)


def test_diagnostics_report_bands_gates_and_weights(ml100k):
    diagnostics = make(ml100k).diagnostics()
    for side in ("user", "item"):
        shares = diagnostics["band_energy_share"][side]
        assert set(shares) == {"id", "image", "text"}
        for values in shares.values():
            assert sum(values) == pytest.approx(1.0, abs=1e-5) and len(values) == 3
        assert len(diagnostics["gate_mean"][side]) == 3
    assert diagnostics["band_weights"] == pytest.approx([1 / (1 + math.exp(-1))] * 3)


def test_fitmm_learns_on_ml100k(tmp_path):
    result = fitmm.train("fitmm", "ml100k", tmp_path / "fitmm", epochs=6,
                         overrides={"learning_rate": 0.001}, progress=False)
    popularity = fitmm.train("pop", "ml100k", tmp_path / "pop", progress=False)
    assert result["test"]["recall@20"] > popularity["test"]["recall@20"]
    assert result["test"]["ndcg@20"] > popularity["test"]["ndcg@20"]
    assert set(result["diagnostics"]) >= {"band_energy_share", "gate_mean", "band_weights"}
    assert len(result["history"]["diagnostics"]) == 6


def test_user_graph_from_content_profiles(ml100k):
    model = make(ml100k, user_graph_k=5)
    graph = model.user_graph.to_dense()
    assert graph.shape == (ml100k.n_users, ml100k.n_users)
    assert torch.all((graph > 0).sum(dim=1) >= 5)  # every user keeps its own top-k of each modality
    user_view, _ = model._views()
    expected = graph @ torch.cat(list(model.user_preference), dim=1)
    torch.testing.assert_close(user_view.graph, expected, atol=1e-5, rtol=1e-4)
    parts = model.loss(*batch(ml100k))
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
