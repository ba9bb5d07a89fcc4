"""The in-memory dataset: training matrix, evaluation truth and content features.

A dataset folder follows the MMRec layout (see ``PROTOCOL.md``): ``<name>.inter`` with columns
``userID``, ``itemID``, ``x_label`` (0 train, 1 validation, 2 test), optional
``<modality>_feat.npy`` feature tables with optional ``<modality>_mask.npy`` masks, and optional ID
mappings. Every fault in those files raises :class:`fitmm.errors.InputError` with one line naming
the file, the line or row, and the fault.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fitmm.errors import InputError

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_LABELS = {"train": TRAIN, "valid": VALID, "test": TEST}
MODALITIES = ("image", "text")
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
NEW_ITEM_NEIGHBOURS = 10
"""Default number of similar catalogue items a new item borrows its score from, per modality."""


@dataclass(frozen=True)
class Modality:
    """One content modality: a feature row per item and which rows are real content."""

    features: np.ndarray  # (n_items, width) float32; rows where mask is False are placeholders
    mask: np.ndarray  # (n_items,) bool

    @property
    def width(self) -> int:
        return int(self.features.shape[1])

    @property
    def coverage(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


@dataclass
class Dataset:
    """Interactions split into train/validation/test, plus content features per modality.

    ``users``, ``items`` and ``labels`` hold every interaction row of the ``.inter`` file in file
    order; the sparse matrices are derived from them. Evaluation truth covers only users that
    occur in training (PROTOCOL: the others are dropped from evaluation).
    """

    name: str
    n_users: int
    n_items: int
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    modalities: dict[str, Modality] = field(default_factory=dict)
    source: str | None = None  # folder path, or None for a built-in dataset

    def __post_init__(self) -> None:
        self.train = self._matrix(TRAIN)
        self.valid = self._matrix(VALID)
        self.test = self._matrix(TEST)

    def _matrix(self, label: int) -> sp.csr_matrix:
        rows = self.labels == label
        data = np.ones(int(rows.sum()), dtype=np.float32)
        matrix = sp.csr_matrix(
            (data, (self.users[rows], self.items[rows])), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def split_matrix(self, split: str) -> sp.csr_matrix:
        """The interactions of ``split`` ('train', 'valid' or 'test') as a binary CSR matrix."""
        if split not in SPLIT_LABELS:
            raise InputError(f"unknown split '{split}': choose train, valid or test")
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]

    def evaluation_users(self, split: str) -> np.ndarray:
        """Users with truth in ``split`` who also occur in training (sorted)."""
        truth = self.split_matrix(split)
        has_truth = np.diff(truth.indptr) > 0
        in_train = np.diff(self.train.indptr) > 0
        return np.flatnonzero(has_truth & in_train)

    def summary(self) -> dict:
        """Sizes, density and feature coverage, as printed by ``fitmm info``."""
        n_train, n_valid, n_test = (int(m.nnz) for m in (self.train, self.valid, self.test))
        total = n_train + n_valid + n_test
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": {"train": n_train, "valid": n_valid, "test": n_test, "total": total},
            "density": total / float(self.n_users * self.n_items),
            "evaluated_users": {
                "valid": int(self.evaluation_users("valid").size),
                "test": int(self.evaluation_users("test").size),
            },
            "modalities": {
                name: {"width": m.width, "coverage": m.coverage, "items_with_content": int(m.mask.sum())}
                for name, m in self.modalities.items()
            },
        }


MAX_UNUSED_IDS = 1_000_000
"""Most user (or item) IDs below the largest one that may have no row: the IDs number users and
items from 0, and every ID up to the largest costs memory."""


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a ``.inter`` file strictly; return user, item and label arrays."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = _checked_rows(path, csv.reader(handle, delimiter="\t"))
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: the file is empty (expected a header line)") from None
        header = [name.strip() for name in header]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise InputError(
                f"{path}, line 1: missing column(s) {', '.join(missing)} "
                f"(header has: {', '.join(map(repr, header))}; columns must be tab-separated)"
            )
        positions = [header.index(name) for name in REQUIRED_COLUMNS]
        rows = []
        for line_number, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise InputError(
                    f"{path}, line {line_number}: expected {len(header)} tab-separated fields, "
                    f"found {len(fields)}"
                )
            values = []
            for name, position in zip(REQUIRED_COLUMNS, positions):
                text = fields[position].strip()
                try:
                    value = int(text)
                except ValueError:
                    raise InputError(
                        f"{path}, line {line_number}: {name} {text!r} is not an integer"
                    ) from None
                if value < 0:
                    raise InputError(f"{path}, line {line_number}: {name} {value} is negative")
                values.append(value)
            if values[2] not in (TRAIN, VALID, TEST):
                raise InputError(
                    f"{path}, line {line_number}: x_label {values[2]} is not 0, 1 or 2"
                )
            rows.append(values)
    if not rows:
        raise InputError(f"{path}: no interactions after the header")
    for column, name in enumerate(REQUIRED_COLUMNS[:2]):
        ids = {row[column] for row in rows}
        if max(ids) + 1 - len(ids) > MAX_UNUSED_IDS:
            raise InputError(f"{path}: {max(ids) + 1 - len(ids):,} of the {name}s 0..{max(ids):,} "
                             f"have no row (at most {MAX_UNUSED_IDS:,} may be unused); number "
                             "users and items from 0")
    table = np.asarray(rows, dtype=np.int64)
    return table[:, 0], table[:, 1], table[:, 2]


def _checked_rows(path: Path, reader):
    """The rows of a ``csv.reader``, its faults (text that is not UTF-8, a malformed field)
    raised as one-line InputErrors."""
    try:
        yield from reader
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except csv.Error as error:
        raise InputError(f"{path}, line {reader.line_num}: {error}") from None


def _read_modality(folder: Path, name: str, n_items: int, row_count_source: str) -> Modality | None:
    feature_path = folder / f"{name}_feat.npy"
    mask_path = folder / f"{name}_mask.npy"
    if not feature_path.exists():
        if mask_path.exists():
            raise InputError(f"{mask_path}: mask given without {feature_path.name}")
        return None
    features = _load_array(feature_path)
    if features.ndim != 2:
        raise InputError(f"{feature_path}: expected a 2-D array (items × width), got shape {features.shape}")
    if features.shape[0] != n_items:
        raise InputError(f"{feature_path}: has {features.shape[0]} rows but {row_count_source}")
    features = np.asarray(features, dtype=np.float32)
    finite = np.isfinite(features)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError(f"{feature_path}, row {row}: NaN or infinite feature value")
    if mask_path.exists():
        mask = _load_array(mask_path)
        if mask.shape != (n_items,):
            raise InputError(
                f"{mask_path}: expected shape ({n_items},) (one entry per item), got {mask.shape}"
            )
        if mask.dtype != np.bool_:
            if not np.isin(mask, (0, 1)).all():
                row = int(np.flatnonzero(~np.isin(mask, (0, 1)))[0])
                raise InputError(f"{mask_path}, row {row}: mask value {mask[row]} is not boolean")
            mask = mask.astype(bool)
    else:
        mask = np.ones(n_items, dtype=bool)
    return Modality(features=features, mask=mask)


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputError(f"{path}: not a readable .npy array ({error})") from None


def validate_interactions(
    name: str, users: np.ndarray, items: np.ndarray, labels: np.ndarray, source: str
) -> None:
    """Reject an empty training split; warn about users or items that occur only in evaluation."""
    train = labels == TRAIN
    if not train.any():
        raise InputError(f"{source}: the training split is empty (no row has x_label 0)")
    eval_rows = ~train
    for kind, ids in (("user", users), ("item", items)):
        in_train = np.zeros(int(ids.max()) + 1, dtype=bool)
        in_train[ids[train]] = True
        eval_only = np.unique(ids[eval_rows][~in_train[ids[eval_rows]]])
        if eval_only.size:
            log.warning(
                "%s: %d %s ID(s) occur only in validation/test (e.g. %s); "
                "such users are dropped from evaluation, such items can only be ranked by content",
                source, eval_only.size, kind, ", ".join(map(str, eval_only[:5])),
            )


def load_folder(path: str | Path) -> Dataset:
    """Load and validate a dataset folder in the PROTOCOL layout."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such dataset folder (and not a built-in dataset name)")
    inter_files = sorted(folder.glob("*.inter"))
    preferred = folder / f"{folder.name}.inter"
    if preferred.exists():
        inter_path = preferred
    elif len(inter_files) == 1:
        inter_path = inter_files[0]
    elif not inter_files:
        raise InputError(f"{folder}: no .inter file (expected {folder.name}.inter)")
    else:
        names = ", ".join(p.name for p in inter_files)
        raise InputError(f"{folder}: several .inter files ({names}) and none named {folder.name}.inter")
    users, items, labels = _read_inter(inter_path)
    validate_interactions(folder.name, users, items, labels, str(inter_path))
    n_items = int(items.max()) + 1
    modalities = {}
    for name in MODALITIES:
        modality = _read_modality(folder, name, n_items, f"the dataset has {n_items} items (max itemID + 1)")
        if modality is not None:
            modalities[name] = modality
    return Dataset(
        name=folder.name,
        n_users=int(users.max()) + 1,
        n_items=n_items,
        users=users,
        items=items,
        labels=labels,
        modalities=modalities,
        source=str(folder.resolve()),
    )


def load_new_items(path: str | Path) -> dict[str, Modality]:
    """Content of items that are not in a dataset yet: a folder of ``<modality>_feat.npy`` files
    (one row per new item, in the same order in every file) with optional ``<modality>_mask.npy``,
    validated like a dataset folder's features. At least one modality is required.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of new-item features")
    present = [name for name in MODALITIES if (folder / f"{name}_feat.npy").exists()]
    if not present:
        names = " or ".join(f"{name}_feat.npy" for name in MODALITIES)
        raise InputError(f"{folder}: no new-item features ({names})")
    first = folder / f"{present[0]}_feat.npy"
    shape = _load_array(first, mmap_mode="r").shape
    n_new = int(shape[0]) if shape else 0
    if n_new == 0:
        raise InputError(f"{first}: no rows (expected one row per new item)")
    return {name: _read_modality(folder, name, n_new, f"{first.name} has {n_new}") for name in present}
