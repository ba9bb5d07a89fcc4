"""VBPR, LATTICE, FREEDOM and BM3: each model's distinctive mechanism, and real training on ml100k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_rows

import fitmm
from fitmm.data.dataset import Dataset, Modality
from fitmm.errors import InputError
from fitmm.graph.adjacency import row_normalized_with_self_loops
from fitmm.graph.knn import knn_graph
from fitmm.models.bm3 import BM3
from fitmm.models.freedom import FREEDOM
from fitmm.models.lattice import LATTICE, learned_neighbours
from fitmm.models.vbpr import VBPR

IMAGE_PLACEHOLDERS = [1, 4, 7]


def toy_dataset(modalities=("image", "text"), n_users=8, n_items=12, seed=0) -> Dataset:
    """8 users × 12 items (4 training interactions each); 7-d image features with three
    placeholder rows (zeros, mask False) and 5-d text features for every item."""
    rng = np.random.default_rng(seed)
    users, items, labels = (np.array(column) for column in zip(*small_rows(n_users, n_items, seed)))
    content = {}
    if "image" in modalities:
        mask = np.ones(n_items, dtype=bool)
        mask[IMAGE_PLACEHOLDERS] = False
        image = rng.normal(size=(n_items, 7)).astype(np.float32)
        image[~mask] = 0.0
        content["image"] = Modality(features=image, mask=mask)
    if "text" in modalities:
        content["text"] = Modality(features=rng.normal(size=(n_items, 5)).astype(np.float32),
                                   mask=np.ones(n_items, dtype=bool))
    return Dataset(name="toy", n_users=n_users, n_items=n_items, users=users, items=items, labels=labels,
                   modalities=content)


def imputed(modality: Modality) -> torch.Tensor:
    features = torch.from_numpy(modality.features.copy())
    mask = torch.from_numpy(modality.mask)
    features[~mask] = features[mask].double().mean(dim=0).float()
    return features


def a_batch(dataset: Dataset, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every training pair once, with a random negative the user has not seen in training."""
    coo = dataset.train.tocoo()
    rng = np.random.default_rng(seed)
    seen = dataset.train.toarray().astype(bool)
    negatives = [rng.choice(np.flatnonzero(~seen[u])) for u in coo.row]
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64)), torch.tensor(negatives)


def dense(graph: torch.Tensor) -> torch.Tensor:
    return graph.to_dense() if graph.layout != torch.strided else graph


LATTICE_ARGS = dict(embedding_size=4, feat_embed_dim=3, n_ui_layers=2, n_ii_layers=1, knn_k=3, lambda_coeff=0.9,
                    reg_weight=1e-3, freeze_features=False, mask_placeholders=True)
FREEDOM_ARGS = dict(embedding_size=4, n_ui_layers=2, n_ii_layers=1, knn_k=3, mm_image_weight=0.1, dropout=0.5,
                    reg_weight=1e-3, freeze_features=False, mask_placeholders=True)
BM3_ARGS = dict(embedding_size=4, n_layers=1, dropout=0.5, reg_weight=0.1, cl_weight=2.0, freeze_features=False)
VBPR_ARGS = dict(embedding_size=4, reg_weight=0.5, freeze_features=True)


# --------------------------------------------------------------------------------------- VBPR
def test_vbpr_score_is_id_part_plus_projected_content_part():
    toy = toy_dataset()
    torch.manual_seed(0)
    model = VBPR(toy, VBPR.Settings(**VBPR_ARGS))
    content = torch.cat([imputed(toy.modalities["text"]), imputed(toy.modalities["image"])], dim=1)  # text first
    assert torch.equal(model.item_content, content)
    p = model.user_factors.detach()
    id_part = p[:, :4] @ model.item_factors.detach().T
    content_part = p[:, 4:] @ (content @ model.content_projection.weight.detach().T + model.content_projection.bias.detach()).T
    with torch.no_grad():
        scores = model.scorer()(torch.arange(toy.n_users))
    torch.testing.assert_close(scores, id_part + content_part)
    assert torch.count_nonzero(model.content_projection.bias) == 0


