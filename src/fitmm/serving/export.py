"""Exports: a trained run's scoring vectors, IDs and exclusions as plain files, served without model code.

``fitmm export --run DIR --out EXPORT`` writes:

- ``user_vectors.npy`` (users × d) and ``item_vectors.npy`` (items × d), float32: the model's score
  of user u for item i is exactly ``user_vectors[u] · item_vectors[i]`` (models whose score is not
  such an inner product are refused);
- ``user_ids.txt`` and ``item_ids.txt``: the raw ID of each row, one per line;
- with ``--new-items DIR`` (a folder of ``fitmm data encode``): those items appended after the
  catalogue's, each with the vector that gives it the new-item rule's score (``fitmm.retrieval``:
  the mean of its content neighbours' scores is, for an inner-product model, the inner product
  with the mean of their vectors);
- ``train_items.npz``: each user's training items (CSR ``indptr``/``indices``), excluded from their
  recommendations;
- ``manifest.json``: the model, the run it came from, the dataset fingerprint, sizes, the files and
  the parameters of the approximate-nearest-neighbour index (a FAISS HNSW graph over the item
  vectors for the inner product), with its recall against exact ranking measured at export time.

Every file is read back with loaders that cannot run code or parse opaque binaries
(``numpy.load(allow_pickle=False)``, JSON, text): the ANN index is rebuilt from the vectors with the
recorded parameters when a server starts, never read from a file. The vectors are memory-mapped,
so several server processes share one copy.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS, NewItems
from fitmm.errors import InputError
from fitmm.files import atomic_write, write_json
from fitmm.retrieval import new_item_weights
from fitmm.serving import DEFAULT_HNSW
from fitmm.serving.index import ExactIndex, HnswIndex, Retriever

if TYPE_CHECKING:
    from fitmm.training.runs import TrainedRun

FORMAT = 1
MANIFEST = "manifest.json"
RECALL_K, RECALL_SAMPLE = 20, 1000


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def ann_recall(export: Export, k: int = RECALL_K, sample: int = RECALL_SAMPLE) -> float:
    """Mean recall@k of the HNSW index against exact ranking, training items excluded, over up to
    ``sample`` users (evenly spaced)."""
    users = np.unique(np.linspace(0, len(export.user_ids) - 1, min(sample, len(export.user_ids))).astype(np.int64))
    exact = Retriever(export.user_vectors, export.item_vectors, export.train_items, ExactIndex(export.item_vectors))
    approximate = Retriever(export.user_vectors, export.item_vectors, export.train_items,
                            HnswIndex(export.item_vectors, export.manifest["ann"]))
    found = []
    for (truth, _), (answer, _) in zip(exact.for_users(users, k, True), approximate.for_users(users, k, True)):
        if len(truth):
            found.append(len(np.intersect1d(truth, answer)) / len(truth))
    return float(np.mean(found))


def export_run(run: TrainedRun, out: str | Path, *, ann: dict | None = DEFAULT_HNSW,
               new_items: NewItems | None = None, neighbours: int = NEW_ITEM_NEIGHBOURS) -> dict:
    """Write the export of ``run`` into the folder ``out`` (module docstring); returns the manifest.

    ``ann``: the HNSW parameters recorded for servers (``DEFAULT_HNSW``), or None for an export
    served exactly only. ``new_items`` are appended to the catalogue with their borrowed vectors.
    ``out`` must be new or empty, or an earlier export (its files are replaced).
    """
    vectors = run.score_vectors
    if vectors is None:
        raise InputError(f"model '{run.settings.model}' does not score by an inner product of fixed user and item "
                         "vectors (e.g. lgmrec with deterministic_eval false), so it cannot be exported")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise InputError(f"--out {out}: not an empty folder or an earlier export; choose a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out}: cannot create the folder ({error.strerror})") from None
    users, items = (vector.numpy().astype(np.float32) for vector in vectors)
    item_ids = run.dataset.raw_ids("item").astype(object)
    train = run.dataset.train
    if new_items is not None:
        weights = new_item_weights(run.dataset, new_items.modalities, neighbours)
        items = np.vstack([items, torch.sparse.mm(weights, torch.from_numpy(items)).numpy()])
        item_ids = np.concatenate([item_ids, new_items.checked_ids(item_ids)])
        train = sp.csr_matrix((train.data, train.indices, train.indptr), shape=(train.shape[0], len(item_ids)))
    files = {"user_vectors": "user_vectors.npy", "item_vectors": "item_vectors.npy", "user_ids": "user_ids.txt",
             "item_ids": "item_ids.txt", "train_items": "train_items.npz"}
    atomic_write(out / files["user_vectors"], _npy_bytes(users))
    atomic_write(out / files["item_vectors"], _npy_bytes(items))
    for kind, ids in (("user", run.dataset.raw_ids("user")), ("item", item_ids)):
        atomic_write(out / files[f"{kind}_ids"], "".join(f"{raw}\n" for raw in ids.tolist()))
    buffer = io.BytesIO()
    np.savez(buffer, indptr=train.indptr.astype(np.int64), indices=train.indices.astype(np.int64))
    atomic_write(out / files["train_items"], buffer.getvalue())
    manifest = {
        "format": FORMAT,
        "model": run.settings.model,
        "run": str(run.directory.resolve()),
        "best_epoch": run.result["best_epoch"],
        "score": "inner product of user_vectors and item_vectors",
        "users": int(users.shape[0]),
        "items": int(items.shape[0]),
        "dim": int(users.shape[1]),
        "dataset": {"name": run.dataset.name, "fingerprint": run.result["dataset_fingerprint"]},
        "new_items": 0 if new_items is None else {"count": new_items.count, "neighbours": neighbours},
        "files": files,
        "ann": None if ann is None else {"kind": "faiss IndexHNSWFlat", "metric": "inner product", **ann},
    }
    write_json(out / MANIFEST, manifest)
    if ann is not None:
        manifest["ann"][f"recall@{RECALL_K}_vs_exact"] = ann_recall(load_export(out))
        write_json(out / MANIFEST, manifest)
    return manifest


@dataclass
class Export:
    """An export read back: memory-mapped vectors, raw IDs and training items."""

    manifest: dict
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    train_items: sp.csr_matrix


def _read_ids(path: Path, count: int) -> np.ndarray:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read as UTF-8 text ({type(error).__name__})") from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        raise InputError(f"{path}: {len(lines)} IDs, the vectors have {count} rows")
    if len(set(lines)) != count:
        raise InputError(f"{path}: an ID occurs twice")
    return np.array(lines, dtype=object)


def _load_vectors(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 2 or array.dtype != np.float32:
        raise InputError(f"{path}: expected a 2-D float32 array, got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{path}: holds NaN or infinite values")
    return array


def load_export(folder: str | Path) -> Export:
    """Read an export folder; every fault is an InputError naming the file."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"--export {folder}: no {MANIFEST} (not a fitmm export; write one with fitmm export)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{manifest_path}: not valid JSON (truncated or corrupt)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{manifest_path}: not an export manifest of this fitmm version")
    files = manifest["files"]
    try:
        users = _load_vectors(folder / files["user_vectors"])
        items = _load_vectors(folder / files["item_vectors"])
        user_ids = _read_ids(folder / files["user_ids"], users.shape[0])
        item_ids = _read_ids(folder / files["item_ids"], items.shape[0])
        train_path = folder / files["train_items"]
    except (KeyError, TypeError):
        raise InputError(f"{manifest_path}: the list of files is incomplete") from None
    if users.shape[1] != items.shape[1]:
        raise InputError(f"{folder}: user vectors are {users.shape[1]}-d but item vectors {items.shape[1]}-d")
    try:
        with np.load(train_path, allow_pickle=False) as archive:
            indptr, indices = archive["indptr"], archive["indices"]
        train = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                              shape=(users.shape[0], items.shape[0]))
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{train_path}: not a readable list of training items ({type(error).__name__})") from None
    return Export(manifest, users, items, user_ids, item_ids, train)
