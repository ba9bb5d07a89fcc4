"""``fitmm data prepare``: a raw catalogue (interactions, item metadata, images) → a dataset folder.

The output folder follows the PROTOCOL layout: ``<name>.inter`` (``<name>`` = the folder's
basename), ``u_id_mapping.csv``, ``i_id_mapping.csv`` and, when content is given,
``text_feat.npy``/``text_mask.npy`` and ``image_feat.npy``/``image_mask.npy``.

Pipeline, in this order:

1. Read the interactions: CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.inter``) with a header
   line, or JSON lines (``.json``, ``.jsonl``, ``.ndjson``; lines in Python-literal form, as in
   the 2014 Amazon metadata, are accepted too); any of them gzip-compressed when the name ends in
   ``.gz``. Columns are named by the caller or found among common names; the Amazon review dump
   (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``) is recognised by its keys.
   Timestamps are numbers (e.g. Unix seconds) or ISO-8601 dates (naive ones taken as UTC).
   Blank lines are skipped; any malformed row stops the run with an :class:`InputError` naming
   the file and line (nothing is silently dropped).
2. ``min_rating``: keep rows with rating ≥ R.
3. Duplicates (same user and item): keep the latest row (largest timestamp; among equal
   timestamps, or without timestamps, the last row of the file); the others are counted.
4. Iterative k-core: drop users and items with fewer than k interactions until none is left.
5. Contiguous 0-based IDs, users and items each numbered in raw-ID sort order: numeric order
   when every raw ID of that kind is a plain integer (``"7"`` before ``"10"``), otherwise
   string (Unicode code point) order. Rows are written sorted by (userID, itemID).
6. The split (see :mod:`fitmm.data.splits`) on those rows.
7. Content features of the remaining items (see :mod:`fitmm.features`), cached per item under
   ``<out>/.feature_cache/`` so a repeated or interrupted run only encodes what is missing.

Item metadata: CSV/TSV or JSON-lines records with an item ID column and text fields, or a JSON
document that gives each item's text directly: a list of strings (the string at index i is the
text of raw item ID ``"i"``) or an object mapping raw item ID → string (``--text-fields`` is then
not used). Text of a record: for each chosen field in order, its value flattened (nested lists
and objects in order, numbers as written), each piece stripped, empty and repeated pieces
dropped, pieces joined with ", "; each non-empty field text gets a final "." unless it already
ends in ".", "!" or "?"; field texts are joined with a space. An item with no text (no record,
or blank) gets a zero row and ``text_mask`` False; an empty string is never encoded.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

from fitmm.data.splits import (
    global_temporal_split,
    mmrec_random_split,
    user_temporal_split,
)
from fitmm.errors import InputError
from fitmm.features import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    FeatureCache,
    ImageEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    cache_folder_name,
    encode_image_files,
    encode_texts,
    find_item_images,
    has_text,
    load_image_encoder,
)

SPLITS = ("random", "user-temporal", "global-temporal")
DEFAULT_SEED = 999
DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")
USER_COLUMNS = ("userID", "user_id", "user", "reviewerID")
ITEM_COLUMNS = ("itemID", "item_id", "item", "asin")
RATING_COLUMNS = ("rating", "overall")
TIME_COLUMNS = ("timestamp", "unixReviewTime", "time")
ITEM_ID_COLUMNS = ("itemID", "item_id", "item", "asin", "id")
FEATURE_CACHE_DIR = ".feature_cache"
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t"}
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class Interactions:
    """Interaction rows as read: raw IDs as strings, optional ratings and timestamps."""

    users: np.ndarray  # (n,) str
    items: np.ndarray  # (n,) str
    ratings: np.ndarray | None  # (n,) float64
    timestamps: np.ndarray | None  # (n,) float64 (seconds when parsed from dates)


@dataclass
class ModalityReport:
    """Content coverage of one modality after preparation."""

    encoder: str
    n_items: int
    n_with_content: int  # rows that are real features (mask True)
    n_no_content: int  # items with no text, or no image file
    n_unreadable: int  # image files that exist but could not be read or decoded
    n_encoded: int  # items run through the encoder in this run
    n_from_cache: int  # items whose features came from the feature cache

    @property
    def coverage(self) -> float:
        return self.n_with_content / self.n_items if self.n_items else 0.0


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` read, dropped (and why), kept and wrote."""

    out: Path
    rows_read: int
    dropped_below_min_rating: int
    dropped_duplicates: int
    dropped_kcore: int
    kcore_rounds: int
    n_users: int
    n_items: int
    n_interactions: int
    split: str
    split_sizes: dict[str, int]
    k_core: int
    min_rating: float | None
    seed: int
    text: ModalityReport | None = None
    image: ModalityReport | None = None

    def summary(self) -> str:
        """A human-readable multi-line summary (printed by ``fitmm data prepare``)."""
        lines = [
            f"prepared dataset {self.out.name!r} in {self.out}",
            f"rows read: {self.rows_read:,}",
            f"dropped below min rating: {self.dropped_below_min_rating:,}"
            + (f" (rating < {self.min_rating:g})" if self.min_rating is not None
               else " (no min rating)"),
            f"dropped duplicates (same user and item, latest kept): {self.dropped_duplicates:,}",
            f"dropped by {self.k_core}-core: {self.dropped_kcore:,} "
            f"({self.kcore_rounds} rounds)",
            f"users {self.n_users:,}, items {self.n_items:,}, interactions "
            f"{self.n_interactions:,}",
            f"split {self.split}" + (f" (seed {self.seed})" if self.split == "random" else "")
            + ": "
            + ", ".join(f"{name} {self.split_sizes[name]:,}" for name in _SPLIT_NAMES),
        ]
        return "\n".join(lines + _content_lines(self.text, self.image))


