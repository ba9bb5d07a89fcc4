"""The Python API: train a model, reload a finished run, evaluate it, recommend with it."""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from fitmm.data import Dataset, Modality, load_dataset
from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS
from fitmm.errors import InputError
from fitmm.evaluation import EvaluationResult, top_k
from fitmm.graph.knn import neighbour_mean_weights
from fitmm.models import get_model_class
from fitmm.models.base import Recommender, ScoreFunction
from fitmm.training.config import model_hyperparameters, parse_overrides, resolve_config
from fitmm.files import write_json
from fitmm.training.trainer import Trainer, seed_everything


def build_model(name: str, dataset: Dataset, config: dict) -> Recommender:
    """Seed the global RNGs with ``config['seed']`` and construct the model."""
    seed_everything(config["seed"])
    return get_model_class(name)(dataset, **model_hyperparameters(name, config))


@contextmanager
def _run_log(out_dir: Path):
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("fitmm")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def train(
    model: str = "fitmm",
    dataset: str | Path | Dataset = "ml100k",
    out: str | Path | None = None,
    *,
    seed: int | None = None,
    epochs: int | None = None,
    config_file: str | Path | None = None,
    overrides: dict | list[str] | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train ``model`` on ``dataset`` and return the result that is written to ``out/result.json``.

    ``overrides`` is a dict of settings or a list of ``"key=value"`` strings (as ``--set``);
    ``seed``, ``epochs`` and ``device`` override those settings too. With ``resume=True`` a run
    directory holding a resumable checkpoint continues where it stopped.
    """
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    for key, value in (("seed", seed), ("epochs", epochs), ("device", device)):
        if value is not None:
            overrides[key] = value
    config = resolve_config(model, config_file, overrides)
    if config["device"] == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but PyTorch sees no CUDA device")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"fitmm-{model}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / "run.json"
    identity = {"model": model, "dataset": data.name, "dataset_source": data.source, "config": config}
    if resume and run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != identity:
            raise InputError(f"{run_file}: --resume with different model, dataset or settings than the saved run")
    write_json(run_file, identity)
    with _run_log(out_dir):
        trainer = Trainer(build_model(model, data, config), data, config, out_dir, progress=progress)
        if resume and trainer.model.trainable:
            trainer.resume()
        trainer.fit()
        return trainer.result()


@dataclass
class TrainedRun:
    """A finished run reloaded from its directory: the model with its best weights, and its data."""

    directory: Path
    result: dict
    dataset: Dataset
    model: Recommender

    @property
    def config(self) -> dict:
        return self.result["config"]

    def _trainer(self) -> Trainer:
        return Trainer(self.model, self.dataset, self.config, self.directory, progress=False)

    @cached_property
    def _score(self) -> ScoreFunction:
        """The model's scorer at its best weights, built once: the weights of a loaded run never change."""
        self.model.eval()
        with torch.no_grad():
            return self.model.scorer()

    def evaluate(self, split: str = "test") -> EvaluationResult:
        """Re-score the saved best weights on ``split`` (valid or test)."""
        if split not in ("valid", "test"):
            raise InputError(f"unknown split '{split}': choose valid or test")
        return self._trainer().evaluate(split)

    def recommend(self, users: np.ndarray, k: int, exclude_splits: tuple[str, ...] = ("train",), *,
                  new_items: dict[str, Modality] | None = None, neighbours: int = NEW_ITEM_NEIGHBOURS,
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item IDs and their scores for each of ``users``, items of ``exclude_splits`` removed.

        ``new_items`` (content of items the model never saw, see ``fitmm.data.load_new_items``)
        joins them to the ranking with IDs ``n_items + row``: each new item scores the mean of
        the scores of its ``neighbours`` most similar catalogue items with training interactions,
        averaged over the modalities where it has content.
        """
        weights = None if new_items is None else new_item_weights(self.dataset, new_items, neighbours)
        n_ranked = self.dataset.n_items + (0 if weights is None else weights.shape[0])
        if not 1 <= k <= n_ranked:
            raise InputError(f"k must be between 1 and the number of items, {n_ranked}; got {k}")
        users = np.asarray(users, dtype=np.int64)
        bad = users[(users < 0) | (users >= self.dataset.n_users)]
        if bad.size:
            raise InputError(f"user ID {bad[0]} is outside 0..{self.dataset.n_users - 1}")
        device = torch.device(self.config["device"])
        items, scores = [], []
        with torch.no_grad():
            score = self._score
            for start in range(0, len(users), self.config["eval_batch_size"]):
                batch = users[start:start + self.config["eval_batch_size"]]
                values = score(torch.from_numpy(batch).to(device)).to("cpu", torch.float32).clone()
                borrowed = None if weights is None else torch.sparse.mm(weights, values.T).T
                for split in exclude_splits:
                    block = self.dataset.split_matrix(split)[batch]
                    rows = np.repeat(np.arange(len(batch)), np.diff(block.indptr))
                    values[rows, block.indices] = -torch.inf
                if borrowed is not None:
                    values = torch.cat([values, borrowed], dim=1)
                ranked = top_k(values, k)
                items.append(ranked.numpy())
                scores.append(values.gather(1, ranked).numpy())
        return np.concatenate(items), np.concatenate(scores)

    def write_recommendations(self, split: str, k: int, path: str | Path, *,
                              new_items: dict[str, Modality] | None = None,
                              neighbours: int = NEW_ITEM_NEIGHBOURS) -> int:
        """PROTOCOL's ``fitmm recommend``: top-k for every evaluated user of ``split`` as CSV
        (with ``new_items``, ranked together with the catalogue as in ``recommend``)."""
        users = self.dataset.evaluation_users(split)
        exclude = ("train", "valid") if split == "test" and self.config["exclude_valid"] else ("train",)
        items, scores = self.recommend(users, k, exclude, new_items=new_items, neighbours=neighbours)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "item_id", "rank", "score"])
            for user, user_items, user_scores in zip(users, items, scores):
                for rank, (item, value) in enumerate(zip(user_items, user_scores), start=1):
                    writer.writerow([int(user), int(item), rank, repr(float(value))])
        return len(users)


def new_item_weights(dataset: Dataset, new_items: dict[str, Modality], neighbours: int) -> torch.Tensor:
    """(new items × catalogue items) sparse weights that give each new item its borrowed score.

    Per modality, a new item with content averages its ``neighbours`` most cosine-similar
    catalogue items among those with content and training interactions; the modalities where it
    has content are then averaged. Modalities and widths must match the dataset's.
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


def load_run(directory: str | Path) -> TrainedRun:
    """Reload a finished run (its ``result.json`` and ``best.pt``)."""
    directory = Path(directory)
    result_path = directory / "result.json"
    if not result_path.exists():
        raise InputError(f"{directory}: no result.json (not a finished fitmm run directory)")
    result = json.loads(result_path.read_text())
    dataset = load_dataset(result["dataset_source"] or result["dataset"])
    model = build_model(result["model"], dataset, result["config"])
    model.to(result["config"]["device"])
    state = torch.load(directory / "best.pt", map_location=result["config"]["device"], weights_only=True)
    model.load_state_dict(state)
    return TrainedRun(directory=directory, result=result, dataset=dataset, model=model)