def test_vbpr_content_is_constant_and_regulariser_uses_the_concatenated_vectors():
    toy = toy_dataset()
    model = VBPR(toy, VBPR.Settings(**VBPR_ARGS))
    assert "item_content" not in dict(model.named_parameters())
    before = model.item_content.clone()
    weight_before = model.content_projection.weight.detach().clone()
    users, positives, negatives = a_batch(toy)
    parts = model.loss(users, positives, negatives)
    with torch.no_grad():
        v = model.item_vectors()
        expected = 0.5 * (model.user_factors[users].norm() + v[positives].norm() + v[negatives].norm()) / len(users)
    assert parts["reg"].item() == pytest.approx(expected.item(), rel=1e-6)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    parts["loss"].backward()
    optimizer.step()
    assert torch.equal(model.item_content, before)  # bit-identical after a step
    assert not torch.equal(model.content_projection.weight, weight_before)


# --------------------------------------------------------------------------------------- LATTICE
def brute_force_learned_graph(model: LATTICE) -> torch.Tensor:
    """Dense S_learn = symnorm(Σ_m w_m top-k(cos(P_m))), with the mask semantics of the model."""
    weights = model.modality_logits.detach().softmax(dim=0)
    mixed = torch.zeros(model.n_items, model.n_items)
    for weight, name in zip(weights, model.modalities):
        projected = model.projections[name](getattr(model, f"{name}_features")).detach()
        unit = F.normalize(projected, dim=1)
        similarity = unit @ unit.T
        mask = getattr(model, f"{name}_mask")
        kept = torch.zeros_like(similarity)
        for i in range(model.n_items):
            if mask is not None and not mask[i]:
                kept[i, i] = 1.0
                continue
            row = similarity[i].clone()
            if mask is not None:
                row[~mask] = -torch.inf
            top = row.topk(model.knn_k).indices
            kept[i, top] = similarity[i, top]
        mixed += weight * kept
    scale = mixed.sum(dim=1).rsqrt()
    return scale[:, None] * mixed * scale[None, :]


