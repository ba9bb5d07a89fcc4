"""A run's life: train one into its directory, load a finished one, evaluate it and rank from it.

One run per directory. A run directory holds one run's files (``RUN_FILES``); training into a
directory that holds another run's files is refused unless the caller resumes the same run or asks
for those files to be replaced (``overwrite``), in which case they are removed before anything new
is written. Files that are not run files are never touched.

Loading a run recomputes its dataset's fingerprint and refuses a dataset that changed since
training (``allow_data_change`` accepts it, and the loaded run says so in ``data_changed``).
Evaluating or ranking from a loaded run builds no optimiser or sampler: it scores with the best
weights through :func:`fitmm.evaluation.rank_excluding`, the one ranking-with-exclusions routine.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.data import Dataset, NewItems, load_dataset
from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS
from fitmm.data.fingerprint import fingerprint_difference
from fitmm.errors import InputError
from fitmm.evaluation import EvaluationResult, excluded_splits, rank_excluding
from fitmm.files import read_json, write_json
from fitmm.models import Recommender, get_model_class
from fitmm.retrieval import fold_in, new_item_weights
from fitmm.training.checkpoints import identity_difference, load_checkpoint, run_identity
from fitmm.training.precision import check_precision
from fitmm.training.settings import RunSettings, parse_overrides, resolve_settings
from fitmm.training.trainer import Trainer, evaluate_model, reset_peak_rss, seed_everything

log = logging.getLogger("fitmm.training")

RUN_FILES = ("run.json", "result.json", "best.pt", "last.pt", "per_user_valid.npz", "per_user_test.npz",
             "train.log")
SPLITS = ("train", "valid", "test")


def build_model(settings: RunSettings, dataset: Dataset) -> Recommender:
    """Seed the global random generators with the run's seed and construct its model."""
    seed_everything(settings.training.seed)
    return get_model_class(settings.model)(dataset, settings.hyperparameters)


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


def _claim_directory(out_dir: Path, identity: dict, *, resume: bool, overwrite: bool) -> None:
    """Make ``out_dir`` this run's directory, or refuse (module docstring: one run per directory)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out_dir}: cannot create the directory ({error.strerror})") from None
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if present and overwrite:
        for name in present:
            (out_dir / name).unlink()
    elif present:
        run_file = out_dir / "run.json"
        if not resume:
            raise InputError(f"--out {out_dir}: holds a run already ({', '.join(present)}); continue it with "
                             "--resume, or replace its files with --overwrite")
        if not run_file.exists():
            raise InputError(f"--out {out_dir}: holds run files ({', '.join(present)}) but no run.json, so it "
                             "cannot be resumed; replace them with --overwrite")
        difference = identity_difference(identity, read_json(run_file).get("identity") or {})
        if difference is not None:
            raise InputError(f"--out {out_dir}: holds another run, which --resume cannot continue ({difference}); "
                             "use another directory or --overwrite")
    try:
        write_json(out_dir / "run.json", {"identity": identity})
    except OSError as error:
        raise InputError(f"--out {out_dir}: cannot write there ({error.strerror})") from None


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
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train ``model`` on ``dataset`` and return the result written to ``out/result.json``.

    ``overrides`` is a dict of settings or a list of ``"key=value"`` strings (as ``--set``);
    ``seed``, ``epochs`` and ``device`` override those settings too. ``resume=True`` continues the
    run in ``out`` from its last checkpoint (and starts it if ``out`` holds no run);
    ``overwrite=True`` replaces another run's files in ``out``. Without ``out`` the run goes to a
    new temporary directory.
    """
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: continue the run or replace it")
    reset_peak_rss()  # result.json's peak RSS is this run's, not that of runs before it in this process
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    for key, value in (("seed", seed), ("epochs", epochs), ("device", device)):
        if value is not None:
            overrides[key] = value
    settings = resolve_settings(model, config_file, overrides)
    if settings.training.device == "cuda" and not torch.cuda.is_available():
        raise InputError("setting device='cuda': PyTorch sees no CUDA device here")
    check_precision(settings.training.precision, settings.training.device)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    identity = run_identity(model, settings.as_dict(), data.fingerprint)
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"fitmm-{model}-"))
    _claim_directory(out_dir, identity, resume=resume, overwrite=overwrite)
    with _run_log(out_dir):
        trainer = Trainer(build_model(settings, data), data, settings.training, out_dir, identity, progress=progress)
        if resume and trainer.model.trainable:
            trainer.resume()
        trainer.fit()
        return trainer.result()


@dataclass(frozen=True)
class Recommendation:
    """One user's ranked list, best first: raw IDs unless internal IDs were asked for."""

    user: str | int
    items: list
    scores: list[float]


