"""What every model offers the trainer and the evaluator."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from fitmm.data.dataset import Dataset

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]


class Recommender(nn.Module):
    """Base class of the models in the registry.

    A model is built as ``Model(dataset, **hyperparameters)``, where the hyperparameters are
    exactly the keys of its YAML defaults (``fitmm/models/configs/<name>.yaml``). It implements:

    - ``loss(users, positives, negatives)``: a dict of scalar tensors; ``"loss"`` is the total
      that is minimised, the other entries are its parts, logged per epoch. ``negatives`` is
      ``None`` for models whose ``uses_negatives`` is False.
    - ``scorer()``: a function from a batch of user IDs to their scores for every item
      (users × items), called in eval mode under ``torch.no_grad``.

    It may override ``on_epoch_start(epoch)`` (a hook run before each training epoch) and
    ``diagnostics()`` (JSON-ready values recorded in ``result.json`` at the best epoch).
    """

    uses_negatives: ClassVar[bool] = True
    trainable: ClassVar[bool] = True

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items

    def loss(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def scorer(self) -> ScoreFunction:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based); nothing by default."""

    def diagnostics(self) -> dict:
        """Values describing the trained model, recorded in ``result.json``; none by default."""
        return {}


def xavier_uniform_table(rows: int, width: int) -> nn.Parameter:
    """A free (rows × width) parameter, Xavier-uniform on its own shape as in the references
    (ID embedding tables, LGMRec's bias-free projections)."""
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(rows, width)))


def embedding_scorer(users_embedding: torch.Tensor, items_embedding: torch.Tensor) -> ScoreFunction:
    """Dot-product scores of fixed user and item representations."""

    def score(user_ids: torch.Tensor) -> torch.Tensor:
        return users_embedding[user_ids.to(users_embedding.device)] @ items_embedding.T

    return score