def scatter_neighbour_lists(columns: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    rows = torch.arange(n).unsqueeze(1).expand_as(columns)
    return torch.zeros(n, n).index_put_((rows, columns), values.detach(), accumulate=True)


@pytest.mark.parametrize("mask_placeholders", [True, False])
def test_lattice_learned_graph_is_topk_cosine_mixed_then_normalised(mask_placeholders):
    torch.manual_seed(0)
    model = LATTICE(toy_dataset(), LATTICE.Settings(**{**LATTICE_ARGS, "mask_placeholders": mask_placeholders}))
    with torch.no_grad():
        model.modality_logits.copy_(torch.tensor([0.2, 1.0]))  # unequal weights: order of mixing matters
    graph = model.build_item_graph()
    assert graph.columns.shape == (model.n_items, 2 * model.knn_k)
    learned = scatter_neighbour_lists(graph.columns, graph.values, model.n_items)
    torch.testing.assert_close(learned, brute_force_learned_graph(model), rtol=1e-5, atol=1e-6)


def test_lattice_learned_modality_graph_has_k_entries_per_row_and_respects_the_mask():
    projected = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    mask = torch.ones(12, dtype=torch.bool)
    mask[IMAGE_PLACEHOLDERS] = False
    columns, values = learned_neighbours(projected, 4, mask)
    assert columns.shape == values.shape == (12, 4)
    for item in range(12):
        if mask[item]:
            assert len(set(columns[item].tolist())) == 4  # exactly k distinct neighbours
            assert mask[columns[item]].all()  # placeholders are nobody's neighbour
            unit = F.normalize(projected.detach(), dim=1)
            torch.testing.assert_close(values[item].detach(), unit[columns[item]] @ unit[item])
        else:
            assert values[item].tolist() == [1.0, 0.0, 0.0, 0.0] and (columns[item] == item).all()
    values.sum().backward()
    assert projected.grad.abs().sum() > 0  # the kept cosines carry gradient to the projections


def backbone_items(model: LATTICE, dataset: Dataset) -> torch.Tensor:
    """I_cf by hand: the mean of layers 0..2 of [E_u ; E_i] over the dense Â_row+I."""
    adjacency = torch.from_numpy(row_normalized_with_self_loops(dataset.train).toarray()).double()
    x0 = torch.cat([model.user_embedding, model.item_embedding]).detach().double()
    layers = [x0, adjacency @ x0, adjacency @ adjacency @ x0]
    return (sum(layers) / 3)[model.n_users:].float()


def test_lattice_final_item_embedding_is_backbone_plus_a_unit_row():
    toy = toy_dataset()
    model = LATTICE(toy, LATTICE.Settings(**LATTICE_ARGS))
    with torch.no_grad():
        _, items = model.propagate(model.build_item_graph())
    difference = items - backbone_items(model, toy)
    torch.testing.assert_close(difference.norm(dim=1), torch.ones(model.n_items), rtol=1e-5, atol=1e-5)


def test_lattice_with_lambda_one_is_a_frozen_graph_model():
    toy = toy_dataset()
    torch.manual_seed(0)
    model = LATTICE(toy, LATTICE.Settings(**{**LATTICE_ARGS, "lambda_coeff": 1.0}))
    with torch.no_grad():
        _, items = model.propagate(model.build_item_graph())
        initial = sum(0.5 * dense(getattr(model, f"{m}_graph")) for m in model.modalities)  # softmax(0.5, 0.5)
        expected = backbone_items(model, toy) + F.normalize(initial @ model.item_embedding, dim=1)
        torch.testing.assert_close(items, expected, rtol=1e-5, atol=1e-6)
        for projection in model.projections.values():
            projection.weight.normal_()
        _, items_after = model.propagate(model.build_item_graph())
    torch.testing.assert_close(items_after, items)


def test_lattice_projections_get_gradient_from_one_batch_per_epoch():
    toy = toy_dataset()
    model = LATTICE(toy, LATTICE.Settings(**LATTICE_ARGS))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    users, positives, negatives = a_batch(toy)
    for epoch in range(2):
        model.on_epoch_start(epoch)
        batches_reaching = {"image": 0, "text": 0, "logits": 0, "id": 0}
        for _ in range(4):
            optimizer.zero_grad(set_to_none=True)
            model.loss(users, positives, negatives)["loss"].backward()
            for name in ("image", "text"):
                grad = model.projections[name].weight.grad
                batches_reaching[name] += grad is not None and bool(grad.abs().sum() > 0)
            batches_reaching["logits"] += model.modality_logits.grad is not None
            batches_reaching["id"] += bool(model.item_embedding.grad.abs().sum() > 0)
            optimizer.step()
        assert batches_reaching == {"image": 1, "text": 1, "logits": 1, "id": 4}


def test_lattice_guards_rows_with_nonpositive_degree():
    model = LATTICE(toy_dataset(modalities=("text",)), LATTICE.Settings(**LATTICE_ARGS))
    with torch.no_grad():
        model.projections["text"].weight.zero_()
        model.projections["text"].bias.zero_()  # every projected row is 0: cosines 0, degrees 0
        graph = model.build_item_graph()
        scores = model.scorer()(torch.arange(model.n_users))
    assert torch.count_nonzero(graph.values) == 0 and torch.isfinite(scores).all()
    assert model.diagnostics()["learned_graph_nonpositive_degree_rows"] == model.n_items
    assert model.diagnostics()["modality_weights"] == {"text": 1.0}


# --------------------------------------------------------------------------------------- FREEDOM
def test_freedom_pruned_graph_is_a_renormalised_symmetric_edge_sample():
    toy = toy_dataset()
    model = FREEDOM(toy, FREEDOM.Settings(**FREEDOM_ARGS))
    train = set(zip(*toy.train.nonzero()))
    n_users = toy.n_users
    for epoch in range(3):
        model.on_epoch_start(epoch)
        graph = dense(model.training_adjacency)
        assert torch.equal(graph, graph.T)
        rows, cols = graph[:n_users].nonzero().T
        kept = [(int(u), int(c) - n_users) for u, c in zip(rows, cols)]
        assert len(kept) == len(set(kept)) == int(len(train) * 0.5)
        assert set(kept) <= train and (graph[n_users:, n_users:] == 0).all() and (graph[:n_users, :n_users] == 0).all()
        user_degree = np.bincount([u for u, _ in kept], minlength=n_users)
        item_degree = np.bincount([i for _, i in kept], minlength=toy.n_items)
        for u, i in kept:
            assert graph[u, n_users + i].item() == pytest.approx(1 / np.sqrt(user_degree[u] * item_degree[i]), rel=1e-6)


def test_freedom_pruning_drops_edges_between_high_degree_nodes_more_often():
    # one user–item pair of degree 1, and a complete 100 × 100 block of degree-100 nodes
    block_users, block_items = np.divmod(np.arange(100 * 100), 100)
    users = np.concatenate([[0], block_users + 1])
    items = np.concatenate([[0], block_items + 1])
    rng = np.random.default_rng(0)
    dataset = Dataset(name="degrees", n_users=101, n_items=101, users=users, items=items,
                      labels=np.zeros(len(users), dtype=np.int64),
                      modalities={"text": Modality(rng.normal(size=(101, 4)).astype(np.float32), np.ones(101, bool))})
    model = FREEDOM(dataset, FREEDOM.Settings(**{**FREEDOM_ARGS, "dropout": 0.9}))
    torch.manual_seed(0)
    low_degree_kept, high_degree_kept = 0, 0
    for epoch in range(30):
        model.on_epoch_start(epoch)
        graph = model.training_adjacency.to_sparse_coo()
        pairs = set(map(tuple, graph.indices().T.tolist()))
        low_degree_kept += (0, 101) in pairs
        high_degree_kept += (1, 102) in pairs
    assert low_degree_kept >= 25 and high_degree_kept <= 10


def test_freedom_item_graph_is_frozen_binary_knn_mixture():
    toy = toy_dataset()
    model = FREEDOM(toy, FREEDOM.Settings(**FREEDOM_ARGS))
    per_modality = {}
    for name, modality in toy.modalities.items():
        mask = torch.from_numpy(modality.mask)
        per_modality[name] = knn_graph(imputed(modality), 3, mask=mask, weighting="binary")
        counts = torch.bincount(per_modality[name].indices()[0], minlength=toy.n_items)
        assert (counts[mask] == 3).all() and (counts[~mask] == 1).all()  # k per content row; placeholders self-loop
    expected = 0.1 * dense(per_modality["image"]) + 0.9 * dense(per_modality["text"])
    torch.testing.assert_close(dense(model.item_graph), expected)

    before = model.item_graph.clone()
    features_before = model.text_features.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model.on_epoch_start(0)
    model.loss(*a_batch(toy))["loss"].backward()
    optimizer.step()
    assert not torch.equal(model.text_features, features_before)  # the features are fine-tuned ...
    assert torch.equal(model.item_graph.indices(), before.indices())  # ... the graph built from them is not
    assert torch.equal(model.item_graph.values(), before.values())


def test_freedom_scores_on_the_full_graph_and_trains_on_the_pruned_one():
    toy = toy_dataset()
    model = FREEDOM(toy, FREEDOM.Settings(**FREEDOM_ARGS))
    model.on_epoch_start(0)
    all_users = torch.arange(toy.n_users)
    with torch.no_grad():
        scores = model.scorer()(all_users)
        full_users, full_items = model.propagate(model.adjacency)
        pruned_users, pruned_items = model.propagate(model.training_adjacency)
    torch.testing.assert_close(scores, full_users @ full_items.T)
    assert not torch.allclose(scores, pruned_users @ pruned_items.T)


# --------------------------------------------------------------------------------------- BM3
def test_bm3_needs_no_negatives_and_its_targets_carry_no_gradient(monkeypatch):
    toy = toy_dataset()
    model = BM3(toy, BM3.Settings(**BM3_ARGS))
    assert BM3.uses_negatives is False
    targets = []
    original = model.target_view

    def recording_target_view(online):
        target = original(online)
        targets.append(target)
        return target

    monkeypatch.setattr(model, "target_view", recording_target_view)
    users, positives, _ = a_batch(toy)
    parts = model.loss(users, positives, None)
    assert len(targets) == 4  # users, items, and one per modality
    assert all(not t.requires_grad and t.grad_fn is None for t in targets)
    parts["loss"].backward()
    assert model.predictor.weight.grad.abs().sum() > 0 and model.image_features.grad.abs().sum() > 0


def test_bm3_loss_is_invariant_to_the_scale_of_its_targets(monkeypatch):
    toy = toy_dataset()
    model = BM3(toy, BM3.Settings(**BM3_ARGS))
    users, positives, _ = a_batch(toy)
    torch.manual_seed(3)
    reference = {k: v.item() for k, v in model.loss(users, positives, None).items()}
    original = model.target_view
    monkeypatch.setattr(model, "target_view", lambda online: 7.5 * original(online))
    torch.manual_seed(3)  # the same dropout masks
    scaled = {k: v.item() for k, v in model.loss(users, positives, None).items()}
    assert scaled == pytest.approx(reference, rel=1e-5)


def test_bm3_scores_through_the_predictor_and_regularises_whole_tables():
    toy = toy_dataset()
    model = BM3(toy, BM3.Settings(**BM3_ARGS))
    with torch.no_grad():
        user_online, item_online = model.online()
        scores = model.scorer()(torch.arange(toy.n_users))
        torch.testing.assert_close(scores, model.predictor(user_online) @ model.predictor(item_online).T)
        assert not torch.allclose(scores, user_online @ item_online.T)
        users, positives, _ = a_batch(toy)
        reg = model.loss(users, positives, None)["reg"]
        assert reg.item() == pytest.approx(0.1 * (user_online.norm() + item_online.norm()).item() / toy.n_items, rel=1e-6)


# --------------------------------------------------------------------------------------- all four
MODEL_ARGS = {VBPR: VBPR_ARGS, LATTICE: LATTICE_ARGS, FREEDOM: FREEDOM_ARGS, BM3: BM3_ARGS}


@pytest.mark.parametrize("model_class", MODEL_ARGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("modalities", [("image",), ("text",)])
def test_runs_on_a_single_modality(model_class, modalities):
    toy = toy_dataset(modalities=modalities)
    model = model_class(toy, model_class.Settings(**MODEL_ARGS[model_class]))
    model.on_epoch_start(0)
    users, positives, negatives = a_batch(toy)
    model.loss(users, positives, negatives if model.uses_negatives else None)["loss"].backward()
    with torch.no_grad():
        assert torch.isfinite(model.scorer()(torch.arange(toy.n_users))).all()


@pytest.mark.parametrize("model_class", MODEL_ARGS, ids=lambda c: c.__name__)
def test_without_content_features_is_a_clear_error(model_class):
    with pytest.raises(InputError, match=r"needs image and/or text features; dataset 'toy' has none"):
        model_class(toy_dataset(modalities=()), model_class.Settings(**MODEL_ARGS[model_class]))


@pytest.mark.parametrize("model_class", [FREEDOM, LATTICE], ids=lambda c: c.__name__)
def test_knn_size_beyond_the_content_rows_is_a_clear_error(model_class):
    with pytest.raises(InputError, match=r"image kNN size 10 must be between 1 and the 9 items"):
        model_class(toy_dataset(), model_class.Settings(**{**MODEL_ARGS[model_class], "knn_k": 10}))


# --------------------------------------------------------------------------------------- ml100k
@pytest.fixture(scope="module")
def popularity(tmp_path_factory):
    return fitmm.train("pop", "ml100k", tmp_path_factory.mktemp("pop"), progress=False)


@pytest.mark.parametrize(("name", "epochs", "learning_rate"), [
    ("vbpr", 3, 0.01), ("lattice", 3, 0.01), ("freedom", 3, 0.005), ("bm3", 7, 0.01),
])
def test_learns_beyond_popularity_on_ml100k(name, epochs, learning_rate, popularity, tmp_path):
    result = fitmm.train(name, "ml100k", tmp_path, epochs=epochs, overrides=[f"learning_rate={learning_rate}"],
                         progress=False)
    assert result["test"]["recall@20"] > popularity["test"]["recall@20"] * 1.1