@dataclass
class TrainedRun:
    """A finished run reloaded from its directory: its best weights, settings and dataset.

    ``data_changed`` says how the dataset differs from the one the run was trained on, when it was
    loaded with ``allow_data_change`` (None when it is the same).
    """

    directory: Path
    result: dict
    dataset: Dataset
    settings: RunSettings
    model: Recommender
    data_changed: str | None = None

    @cached_property
    def _score(self):
        """The model's scorer at its best weights, built once: the weights of a loaded run never change."""
        self.model.eval()
        with torch.no_grad():
            return self.model.scorer()

    @cached_property
    def score_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(user vectors, item vectors) whose inner products are exactly the model's scores, on the
        CPU in float32; None for a model whose score is not such an inner product."""
        self.model.eval()
        with torch.no_grad():
            vectors = self.model.score_vectors()
        return None if vectors is None else tuple(v.detach().to("cpu", torch.float32).contiguous() for v in vectors)

    def evaluate(self, split: str = "test") -> EvaluationResult:
        """Re-score the saved best weights on ``split`` (valid or test), as training evaluated them."""
        if split not in ("valid", "test"):
            raise InputError(f"unknown split '{split}': choose valid or test")
        return evaluate_model(self.model, self.dataset, split, self.settings.training)

    def recommend(self, users=None, k: int = 20, *, items: list[list] | None = None,
                  exclude: tuple[str, ...] = ("train",), new_items: NewItems | None = None,
                  neighbours: int = NEW_ITEM_NEIGHBOURS, internal_ids: bool = False) -> list[Recommendation]:
        """Top-``k`` recommendations for known ``users`` or, with ``items``, for new users.

        ``users``: IDs of users in the training data (raw IDs; internal ones with
        ``internal_ids``). ``items``: one list of item IDs per new user, who is scored by the fold-in
        rule (``fitmm.retrieval``) and never gets those items back; their lists are labelled 0, 1, ….
        ``exclude``: splits whose items are left out for known users. ``new_items`` (see
        ``fitmm.data.load_new_items``) are ranked in with the catalogue by their content. A user
        with fewer than ``k`` items left gets a shorter list.
        """
        if (users is None) == (items is None):
            raise InputError("give either users (known users) or items (one item list per new user)")
        bad = sorted(set(exclude) - set(SPLITS))
        if bad:
            raise InputError(f"unknown split '{bad[0]}' to exclude: choose from {', '.join(SPLITS)}")
        weights = None if new_items is None else new_item_weights(self.dataset, new_items.modalities, neighbours)
        n_ranked = self.dataset.n_items + (0 if weights is None else weights.shape[0])
        if not 1 <= k <= n_ranked:
            raise InputError(f"k must be between 1 and the number of items, {n_ranked}; got {k}")
        ranked_ids = self._ranked_item_ids(new_items, internal_ids)
        if items is not None:
            queries, seeds = self._fold_in(items, internal_ids)
            labels, rows = list(range(len(items))), np.arange(len(items))
            excluded = [_seed_matrix(seeds, self.dataset.n_items)]

            def score_rows(batch: np.ndarray) -> torch.Tensor:
                return queries[torch.from_numpy(batch)] @ self.score_vectors[1].T
        else:
            labels, rows = list(users), self._internal(users, "user", internal_ids)
            excluded = [self.dataset.split_matrix(split) for split in exclude]
            device = torch.device(self.settings.training.device)

            def score_rows(batch: np.ndarray) -> torch.Tensor:
                return self._score(torch.from_numpy(batch).to(device)).to("cpu", torch.float32).clone()
        out = []
        batch_size = self.settings.training.eval_batch_size
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size]
                scores = score_rows(batch)
                if weights is not None:
                    scores = torch.cat([scores, torch.sparse.mm(weights, scores.T).T], dim=1)
                ranked, values, lengths = rank_excluding(scores, batch, excluded, k)
                for offset, length in enumerate(lengths.tolist()):
                    out.append(Recommendation(labels[start + offset],
                                              ranked_ids[ranked[offset, :length].numpy()].tolist(),
                                              values[offset, :length].tolist()))
        return out

    def _internal(self, ids, kind: str, internal_ids: bool) -> np.ndarray:
        """Internal IDs of ``ids`` (raw IDs, or internal ones checked for range)."""
        count = self.dataset.n_users if kind == "user" else self.dataset.n_items
        if internal_ids:
            values = np.asarray(list(ids), dtype=np.int64)
            bad = values[(values < 0) | (values >= count)]
            if bad.size:
                raise InputError(f"internal {kind} ID {bad[0]} is outside 0..{count - 1}")
            return values
        return self.dataset.internal_ids(kind, [str(value) for value in ids])

    def _ranked_item_ids(self, new_items: NewItems | None, internal_ids: bool) -> np.ndarray:
        """The ID of every ranked column: the catalogue's items, then the new items."""
        n_items = self.dataset.n_items
        n_new = 0 if new_items is None else new_items.count
        if internal_ids:
            return np.arange(n_items + n_new)
        catalogue = self.dataset.raw_ids("item").astype(object)
        if new_items is None:
            return catalogue
        return np.concatenate([catalogue, new_items.checked_ids(catalogue)])

    def _fold_in(self, items: list[list], internal_ids: bool) -> tuple[torch.Tensor, list[np.ndarray]]:
        if self.score_vectors is None:
            raise InputError(f"model '{self.settings.model}' does not score by fixed user and item vectors, so new "
                             "users cannot be folded in")
        seeds = [np.unique(self._internal(user_items, "item", internal_ids)) for user_items in items]
        return torch.from_numpy(fold_in(self.score_vectors[1].numpy(), seeds)), seeds

    def write_recommendations(self, split: str, k: int, path: str | Path, *, internal_ids: bool = False,
                              new_items: NewItems | None = None, neighbours: int = NEW_ITEM_NEIGHBOURS
                              ) -> tuple[int, int]:
        """The top-k of every evaluated user of ``split`` as CSV ``user_id,item_id,rank,score`` (raw
        IDs unless ``internal_ids``), new items ranked in as in :meth:`recommend`. Returns the number
        of users and how many of them got fewer than k items."""
        users = self.dataset.evaluation_users(split)
        exclude = excluded_splits(split, self.settings.training.exclude_valid)
        labels = users if internal_ids else self.dataset.raw_ids("user")[users]
        lists = self.recommend(labels, k, exclude=exclude, internal_ids=internal_ids, new_items=new_items,
                               neighbours=neighbours)
        _write_csv(lists, path)
        return len(lists), sum(len(ranked.items) < k for ranked in lists)

    def write_new_user_recommendations(self, users: dict[str, list], k: int, path: str | Path, *,
                                       internal_ids: bool = False, new_items: NewItems | None = None,
                                       neighbours: int = NEW_ITEM_NEIGHBOURS) -> tuple[int, int]:
        """The top-k of users absent from training, ``{user label: their item IDs}`` (see
        ``fitmm.data.new_users``), folded in as in :meth:`recommend`, as the same CSV as
        :meth:`write_recommendations` under the users' own labels. Returns the number of users and
        how many of them got fewer than k items."""
        lists = self.recommend(k=k, items=list(users.values()), internal_ids=internal_ids, new_items=new_items,
                               neighbours=neighbours)
        lists = [replace(ranked, user=label) for label, ranked in zip(users, lists)]
        _write_csv(lists, path)
        return len(lists), sum(len(ranked.items) < k for ranked in lists)