@dataclass
class NewItemsReport:
    """What :func:`encode_new_items` wrote: content features of items outside any dataset."""

    out: Path
    n_items: int
    text: ModalityReport | None = None
    image: ModalityReport | None = None

    def summary(self) -> str:
        """A human-readable multi-line summary (printed by ``fitmm data encode``)."""
        lines = [f"encoded {self.n_items:,} new items into {self.out} (row order: i_id_mapping.csv)"]
        return "\n".join(lines + _content_lines(self.text, self.image))


def _content_lines(text: ModalityReport | None, image: ModalityReport | None) -> list[str]:
    """One summary line per modality: coverage, what lacks content and why, cache use."""
    lines = []
    for modality, report in (("text", text), ("image", image)):
        if report is None:
            lines.append(f"{modality} features: not built")
            continue
        lacking = (f"{report.n_no_content:,} without text" if modality == "text" else
                   f"{report.n_no_content:,} without an image file, "
                   f"{report.n_unreadable:,} unreadable")
        lines.append(
            f"{modality} features ({report.encoder}): {report.n_with_content:,}/"
            f"{report.n_items:,} items ({report.coverage:.1%}); {lacking}; "
            f"encoded {report.n_encoded:,}, from cache {report.n_from_cache:,}")
    return lines


def prepare_dataset(*, interactions: Path, out: Path, items: Path | None = None,
                    images: Path | None = None, k_core: int = 5, min_rating: float | None = None,
                    split: str = "random", seed: int = DEFAULT_SEED,
                    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
                    user_col: str | None = None, item_col: str | None = None,
                    rating_col: str | None = None, time_col: str | None = None,
                    item_id_col: str | None = None,
                    text_encoder: str | TextEncoder | None = DEFAULT_TEXT_ENCODER,
                    image_encoder: str | ImageEncoder | None = DEFAULT_IMAGE_ENCODER,
                    batch_size: int = 64, progress: bool = False) -> PrepareReport:
    """Build the dataset folder ``out`` from raw files (module docstring: the full pipeline).

    Args:
        interactions: interaction file (CSV/TSV/JSON lines, optionally ``.gz``).
        out: output folder (created); its basename names the ``.inter`` file.
        items: item metadata for text features, or None for no text features.
        images: folder of ``<raw item id>.<jpg|jpeg|png|webp>``, or None for no image features.
        k_core: minimum interactions per user and per item (0 or 1: no filtering).
        min_rating: keep rows with rating ≥ this value (None: keep all).
        split: ``random`` (MMRec's), ``user-temporal`` or ``global-temporal``.
        seed: seed of the random split.
        text_fields: metadata fields joined into an item's text.
        user_col, item_col, rating_col, time_col: interaction column names (None: find one).
        item_id_col: item ID column of the metadata (None: find one).
        text_encoder: sentence-transformers model name/path, an encoder object, or None to
            skip text features.
        image_encoder: ``efficientnet-lite0``, ``torchvision:NAME``, an encoder object, or None
            to skip image features.
        batch_size: encoder batch size.
        progress: show progress bars while encoding.

    Returns:
        The :class:`PrepareReport`. Bad input raises :class:`InputError` (one line); a missing
        optional extra raises :class:`fitmm.errors.MissingExtraError`.
    """
    if split not in SPLITS:
        raise InputError(f"--split {split!r}: unknown split (choose from {', '.join(SPLITS)})")
    if k_core < 0:
        raise InputError(f"--k-core {k_core}: must be 0 or more")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be 1 or more")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the output must be a folder")
    if images is not None and not Path(images).is_dir():
        raise InputError(f"{images}: image folder not found")
    if isinstance(text_encoder, str) and items is not None:
        text_encoder = SentenceTransformerEncoder(text_encoder, batch_size)
    if isinstance(image_encoder, str) and images is not None:
        image_encoder = load_image_encoder(image_encoder)

    # Read everything before writing anything, so bad input leaves no half-written folder.
    table = read_interactions(Path(interactions), user_col=user_col, item_col=item_col,
                              rating_col=rating_col, time_col=time_col)
    if split != "random" and table.timestamps is None:
        raise InputError(f"{interactions}: --split {split} needs a timestamp column "
                         "(none found; name it with --time-col)")
    if min_rating is not None and table.ratings is None:
        raise InputError(f"{interactions}: --min-rating needs a rating column "
                         "(none found; name it with --rating-col)")
    texts_by_id = None
    if items is not None and text_encoder is not None:
        texts_by_id = read_item_texts(Path(items), item_id_col=item_id_col,
                                      text_fields=text_fields)

    rows_read = len(table.users)
    rows = np.arange(rows_read)
    if min_rating is not None:
        rows = rows[table.ratings >= min_rating]
    dropped_rating = rows_read - len(rows)

    user_codes, user_raw = encode_raw_ids(table.users)
    item_codes, item_raw = encode_raw_ids(table.items)
    timestamps = table.timestamps[rows] if table.timestamps is not None else None
    latest = latest_unique(user_codes[rows], item_codes[rows], timestamps)
    dropped_duplicates = len(rows) - int(latest.sum())
    rows = rows[latest]

    core, rounds = kcore_filter(user_codes[rows], item_codes[rows], k_core)
    dropped_kcore = len(rows) - int(core.sum())
    rows = rows[core]
    if len(rows) == 0:
        raise InputError(f"{interactions}: no interactions left after the {k_core}-core filter "
                         f"({len(core)} interactions before it); lower --k-core")

    kept_users, users = np.unique(user_codes[rows], return_inverse=True)
    kept_items, item_ids = np.unique(item_codes[rows], return_inverse=True)
    order = np.lexsort((item_ids, users))
    rows, users, item_ids = rows[order], users[order], item_ids[order]
    if split == "random":
        x_label = mmrec_random_split(users, seed)
    elif split == "user-temporal":
        x_label = user_temporal_split(users, table.timestamps[rows])
    else:
        x_label = global_temporal_split(table.timestamps[rows])

    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, np.ndarray] = {"userID": users, "itemID": item_ids}
    if table.ratings is not None:
        columns["rating"] = table.ratings[rows]
    if table.timestamps is not None:
        columns["timestamp"] = table.timestamps[rows]
    columns["x_label"] = x_label
    write_inter(out / f"{out.name}.inter", columns)
    write_id_mapping(out / "u_id_mapping.csv", user_raw[kept_users], "userID")
    raw_item_ids = item_raw[kept_items]
    write_id_mapping(out / "i_id_mapping.csv", raw_item_ids, "itemID")

    text_report = image_report = None
    if texts_by_id is not None:
        text_report = _write_text_features(out, [texts_by_id.get(i) for i in raw_item_ids],
                                           text_encoder, batch_size=batch_size,
                                           progress=progress)
    else:
        _remove_features(out, "text")
    if images is not None and image_encoder is not None:
        image_report = _write_image_features(out, find_item_images(Path(images), raw_item_ids),
                                             image_encoder, batch_size=batch_size,
                                             progress=progress)
    else:
        _remove_features(out, "image")

    return PrepareReport(
        out=out, rows_read=rows_read, dropped_below_min_rating=dropped_rating,
        dropped_duplicates=dropped_duplicates, dropped_kcore=dropped_kcore, kcore_rounds=rounds,
        n_users=len(kept_users), n_items=len(kept_items), n_interactions=len(rows), split=split,
        split_sizes={name: int((x_label == label).sum())
                     for label, name in enumerate(_SPLIT_NAMES)},
        k_core=k_core, min_rating=min_rating, seed=seed,
        text=text_report, image=image_report)


