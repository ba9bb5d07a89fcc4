"""What every model offers the trainer and the evaluator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fitmm.data.dataset import Dataset

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]

AUTOCAST_ROW_MULTIPLE = 64


class Recommender(nn.Module):
    """Base class of the models in the registry.

    A model is built as ``Model(dataset, settings)``, where ``settings`` is an instance of its
    ``Settings`` dataclass: every hyperparameter declared once, with type, default, allowed range
    and description (``fitmm.settings.setting``). ``training_defaults`` overrides shared training
    settings for this model (e.g. its learning rate); named presets live in
    ``fitmm/models/configs/<name>.<preset>.yaml``. It implements:

    - ``loss(users, positives, negatives)``: a dict of scalar tensors; ``"loss"`` is the total
      that is minimised, the other entries are its parts, logged per epoch. ``negatives`` is
      ``None`` for models whose ``uses_negatives`` is False.
    - ``score_vectors()``: (user vectors, item vectors) whose inner products are exactly its
      scores, computed once at the current weights; or, for a model whose score is not such an inner
      product, ``scorer()`` instead (and ``score_vectors()`` returns None). Both are called in eval
      mode under ``torch.no_grad``. Exports, new-user fold-in and ANN serving need the vectors.

    It may override ``on_epoch_start(epoch)`` and ``on_epoch_end(epoch)`` (hooks run around each
    training epoch) and ``diagnostics()`` (JSON-ready values recorded in ``result.json`` per epoch
    and at the best epoch).
    """

    @dataclass(frozen=True)
    class Settings:
        """No hyperparameters."""

    training_defaults: ClassVar[dict] = {}
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

    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(users × d, items × d) whose inner products are the scores; None if the score is not one."""
        raise NotImplementedError

    def scorer(self) -> ScoreFunction:
        """A function from a batch of user IDs to their scores for every item (users × items)."""
        users, items = self.score_vectors()

        def score(user_ids: torch.Tensor) -> torch.Tensor:
            return users[user_ids.to(users.device)] @ items.T

        return score

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based); nothing by default."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch's last batch, before it is evaluated; nothing by default."""

    def diagnostics(self) -> dict:
        """Values describing the trained model, recorded in ``result.json``; none by default."""
        return {}


def xavier_uniform_table(rows: int, width: int) -> nn.Parameter:
    """A free (rows × width) parameter, Xavier-uniform on its own shape as in the references
    (ID embedding tables, LGMRec's bias-free projections)."""
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(rows, width)))


def padded_for_autocast(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (distinct row ids), padded under autocast to a multiple of ``AUTOCAST_ROW_MULTIPLE``
    by repeating the first; unchanged outside autocast.

    A model that computes only its batch's distinct rows then multiplies matrices of a few shapes
    instead of a new shape per batch; on the CPU, oneDNN compiles and keeps a bf16 kernel for every
    shape it meets, and with a new one per batch its cache grew by about a gigabyte in eight bf16
    epochs of FITMM on ml100k. The padding rows come after the real ones, so positions into
    ``rows`` stay valid and no padding row is ever read.
    """
    if not torch.is_autocast_enabled(rows.device.type):
        return rows
    return torch.cat([rows, rows[:1].expand(-rows.numel() % AUTOCAST_ROW_MULTIPLE)])


def batch_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values of ``ids`` (sorted, padded under autocast by ``padded_for_autocast``)
    and, for each of ``ids``, its position among them."""
    distinct, positions = torch.unique(ids, return_inverse=True)
    return padded_for_autocast(distinct), positions
