"""Item content features as tensors, for the models that read ``dataset.modalities``.

A modality's placeholder rows (mask False: the item has no real content there) are replaced by the
**mean of the real rows** before a model sees them. That is the convention of the released Amazon
data, where an item without an image carries the mean image vector, so every row can be projected
like the others, and a model trained on data with masks sees the same kind of input as the
references did. The mask travels with the features: models that build content graphs pass it to
``fitmm.graph.knn.knn_graph(mask=...)`` so that placeholders get no content edges.
"""

from __future__ import annotations

import torch
from torch import nn

from fitmm.data.dataset import MODALITIES, Dataset
from fitmm.errors import InputError
from fitmm.graph.knn import knn_graph


def content_features(dataset: Dataset, modality: str, model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, mask)`` of one modality: float32 items×width with placeholders imputed, bool items.

    Raises InputError when the dataset has no such modality, or no item with real content in it.
    """
    if modality not in dataset.modalities:
        raise InputError(
            f"model '{model}' needs {modality} features, but dataset '{dataset.name}' has none "
            f"(expected {modality}_feat.npy in the dataset folder)"
        )
    content = dataset.modalities[modality]
    mask = torch.from_numpy(content.mask.astype(bool))
    if not mask.any():
        raise InputError(f"model '{model}': no item of dataset '{dataset.name}' has real {modality} content")
    features = torch.from_numpy(content.features).to(torch.float32).clone()
    features[~mask] = features[mask].double().mean(dim=0).to(torch.float32)
    return features, mask


def register_features(module: nn.Module, name: str, features: torch.Tensor, trainable: bool) -> None:
    """Attach a feature table to ``module`` as ``name``.

    Trainable tables are parameters (Adam fine-tunes them, checkpoints hold them); frozen tables
    are non-persistent buffers, rebuilt from the dataset, so checkpoints hold only learned weights.
    """
    if trainable:
        module.register_parameter(name, nn.Parameter(features))
    else:
        module.register_buffer(name, features, persistent=False)


def available_content(dataset: Dataset, model: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``content_features`` of every modality the dataset has, in ``MODALITIES`` order (image, text).

    For the models that run on whichever modalities exist; raises InputError when there is none.
    """
    present = [name for name in MODALITIES if name in dataset.modalities]
    if not present:
        raise InputError(f"model '{model}' needs image and/or text features; dataset '{dataset.name}' has none")
    return {name: content_features(dataset, name, model) for name in present}


def content_knn_graph(features: torch.Tensor, mask: torch.Tensor, k: int, *, weighting: str,
                      mask_placeholders: bool, model: str, modality: str, nodes: str = "items") -> torch.Tensor:
    """``knn_graph`` of one modality's content rows (of items, or of ``nodes`` such as users' content
    profiles), with ``k`` checked against the number of rows with content: a one-line InputError.

    ``mask_placeholders``: placeholder rows get only a self-loop and are nobody's neighbour
    (project decision, docs/baselines.md §1.6); False treats them as content, as the references do.
    """
    n_content = int(mask.sum()) if mask_placeholders else mask.numel()
    if not 1 <= k <= n_content:
        raise InputError(f"model '{model}': the {modality} kNN size {k} must be between 1 and the "
                         f"{n_content} {nodes} with {modality} content")
    return knn_graph(features, k, mask=mask if mask_placeholders else None, weighting=weighting)