def encode_new_items(*, items: Path, out: Path, images: Path | None = None,
                     text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS, item_id_col: str | None = None,
                     text_encoder: str | TextEncoder | None = DEFAULT_TEXT_ENCODER,
                     image_encoder: str | ImageEncoder | None = DEFAULT_IMAGE_ENCODER,
                     batch_size: int = 64, progress: bool = False) -> NewItemsReport:
    """Encode the content of items that are not in a dataset yet into the folder ``out``.

    Every item of the metadata file ``items`` becomes a row, numbered in raw-ID sort order as
    ``prepare_dataset`` numbers items; ``out`` gets ``i_id_mapping.csv`` and the feature and mask
    files of each modality, made exactly as ``prepare_dataset`` makes them (same text rule, same
    encoders, the same per-item cache). Pass the same encoders as for the dataset the model was
    trained on; ``fitmm recommend --new-items out`` then ranks these items in.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be 1 or more")
    if text_encoder is None and (images is None or image_encoder is None):
        raise InputError("nothing to encode: give --images, or keep a text encoder")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the output must be a folder")
    if images is not None and not Path(images).is_dir():
        raise InputError(f"{images}: image folder not found")
    texts_by_id = read_item_texts(Path(items), item_id_col=item_id_col, text_fields=text_fields)
    if isinstance(text_encoder, str):
        text_encoder = SentenceTransformerEncoder(text_encoder, batch_size)
    if isinstance(image_encoder, str) and images is not None:
        image_encoder = load_image_encoder(image_encoder)
    _, raw_item_ids = encode_raw_ids(np.array(list(texts_by_id)))

    out.mkdir(parents=True, exist_ok=True)
    write_id_mapping(out / "i_id_mapping.csv", raw_item_ids, "itemID")
    report = NewItemsReport(out=out, n_items=len(raw_item_ids))
    if text_encoder is not None:
        report.text = _write_text_features(out, [texts_by_id[i] for i in raw_item_ids], text_encoder,
                                           batch_size=batch_size, progress=progress)
    else:
        _remove_features(out, "text")
    if images is not None and image_encoder is not None:
        report.image = _write_image_features(out, find_item_images(Path(images), raw_item_ids), image_encoder,
                                             batch_size=batch_size, progress=progress)
    else:
        _remove_features(out, "image")
    return report


def _write_text_features(out: Path, texts: list[str | None], encoder: TextEncoder, *,
                         batch_size: int, progress: bool) -> ModalityReport:
    """Encode (through the cache) and write ``text_feat.npy``/``text_mask.npy``."""
    cache = FeatureCache(out / FEATURE_CACHE_DIR / cache_folder_name("text", encoder.name))
    encoded = encode_texts(texts, encoder, cache=cache, chunk_size=8 * batch_size,
                           progress=progress)
    _save_features(out, "text", encoded.features, encoded.mask)
    return ModalityReport(
        encoder=encoder.name, n_items=len(texts), n_with_content=int(encoded.mask.sum()),
        n_no_content=sum(not has_text(text) for text in texts), n_unreadable=0,
        n_encoded=encoded.n_encoded, n_from_cache=encoded.n_from_cache)


def _write_image_features(out: Path, paths: list[Path | None], encoder: ImageEncoder, *,
                          batch_size: int, progress: bool) -> ModalityReport:
    """Encode (through the cache) and write ``image_feat.npy``/``image_mask.npy``."""
    cache = FeatureCache(out / FEATURE_CACHE_DIR / cache_folder_name("image", encoder.name))
    encoded = encode_image_files(paths, encoder, cache=cache, batch_size=batch_size,
                                 progress=progress)
    _save_features(out, "image", encoded.features, encoded.mask)
    has_file = np.array([path is not None for path in paths], dtype=bool)
    return ModalityReport(
        encoder=encoder.name, n_items=len(paths), n_with_content=int(encoded.mask.sum()),
        n_no_content=int((~has_file).sum()), n_unreadable=int((has_file & ~encoded.mask).sum()),
        n_encoded=encoded.n_encoded, n_from_cache=encoded.n_from_cache)


# --------------------------------------------------------------------------------------------
# Cleaning steps (vectorised numpy)


def encode_raw_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``0..U-1`` for raw ID strings, numbered in raw-ID sort order.

    The order is numeric when every distinct ID is a plain integer written canonically (no
    leading zeros or signs other than "-"), otherwise string order.

    Returns:
        ``(codes, uniques)``: ``uniques[codes] == raw``, with ``uniques`` in that order.
    """
    uniques, codes = np.unique(np.asarray(raw, dtype=str), return_inverse=True)
    try:
        numbers = uniques.astype(np.int64)
    except (ValueError, OverflowError):
        return codes, uniques
    if not np.array_equal(numbers.astype(str), uniques):
        return codes, uniques
    numeric_order = np.argsort(numbers, kind="stable")
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[numeric_order] = np.arange(len(uniques))
    return rank[codes], uniques[numeric_order]


