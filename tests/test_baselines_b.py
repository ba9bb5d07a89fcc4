"""MGCN, LGMRec and SMORE: their distinctive mechanisms (docs/baselines.md §9–11) and real training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fitmm
from fitmm.data.dataset import Dataset, Modality
from fitmm.errors import InputError
from fitmm.graph.adjacency import user_item_block
from fitmm.models.content import content_features
from fitmm.models.lgmrec import LGMRec, hypergraph_propagation, summed_nce
from fitmm.models.mgcn import MGCN
from fitmm.models.smore import SMORE
from fitmm.training.settings import resolve_settings

PLACEHOLDER = 2  # the toy item without an image


def toy_dataset(with_image: bool = True) -> Dataset:
    """6 users, 9 items, 4 training interactions per user; item 2 has no real image."""
    rng = np.random.default_rng(0)
    users, items, labels = [], [], []
    for user in range(6):
        chosen = rng.choice(9, size=6, replace=False)
        users += [user] * 6
        items += chosen.tolist()
        labels += [0, 0, 0, 0, 1, 2]
    n_items = 9
    image_mask = np.ones(n_items, dtype=bool)
    image_mask[PLACEHOLDER] = False
    image = rng.random((n_items, 7)).astype(np.float32)
    image[PLACEHOLDER] = 0.0
    modalities = {"text": Modality(rng.random((n_items, 5)).astype(np.float32), np.ones(n_items, dtype=bool))}
    if with_image:
        modalities["image"] = Modality(image, image_mask)
    return Dataset("toy", 6, n_items, np.array(users), np.array(items), np.array(labels), modalities)


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


def mgcn(dataset, **changes):
    settings = dict(embedding_size=8, n_ui_layers=2, n_ii_layers=1, knn_k=3, reg_weight=1e-4, cl_weight=0.01,
                    freeze_features=False, mask_placeholders=True)
    torch.manual_seed(0)
    return MGCN(dataset, MGCN.Settings(**{**settings, **changes}))


def lgmrec(dataset, **changes):
    settings = dict(embedding_size=8, n_ui_layers=2, n_mm_layers=2, n_hyper_layers=1, n_hyperedges=4,
                    keep_rate=0.5, alpha=0.3, cl_weight=1e-4, reg_weight=1e-6, freeze_features=True,
                    deterministic_eval=False)
    torch.manual_seed(0)
    return LGMRec(dataset, LGMRec.Settings(**{**settings, **changes}))


def smore(dataset, **changes):
    settings = dict(embedding_size=8, n_ui_layers=3, n_ii_layers=1, image_knn_k=3, text_knn_k=2,
                    reg_weight=1e-4, cl_weight=0.01, gate_dropout=0.1, freeze_features=False,
                    mask_placeholders=True)
    torch.manual_seed(0)
    return SMORE(dataset, SMORE.Settings(**{**settings, **changes}))


# ----------------------------------------------------------------- content features and masks
def test_placeholder_rows_are_the_mean_of_real_rows(toy):
    features, mask = content_features(toy, "image", "test")
    real = torch.from_numpy(toy.modalities["image"].features[toy.modalities["image"].mask])
    torch.testing.assert_close(features[PLACEHOLDER], real.mean(dim=0))
    assert not mask[PLACEHOLDER] and mask.sum() == 8


def test_missing_modality_is_a_clear_input_error():
    with pytest.raises(InputError, match="needs image features"):
        mgcn(toy_dataset(with_image=False))


def test_masked_item_has_only_its_self_loop(toy):
    masked = mgcn(toy).image_graph.to_dense()
    assert masked[PLACEHOLDER].nonzero().flatten().tolist() == [PLACEHOLDER]
    assert masked[:, PLACEHOLDER].nonzero().flatten().tolist() == [PLACEHOLDER]
    reference = mgcn(toy, mask_placeholders=False).image_graph.to_dense()
    assert (reference[PLACEHOLDER] != 0).sum() == 3


def test_features_are_fine_tuned_or_frozen_as_configured(toy):
    assert "image_features" in dict(mgcn(toy).named_parameters())
    assert "image_features" not in dict(mgcn(toy, freeze_features=True).named_parameters())
    assert "image_features" not in dict(lgmrec(toy).named_parameters())


# ----------------------------------------------------------------- MGCN
def test_mgcn_modality_weights_sum_to_one(toy):
    model = mgcn(toy)
    views = torch.randn(2, toy.n_users + toy.n_items, 8)
    weights = model.modality_weights(*views)
    assert weights.shape == (toy.n_users + toy.n_items, 2)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(toy.n_users + toy.n_items))


def test_mgcn_purifier_zeroes_an_item_whose_id_row_is_zero(toy):
    model = mgcn(toy)
    with torch.no_grad():
        model.item_embedding[4] = 0.0
        model.image_features[4] = 100.0
    for purified in model.purified_items():
        assert purified[4].abs().sum() == 0
        assert purified[5].abs().sum() > 0


def test_mgcn_fuser_with_unit_preference_gates(toy):
    model = mgcn(toy)
    with torch.no_grad():
        for gate in (model.image_preference, model.text_preference):
            gate[0].weight.zero_()
            gate[0].bias.fill_(50.0)  # σ(50) == 1 in float32
    image_view, text_view, behaviour = torch.randn(3, toy.n_users + toy.n_items, 8)
    weights = model.modality_weights(image_view, text_view)
    common = weights[:, :1] * image_view + weights[:, 1:] * text_view
    side = model.fuse(image_view, text_view, behaviour)
    torch.testing.assert_close(side, (image_view + text_view - common) / 3)


def test_mgcn_item_item_view_reaches_users_through_r_hat(toy):
    model = mgcn(toy)
    items = torch.randn(toy.n_items, 8)
    graph = model.text_graph.to_dense()
    r_hat = torch.from_numpy(user_item_block(toy.train).toarray())
    expected = torch.cat([r_hat @ graph @ items, graph @ items])
    torch.testing.assert_close(model.item_item_view("text", items), expected)


# ----------------------------------------------------------------- LGMRec
@pytest.mark.parametrize("training", [True, False])
def test_lgmrec_memberships_rows_sum_to_one(toy, training):
    model = lgmrec(toy, deterministic_eval=not training).train(training)
    for modality in ("image", "text"):
        items, users = model.memberships(modality)
        assert items.shape == (toy.n_items, 4) and users.shape == (toy.n_users, 4)
        torch.testing.assert_close(items.sum(dim=1), torch.ones(toy.n_items))
        torch.testing.assert_close(users.sum(dim=1), torch.ones(toy.n_users))


def test_lgmrec_one_hypergraph_layer_identities():
    generator = torch.Generator().manual_seed(0)
    item_memberships = torch.rand(9, 4, generator=generator, dtype=torch.float64)
    user_memberships = torch.rand(6, 4, generator=generator, dtype=torch.float64)
    items = torch.randn(9, 8, generator=generator, dtype=torch.float64)
    users_out, items_out = hypergraph_propagation(item_memberships, user_memberships, items, n_layers=1)
    torch.testing.assert_close(items_out, item_memberships @ item_memberships.T @ items)
    torch.testing.assert_close(users_out, user_memberships @ item_memberships.T @ items)


def test_lgmrec_modality_user_init_is_the_mean_of_the_users_items(toy):
    model = lgmrec(toy)
    users, items = model.modality_user_init("text")
    for user in range(toy.n_users):
        history = toy.train[user].indices
        torch.testing.assert_close(users[user], items[history].mean(dim=0))


def test_lgmrec_nce_contrasts_against_every_candidate():
    generator = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(2, 3, 8, generator=generator, dtype=torch.float64)
    candidates = torch.randn(10, 8, generator=generator, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity
    expected = sum(
        -torch.log(torch.exp(cos(a, p, dim=0) / 0.2) / torch.exp(cos(a[None], candidates) / 0.2).sum())
        for a, p in zip(anchors, positives)
    )
    torch.testing.assert_close(summed_nce(anchors, positives, candidates, 0.2), expected)


def test_lgmrec_contrastive_term_is_summed_over_the_batch(toy):
    model = lgmrec(toy).train()
    users, positives, negatives = torch.tensor([0, 3, 5]), torch.tensor([1, 4, 7]), torch.tensor([2, 6, 8])

    def contrastive(repeat: int) -> float:
        torch.manual_seed(1)  # the same Gumbel noise and dropout masks for both batches
        return model.loss(users.repeat(repeat), positives.repeat(repeat), negatives.repeat(repeat))["cl"].item()

    assert contrastive(2) == pytest.approx(2 * contrastive(1), rel=1e-5)


def test_lgmrec_evaluation_is_stochastic_unless_deterministic(toy):
    users = torch.arange(toy.n_users)
    with torch.no_grad():
        noisy = lgmrec(toy).eval().scorer()
        assert not torch.equal(noisy(users), noisy(users))  # fresh Gumbel noise per user batch
        fixed = lgmrec(toy, deterministic_eval=True).eval().scorer()
        assert torch.equal(fixed(users), fixed(users))


# ----------------------------------------------------------------- SMORE
@pytest.mark.parametrize(("preset", "row"), [
    (None, (3, 40, 10, 0.01, 1e-5, 0.0)),  # Clothing, pinned by FITMM's authors
    ("baby", (4, 40, 15, 0.01, 1e-4, 0.1)),
    ("sports", (3, 10, 10, 0.03, 1e-4, 0.0)),
])
def test_smore_defaults_and_presets_are_the_published_rows(preset, row):
    config = resolve_settings("smore", overrides={"preset": preset}).as_dict()
    keys = ("n_ui_layers", "image_knn_k", "text_knn_k", "cl_weight", "reg_weight", "gate_dropout")
    assert tuple(config[key] for key in keys) == row
    assert (config["n_ii_layers"], config["learning_rate"], config["lr_decay"]) == (1, 0.001, 0.96)


def set_filter(parameter: torch.Tensor) -> None:
    with torch.no_grad():
        parameter.zero_()
        parameter[:, 0] = 1.0  # 1 + 0j in every frequency bin


def test_smore_unit_filters_are_the_identity(toy):
    model = smore(toy, embedding_size=64)
    set_filter(model.image_filter)
    set_filter(model.text_filter)
    image, text = torch.randn(2, toy.n_items, 64)
    filtered_image, filtered_text, _ = model.spectral_filter(image, text)
    torch.testing.assert_close(filtered_image, image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(filtered_text, text, atol=1e-5, rtol=1e-5)


def test_smore_fusion_is_a_circular_convolution_over_sqrt_d(toy):
    model = smore(toy, embedding_size=64)
    set_filter(model.fusion_filter)
    image, text = torch.randn(2, toy.n_items, 64, dtype=torch.float64)
    fusion = model.spectral_filter(image.float(), text.float())[2].double()
    shifts = (torch.arange(64)[:, None] - torch.arange(64)[None, :]) % 64  # [k, j] = (k − j) mod 64
    convolution = torch.einsum("nj,nkj->nk", image, text[:, shifts])
    torch.testing.assert_close(fusion, convolution / 8, atol=1e-4, rtol=1e-4)


def test_smore_fusion_graph_is_the_elementwise_max(toy):
    model = smore(toy)
    image, text, fusion = (getattr(model, f"{m}_graph").to_dense() for m in ("image", "text", "fusion"))
    absent = torch.tensor(-torch.inf)
    expected = torch.maximum(torch.where(image != 0, image, absent), torch.where(text != 0, text, absent))
    torch.testing.assert_close(fusion, torch.where(torch.isinf(expected), 0.0, expected))


def test_smore_preference_attention_rows_sum_to_one(toy):
    model = smore(toy)
    for attention in model.preference_attention(torch.randn(toy.n_users + toy.n_items, 8)):
        torch.testing.assert_close(attention.sum(dim=1), torch.ones(toy.n_users + toy.n_items))


def test_smore_item_graphs_use_their_own_k():
    model = smore(toy_dataset(), mask_placeholders=False)
    assert torch.equal(torch.diff(model.image_graph.crow_indices()), torch.full((9,), 3))
    assert torch.equal(torch.diff(model.text_graph.crow_indices()), torch.full((9,), 2))


# ----------------------------------------------------------------- training on ml100k
@pytest.fixture(scope="module")
def popularity(tmp_path_factory):
    return fitmm.train("pop", "ml100k", tmp_path_factory.mktemp("pop"), progress=False)


@pytest.mark.parametrize("name, epochs, learning_rate", [("mgcn", 2, 0.01), ("lgmrec", 2, 0.01), ("smore", 3, 0.02)])
def test_training_beats_popularity(name, epochs, learning_rate, popularity, tmp_path):
    result = fitmm.train(name, "ml100k", tmp_path, epochs=epochs, overrides={"learning_rate": learning_rate},
                         progress=False)
    assert result["test"]["recall@20"] > popularity["test"]["recall@20"] * 1.1
