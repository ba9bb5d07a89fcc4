"""The in-memory dataset: training matrix, evaluation truth and content features.

A dataset folder follows the MMRec layout (see ``docs/protocol.md``): ``<name>.inter`` with
columns ``userID``, ``itemID``, ``x_label`` (0 train, 1 validation, 2 test), optional
``<modality>_feat.npy`` feature tables with optional ``<modality>_mask.npy`` masks, and optional ID
mappings ``u_id_mapping.csv`` / ``i_id_mapping.csv`` from the catalogue's own (raw) IDs to the
numbers of the ``.inter`` file. Every fault in those files raises :class:`fitmm.errors.InputError`
with one line naming the file, the line or row, and the fault.

Raw IDs: every user and item has one, a string. Where a folder has a mapping, it is the mapping's
raw ID; where not, the ``.inter`` number written as text. Recommendations and serving speak raw
IDs; the models and the evaluator work on the ``.inter`` numbers (internal IDs).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fitmm.data.fingerprint import dataset_fingerprint
from fitmm.errors import InputError

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_LABELS = {"train": TRAIN, "valid": VALID, "test": TEST}
MODALITIES = ("image", "text")
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
ID_MAPPINGS = {"user": ("u_id_mapping.csv", "userID"), "item": ("i_id_mapping.csv", "itemID")}
NEW_ITEM_NEIGHBOURS = 10
"""Default number of similar catalogue items a new item borrows its score from, per modality
(``fitmm.retrieval.new_item_weights``)."""


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


@dataclass(frozen=True)
class NewItems:
    """Content of items that are not in a dataset yet: per modality one row per new item, and the
    new items' raw IDs (None: they are numbered after the catalogue's items)."""

    modalities: dict[str, Modality]
    ids: np.ndarray | None = None  # (count,) str

    @property
    def count(self) -> int:
        return len(next(iter(self.modalities.values())).mask)

    def checked_ids(self, catalogue: np.ndarray) -> np.ndarray:
        """The new items' raw IDs (their own, or the numbers after the catalogue's ``len(catalogue)``
        items), refused in one line where one is already a catalogue ID."""
        ids = self.ids if self.ids is not None else np.arange(len(catalogue), len(catalogue) + self.count).astype(str)
        clash = set(ids.tolist()) & set(catalogue.tolist())
        if clash:
            raise InputError(f"new item ID {sorted(clash)[0]!r} is already an item of the catalogue")
        return ids.astype(object)


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
    raw_user_ids: np.ndarray | None = None  # (n_users,) str, or None: the .inter numbers are the raw IDs
    raw_item_ids: np.ndarray | None = None
    fingerprint: dict = field(default_factory=dict)  # fitmm.data.fingerprint of the files read

    def __post_init__(self) -> None:
        self.train = self._matrix(TRAIN)
        self.valid = self._matrix(VALID)
        self.test = self._matrix(TEST)
        self._index = {"user": None, "item": None}

    def raw_ids(self, kind: str) -> np.ndarray:
        """Every user's (``kind="user"``) or item's raw ID, as strings, in internal ID order."""
        given = self.raw_user_ids if kind == "user" else self.raw_item_ids
        if given is not None:
            return given
        return np.arange(self.n_users if kind == "user" else self.n_items).astype(str)

    def internal_ids(self, kind: str, raw: list[str]) -> np.ndarray:
        """The internal IDs of raw user or item IDs; an unknown one is an InputError naming it."""
        if self._index[kind] is None:
            self._index[kind] = {raw_id: index for index, raw_id in enumerate(self.raw_ids(kind).tolist())}
        index = self._index[kind]
        unknown = [value for value in raw if value not in index]
        if unknown:
            raise InputError(f"unknown {kind} ID {unknown[0]!r} (not in dataset '{self.name}')")
        return np.array([index[value] for value in raw], dtype=np.int64)

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


def _read_id_mapping(path: Path, index_column: str, count: int) -> np.ndarray:
    """Raw IDs in internal order from an ID mapping (tab- or comma-separated, header line; one
    column named ``index_column`` with the internal IDs 0..count-1, the other the raw IDs)."""
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            header_line = handle.readline()
        except UnicodeDecodeError:
            raise InputError(f"{path}, line 1: not UTF-8 text") from None
        delimiter = "\t" if "\t" in header_line else ","
        header = [name.strip() for name in header_line.rstrip("\r\n").split(delimiter)]
        if len(header) != 2 or index_column not in header:
            raise InputError(f"{path}, line 1: expected two columns, one named {index_column} "
                             f"(header has: {', '.join(header)})")
        index_position = header.index(index_column)
        raw = np.empty(count, dtype=object)
        seen = np.zeros(count, dtype=bool)
        rows = csv.reader(handle, delimiter=delimiter)
        try:
            for line_number, fields in enumerate(rows, start=2):
                if not fields:
                    continue
                if len(fields) != 2:
                    raise InputError(f"{path}, line {line_number}: expected 2 fields, found {len(fields)}")
                text = fields[index_position].strip()
                if not (text.isascii() and text.isdigit()) or int(text) >= count:
                    raise InputError(f"{path}, line {line_number}: {index_column} {text!r} is not an ID "
                                     f"between 0 and {count - 1}")
                if seen[int(text)]:
                    raise InputError(f"{path}, line {line_number}: {index_column} {text} is mapped twice")
                seen[int(text)] = True
                raw[int(text)] = fields[1 - index_position]
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
        except csv.Error as error:
            raise InputError(f"{path}, line {rows.line_num}: {error}") from None
    if not seen.all():
        raise InputError(f"{path}: no raw ID for {index_column} {int(np.flatnonzero(~seen)[0])} "
                         f"(the dataset has {count})")
    values = raw.astype(str)
    if len(np.unique(values)) != count:
        raise InputError(f"{path}: a raw ID is mapped to two {index_column}s")
    return values


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
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    files = [inter_path]
    modalities = {}
    for name in MODALITIES:
        modality = _read_modality(folder, name, n_items, f"the dataset has {n_items} items (max itemID + 1)")
        if modality is not None:
            modalities[name] = modality
            files += [path for path in (folder / f"{name}_feat.npy", folder / f"{name}_mask.npy") if path.exists()]
    raw = {}
    for kind, (file_name, column) in ID_MAPPINGS.items():
        mapping = folder / file_name
        raw[kind] = None
        if mapping.exists():
            raw[kind] = _read_id_mapping(mapping, column, n_users if kind == "user" else n_items)
            files.append(mapping)
    return Dataset(
        name=folder.name,
        n_users=n_users,
        n_items=n_items,
        users=users,
        items=items,
        labels=labels,
        modalities=modalities,
        source=str(folder.resolve()),
        raw_user_ids=raw["user"],
        raw_item_ids=raw["item"],
        fingerprint=dataset_fingerprint(files, n_users, n_items),
    )


def load_new_items(path: str | Path) -> NewItems:
    """Content of items that are not in a dataset yet: a folder of ``<modality>_feat.npy`` files
    (one row per new item, in the same order in every file) with optional ``<modality>_mask.npy``,
    validated like a dataset folder's features, and optionally ``i_id_mapping.csv`` with the new
    items' raw IDs (``fitmm data encode`` writes one). At least one modality is required.
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
    modalities = {name: _read_modality(folder, name, n_new, f"{first.name} has {n_new}") for name in present}
    mapping = folder / ID_MAPPINGS["item"][0]
    ids = _read_id_mapping(mapping, ID_MAPPINGS["item"][1], n_new) if mapping.exists() else None
    return NewItems(modalities, ids)