def latest_unique(users: np.ndarray, items: np.ndarray,
                  timestamps: np.ndarray | None) -> np.ndarray:
    """Mask keeping one row per (user, item): the latest by timestamp, ties (or no timestamps)
    broken by the last row."""
    keep = np.zeros(len(users), dtype=bool)
    if len(users) == 0:
        return keep
    row = np.arange(len(users))
    sort_keys = (row, items, users) if timestamps is None else (row, timestamps, items, users)
    order = np.lexsort(sort_keys)
    sorted_users, sorted_items = users[order], items[order]
    last_of_pair = np.r_[(sorted_users[1:] != sorted_users[:-1])
                         | (sorted_items[1:] != sorted_items[:-1]), True]
    keep[order[last_of_pair]] = True
    return keep


def kcore_filter(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Iterative k-core on the user–item graph given as non-negative integer code arrays.

    Each round counts every user's and item's interactions among the remaining rows
    (``numpy.bincount``) and drops the rows of users or items with fewer than ``k``; rounds
    repeat until a round drops nothing. The result is the unique largest subgraph in which every
    user and item has at least ``k`` interactions (empty if there is none).

    Returns:
        ``(keep, rounds)``: the row mask and the number of rounds run (the last one drops
        nothing).
    """
    remaining = np.arange(len(users))
    rounds = 0
    while True:
        rounds += 1
        user_of, item_of = users[remaining], items[remaining]
        enough = (np.bincount(user_of)[user_of] >= k) & (np.bincount(item_of)[item_of] >= k)
        if enough.all():
            break
        remaining = remaining[enough]
    keep = np.zeros(len(users), dtype=bool)
    keep[remaining] = True
    return keep, rounds


# --------------------------------------------------------------------------------------------
# Readers


def read_interactions(path: Path, *, user_col: str | None, item_col: str | None,
                      rating_col: str | None, time_col: str | None) -> Interactions:
    """Read an interaction file (format and column rules: module docstring).

    A column named by the caller must exist; otherwise the first of the common names present
    is used (user: userID, user_id, user, reviewerID; item: itemID, item_id, item, asin;
    rating: rating, overall; timestamp: timestamp, unixReviewTime, time). Rating and timestamp
    are optional.
    """
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[float] = []
    columns: tuple[str | None, ...] = ()
    for line, record in _iter_records(path):
        if not columns:
            names = list(record)
            columns = (
                _resolve_column(path, names, user_col, USER_COLUMNS, "user", "--user-col"),
                _resolve_column(path, names, item_col, ITEM_COLUMNS, "item", "--item-col"),
                _resolve_column(path, names, rating_col, RATING_COLUMNS, None, "--rating-col"),
                _resolve_column(path, names, time_col, TIME_COLUMNS, None, "--time-col"),
            )
        user_name, item_name, rating_name, time_name = columns
        users.append(_raw_id(path, line, user_name, _field(path, line, record, user_name)))
        items.append(_raw_id(path, line, item_name, _field(path, line, record, item_name)))
        if rating_name is not None:
            ratings.append(_number(path, line, rating_name,
                                   _field(path, line, record, rating_name)))
        if time_name is not None:
            times.append(_timestamp(path, line, time_name, _field(path, line, record, time_name)))
    if not users:
        raise InputError(f"{path}: no interaction rows")
    return Interactions(
        users=np.array(users, dtype=str), items=np.array(items, dtype=str),
        ratings=np.array(ratings, dtype=np.float64) if columns[2] is not None else None,
        timestamps=np.array(times, dtype=np.float64) if columns[3] is not None else None)


def read_item_texts(path: Path, *, item_id_col: str | None,
                    text_fields: Sequence[str]) -> dict[str, str]:
    """Map raw item ID → item text from a metadata file (formats and joining rule: module
    docstring). Items may map to "" (no text)."""
    if _file_format(path) == "json":
        ready = _ready_texts(path, item_id_col)
        if ready is not None:
            return ready
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    id_column = None
    fields_seen = False
    for line, record in _iter_records(path):
        if id_column is None:
            id_column = _resolve_column(path, list(record), item_id_col, ITEM_ID_COLUMNS,
                                        "item ID", "--item-id-col")
        raw_id = _raw_id(path, line, id_column, _field(path, line, record, id_column))
        if raw_id in first_line:
            raise InputError(f"{path}: line {line}: item ID {raw_id!r} appears again "
                             f"(first on line {first_line[raw_id]})")
        first_line[raw_id] = line
        fields_seen = fields_seen or any(name in record for name in text_fields)
        texts[raw_id] = item_text(record, text_fields)
    if not texts:
        raise InputError(f"{path}: no item records")
    if not fields_seen:
        raise InputError(f"{path}: none of the text fields {', '.join(text_fields)} occurs "
                         "(choose them with --text-fields)")
    return texts


def item_text(record: dict, text_fields: Sequence[str]) -> str:
    """The text of one metadata record: the chosen fields joined (module docstring)."""
    parts = []
    for name in text_fields:
        pieces = list(dict.fromkeys(p for p in (piece.strip() for piece in
                                                _flatten(record.get(name))) if p))
        if pieces:
            text = ", ".join(pieces)
            parts.append(text if text.endswith((".", "!", "?")) else text + ".")
    return " ".join(parts)


def _flatten(value) -> Iterator[str]:
    """Strings of a metadata value: nested lists/objects in order, numbers as text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, (list, tuple)):
        for element in value:
            yield from _flatten(element)
    elif isinstance(value, dict):
        for element in value.values():
            yield from _flatten(element)


