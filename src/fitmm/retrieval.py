"""Scoring what a model never trained on, from what it did: new items by content, new users by items.

Both rules work on a trained model's scores or vectors and know nothing of any model.

- **New items** (no interactions, content only): per content modality where the new item has
  content, it takes the mean score of its ``neighbours`` most cosine-similar catalogue items among
  those with content and training interactions; the modalities are averaged
  (:func:`new_item_weights` builds the sparse weights that turn catalogue scores into theirs).
- **New users** (absent from training, a few known items): the fold-in user vector is the mean of
  the vectors of the items they interacted with, so their score for item j is the mean inner
  product of j's vector with those items' vectors (:func:`fold_in`). It needs a model whose score
  is an inner product of fixed user and item vectors.
"""

from __future__ import annotations

import numpy as np
import torch

from fitmm.data.dataset import Dataset, Modality
from fitmm.errors import InputError
from fitmm.graph.knn import neighbour_mean_weights


def new_item_weights(dataset: Dataset, new_items: dict[str, Modality], neighbours: int) -> torch.Tensor:
    """(new items × catalogue items) sparse weights that give each new item its borrowed score.

    Modalities and widths must match the dataset's; ``neighbours`` is checked against the
    catalogue items that can lend a score.
    """
    if not new_items:
        raise InputError("new items carry no content modality")
    sizes = {len(modality.mask) for modality in new_items.values()}
    if len(sizes) != 1:
        raise InputError(f"new-item modalities differ in row count: {sorted(sizes)}")
    n_new = sizes.pop()
    warm = np.bincount(dataset.train.indices, minlength=dataset.n_items) > 0
    per_modality, covered = [], np.zeros(n_new)
    for name, modality in new_items.items():
        catalogue = dataset.modalities.get(name)
        if catalogue is None:
            raise InputError(f"the run's dataset has no {name} features, so new items cannot be placed by {name}")
        if modality.width != catalogue.width:
            raise InputError(f"new {name} features are {modality.width}-d but the dataset's are {catalogue.width}-d")
        candidates = catalogue.mask & warm
        if not 1 <= neighbours <= candidates.sum():
            raise InputError(f"neighbours must be between 1 and the {int(candidates.sum())} catalogue items with "
                             f"{name} content and training interactions; got {neighbours}")
        weights = neighbour_mean_weights(torch.from_numpy(modality.features), torch.from_numpy(catalogue.features),
                                         neighbours, candidate_mask=torch.from_numpy(candidates))
        per_modality.append(_scale_rows(weights, torch.from_numpy(modality.mask.astype(np.float32))))
        covered += modality.mask
    if not covered.all():
        raise InputError(f"new item {int(np.flatnonzero(covered == 0)[0])} has no content in any modality "
                         f"(every mask entry is False), so it cannot be placed")
    return _scale_rows(sum(per_modality[1:], per_modality[0]).coalesce(), torch.from_numpy(1.0 / covered).float())


def _scale_rows(matrix: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """diag(factors) @ matrix for a coalesced sparse COO matrix."""
    indices = matrix.indices()
    values = matrix.values() * factors[indices[0]]
    return torch.sparse_coo_tensor(indices, values, matrix.shape, check_invariants=False).coalesce()


def fold_in(item_vectors: np.ndarray, seeds: list[np.ndarray]) -> np.ndarray:
    """One fold-in user vector per list of seed item IDs: the mean of those items' vectors (float32)."""
    if any(len(items) == 0 for items in seeds):
        raise InputError("a new user needs at least one known item")
    return np.stack([np.asarray(item_vectors[np.asarray(items, dtype=np.int64)], dtype=np.float64).mean(axis=0)
                     for items in seeds]).astype(np.float32)