def _write_csv(lists: list[Recommendation], path: str | Path) -> None:
    """Ranked lists as CSV ``user_id,item_id,rank,score``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "item_id", "rank", "score"])
            for ranked in lists:
                for rank, (item, value) in enumerate(zip(ranked.items, ranked.scores), start=1):
                    writer.writerow([ranked.user, item, rank, repr(float(value))])
    except OSError as error:
        raise InputError(f"--out {path}: cannot write ({error.strerror})") from None


def _seed_matrix(seeds: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """The seed items of new users as a CSR matrix (one row per user): excluded from their lists."""
    rows = np.repeat(np.arange(len(seeds)), [len(items) for items in seeds])
    columns = np.concatenate(seeds) if seeds else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(len(seeds), n_items))


def load_run(directory: str | Path, *, allow_data_change: bool = False) -> TrainedRun:
    """Reload a finished run (``result.json`` and ``best.pt``) with its dataset.

    The dataset's fingerprint is recomputed and compared with the run's: a changed dataset is an
    InputError naming what changed, unless ``allow_data_change`` (then ``data_changed`` says it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--run {directory}: no such run directory")
    if not (directory / "result.json").exists():
        raise InputError(f"--run {directory}: no result.json (not a finished fitmm run directory)")
    result = read_json(directory / "result.json")
    missing = [key for key in ("model", "dataset", "config", "dataset_fingerprint") if key not in result]
    fingerprint = result.get("dataset_fingerprint")
    if missing or not isinstance(result["config"], dict) or not isinstance(fingerprint, dict) \
            or not isinstance(fingerprint.get("files"), dict) or not {"users", "items"} <= set(fingerprint):
        raise InputError(f"{directory / 'result.json'}: not a result of this fitmm version "
                         f"({'no ' + missing[0] if missing else 'malformed settings or dataset fingerprint'})")
    settings = resolve_settings(result["model"], overrides=result["config"],
                                overrides_source=str(directory / "result.json"))
    dataset = load_dataset(result.get("dataset_source") or result["dataset"])
    data_changed = fingerprint_difference(result["dataset_fingerprint"], dataset.fingerprint)
    if data_changed and not allow_data_change:
        raise InputError(f"--run {directory}: the dataset changed since training ({data_changed}); retrain, or "
                         "pass --allow-data-change to use it anyway")
    if data_changed and (dataset.n_users, dataset.n_items) != (result["dataset_fingerprint"]["users"],
                                                               result["dataset_fingerprint"]["items"]):
        raise InputError(f"--run {directory}: the dataset changed since training ({data_changed}), and the run's "
                         "model cannot score a different number of users or items; retrain")
    identity = run_identity(result["model"], settings.as_dict(), result["dataset_fingerprint"])
    state = load_checkpoint(directory / "best.pt", identity)
    model = build_model(settings, dataset)
    model.to(settings.training.device)
    model.load_state_dict(state["model"])
    if data_changed:
        log.warning("%s: the dataset changed since training (%s); using it anyway", directory, data_changed)
    return TrainedRun(directory=directory, result=result, dataset=dataset, settings=settings, model=model,
                      data_changed=data_changed)