def _ready_texts(path: Path, item_id_col: str | None) -> dict[str, str] | None:
    """Texts given directly by a JSON document (list or object of strings), else None.

    Returns None when the file is JSON lines (its first line is an object holding an item ID
    key); those are read as records.
    """
    with _open_text(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    record = _parse_line_value(first)
    candidates = (item_id_col,) if item_id_col else ITEM_ID_COLUMNS
    if isinstance(record, dict) and any(name in record for name in candidates):
        return None
    try:
        with _open_text(path) as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: neither JSON lines with an item ID key ("
                         f"{', '.join(candidates)}) nor a JSON list/object of texts ({error})"
                         ) from error
    if isinstance(document, list):
        entries = [(str(index), text) for index, text in enumerate(document)]
    elif isinstance(document, dict):
        entries = list(document.items())
    else:
        raise InputError(f"{path}: a JSON document of item texts must be a list or an object")
    for raw_id, text in entries:
        if text is not None and not isinstance(text, str):
            raise InputError(f"{path}: item {raw_id}: text must be a string or null, "
                             f"not {type(text).__name__}")
    return {raw_id: text or "" for raw_id, text in entries}


def _file_format(path: Path) -> str:
    """``csv``/``tsv`` delimiter character or ``json``, from the file name (``.gz`` ignored)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in _CSV_SUFFIXES:
        return _CSV_SUFFIXES[suffix]
    if suffix in _JSON_SUFFIXES:
        return "json"
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r} (use "
                     f"{', '.join(list(_CSV_SUFFIXES) + list(_JSON_SUFFIXES))}, optionally .gz)")


def _open_text(path: Path) -> TextIO:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _iter_records(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for each row: a dict of column → value (strings for CSV/TSV).

    Raises InputError for unreadable files, malformed lines and rows of the wrong width.
    """
    file_format = _file_format(path)
    line = 0
    try:
        with _open_text(path) as handle:
            if file_format == "json":
                for line, text in enumerate(handle, start=1):
                    if text.strip():
                        yield line, _parse_json_line(path, line, text)
                return
            reader = csv.reader(handle, delimiter=file_format)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (a header line is needed)")
            header = [name.strip() for name in header]
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise InputError(f"{path}: line {line}: {len(row)} fields, the header has "
                                     f"{len(header)}")
                yield line, dict(zip(header, row))
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: line {line + 1}: not UTF-8 text ({error.reason})") from error
    except (OSError, EOFError, csv.Error) as error:
        raise InputError(f"{path}: line {line + 1}: cannot be read ({error})") from error


_UNPARSED = object()


def _parse_line_value(text: str):
    """The value on one line: JSON, else a Python literal (2014 Amazon metadata), else _UNPARSED."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNPARSED


def _parse_json_line(path: Path, line: int, text: str) -> dict:
    """One JSON-lines record (a JSON object or a Python dict literal)."""
    record = _parse_line_value(text)
    if record is _UNPARSED:
        raise InputError(f"{path}: line {line}: not a JSON object ({text.strip()[:40]!r})")
    if not isinstance(record, dict):
        raise InputError(f"{path}: line {line}: not a JSON object (got {type(record).__name__})")
    return record


def _resolve_column(path: Path, names: Sequence[str], explicit: str | None,
                    candidates: Sequence[str], required: str | None, option: str) -> str | None:
    """The column to use: ``explicit`` (which must exist) or the first candidate present.

    ``required`` names the column's role for the error when none is found; None = optional.
    """
    if explicit is not None:
        if explicit not in names:
            raise InputError(f"{path}: missing column {explicit!r} ({option}); the columns are "
                             f"{', '.join(map(str, names))}")
        return explicit
    found = next((name for name in candidates if name in names), None)
    if found is None and required is not None:
        raise InputError(f"{path}: no {required} column (looked for {', '.join(candidates)}; "
                         f"name it with {option})")
    return found


def _field(path: Path, line: int, record: dict, name: str):
    if name not in record:
        raise InputError(f"{path}: line {line}: missing {name!r}")
    return record[name]


def _raw_id(path: Path, line: int, name: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{path}: line {line}: {name} must be a string or integer ID, "
                         f"not {value!r}")
    raw_id = str(value).strip()
    if not raw_id:
        raise InputError(f"{path}: line {line}: empty {name}")
    return raw_id


def _number(path: Path, line: int, name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{path}: line {line}: {name} {value!r} is not a finite number")
    return number


def _timestamp(path: Path, line: int, name: str, value) -> float:
    if isinstance(value, str):
        try:
            return _number(path, line, name, value)
        except InputError:
            pass
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InputError(f"{path}: line {line}: {name} {value!r} is neither a number nor "
                             "an ISO-8601 date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return _number(path, line, name, value)


# --------------------------------------------------------------------------------------------
# Writers


def write_inter(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write a tab-separated ``.inter`` file with a header line, columns in ``columns`` order.

    Integer-valued columns are written as integers; others with the shortest exact float text.
    """
    texts = [_column_text(values) for values in columns.values()]
    lines = ["\t".join(columns)] + ["\t".join(row) for row in zip(*texts)]
    _write_text(path, "\n".join(lines) + "\n")


def write_id_mapping(path: Path, raw_ids: np.ndarray, id_name: str) -> None:
    """Write ``raw_id,<id_name>`` CSV rows: raw ID and its 0-based ID (the row number)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["raw_id", id_name])
    writer.writerows(zip(raw_ids.tolist(), range(len(raw_ids))))
    _write_text(path, buffer.getvalue())


def _column_text(values: np.ndarray) -> list[str]:
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str).tolist()
    if np.all(values == np.round(values)) and np.all(np.abs(values) < 2 ** 53):
        return values.astype(np.int64).astype(str).tolist()
    return [repr(float(value)) for value in values]


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _save_features(out: Path, modality: str, features: np.ndarray, mask: np.ndarray) -> None:
    for name, array in ((f"{modality}_feat.npy", features.astype(np.float32)),
                        (f"{modality}_mask.npy", mask.astype(bool))):
        partial = out / f".{name}.partial"
        with open(partial, "wb") as handle:
            np.save(handle, array)
        os.replace(partial, out / name)


def _remove_features(out: Path, modality: str) -> None:
    """Remove a modality's feature files left by an earlier run that built them."""
    for name in (f"{modality}_feat.npy", f"{modality}_mask.npy"):
        (out / name).unlink(missing_ok=True)
