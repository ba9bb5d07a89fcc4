"""The two commands, orchestrated: :func:`prepare_dataset` and :func:`encode_new_items`.

Each checks its parameters and the output folder, reads and checks all of its input, and only
then writes, so bad input leaves the folder as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fitmm.data.prepare.cleaning import clean_interactions, encode_raw_ids
from fitmm.data.prepare.features import (
    image_encoder_for,
    text_encoder_for,
    write_image_features,
    write_text_features,
)
from fitmm.data.prepare.readers import (
    DEFAULT_TEXT_FIELDS,
    RATING_COLUMNS,
    TIME_COLUMNS,
    read_interactions,
    read_item_texts,
)
from fitmm.data.prepare.report import NewItemsReport, PrepareReport
from fitmm.data.prepare.splitting import DEFAULT_SEED, check_split, split_labels, split_sizes
from fitmm.data.prepare.writers import OutputFolder, feature_files, write_id_mapping, write_inter
from fitmm.errors import InputError, ParameterError
from fitmm.features import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    ImageEncoder,
    TextEncoder,
    find_item_images,
)


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
    """Build the dataset folder ``out`` from raw files (the steps: :mod:`fitmm.data.prepare`).

    Args:
        interactions: interaction file (CSV/TSV/JSON lines, optionally ``.gz``).
        out: output folder: new, empty, or an earlier output of this function (it holds
            ``prepare.json``); its basename names the ``.inter`` file.
        items: item metadata for text features, or None for no text features.
        images: folder of ``<raw item id>.<jpg|jpeg|png|webp>``, or None for no image features.
        k_core: minimum interactions per user and per item (0 or 1: no filtering).
        min_rating: keep rows with rating ≥ this value (None: keep all).
        split: ``random`` (MMRec's), ``user-temporal`` or ``global-temporal``.
        seed: seed of the random split.
        text_fields: metadata fields that make an item's text (the rule:
            :mod:`fitmm.data.prepare.readers`).
        user_col, item_col, rating_col, time_col: interaction column names (None: find one).
        item_id_col: item ID column of the metadata (None: find one).
        text_encoder: sentence-transformers model name/path, an encoder object, or None to
            skip text features.
        image_encoder: ``efficientnet-lite0``, ``torchvision:NAME``, an encoder object, or None
            to skip image features.
        batch_size: encoder batch size.
        progress: show progress bars while encoding.

    Returns:
        The :class:`PrepareReport`. Bad input raises :class:`InputError` (one line; a
        :class:`ParameterError` when a parameter's value is at fault); a missing optional extra
        raises :class:`fitmm.errors.MissingExtraError`.
    """
    check_split(split)
    if k_core < 0:
        raise ParameterError("k_core", k_core, "must be 0 or more")
    _check_batch_size(batch_size)
    images = _image_folder(images)
    text_encoder = (text_encoder_for(text_encoder, batch_size)
                    if items is not None and text_encoder is not None else None)
    image_encoder = (image_encoder_for(image_encoder)
                     if images is not None and image_encoder is not None else None)
    out = Path(out).resolve()
    folder = OutputFolder(out, "prepare", [f"{out.name}.inter", "u_id_mapping.csv",
                                           "i_id_mapping.csv"]
                          + _feature_files(text_encoder, image_encoder))

    table = read_interactions(Path(interactions), user_col=user_col, item_col=item_col,
                              rating_col=rating_col, time_col=time_col)
    if split != "random" and table.timestamps is None:
        raise ParameterError("time_col", None, f"the {split} split needs a timestamp column and "
                             f"{interactions} has none (looked for {', '.join(TIME_COLUMNS)}); "
                             "name the column")
    if min_rating is not None and table.ratings is None:
        raise ParameterError("rating_col", None, f"a minimum rating needs a rating column and "
                             f"{interactions} has none (looked for {', '.join(RATING_COLUMNS)}); "
                             "name the column")
    texts_by_id = None
    if text_encoder is not None:
        texts_by_id = read_item_texts(Path(items), item_id_col=item_id_col,
                                      text_fields=text_fields)
    clean = clean_interactions(table, min_rating=min_rating, k_core=k_core)
    if len(clean.rows) == 0:
        before = len(table.users) - clean.dropped_below_min_rating - clean.dropped_duplicates
        raise ParameterError("k_core", k_core, f"no interactions left after the {k_core}-core "
                             f"filter ({before} of {interactions} before it); lower it")
    timestamps = table.timestamps[clean.rows] if table.timestamps is not None else None
    x_label = split_labels(split, clean.users, timestamps, seed)

    folder.start({
        "interactions": _resolved(interactions), "items": _resolved(items),
        "images": _resolved(images), "k_core": k_core, "min_rating": min_rating, "split": split,
        "seed": seed, "text_fields": list(text_fields), "user_col": user_col,
        "item_col": item_col, "rating_col": rating_col, "time_col": time_col,
        "item_id_col": item_id_col, **_encoder_names(text_encoder, image_encoder)})
    columns = {"userID": clean.users, "itemID": clean.items}
    if table.ratings is not None:
        columns["rating"] = table.ratings[clean.rows]
    if timestamps is not None:
        columns["timestamp"] = timestamps
    columns["x_label"] = x_label
    write_inter(out / f"{out.name}.inter", columns)
    write_id_mapping(out / "u_id_mapping.csv", clean.raw_user_ids, "userID")
    write_id_mapping(out / "i_id_mapping.csv", clean.raw_item_ids, "itemID")
    report = PrepareReport(
        out=out, rows_read=len(table.users),
        dropped_below_min_rating=clean.dropped_below_min_rating,
        dropped_duplicates=clean.dropped_duplicates, dropped_kcore=clean.dropped_kcore,
        kcore_rounds=clean.kcore_rounds, n_users=len(clean.raw_user_ids),
        n_items=len(clean.raw_item_ids), n_interactions=len(clean.rows), split=split,
        split_sizes=split_sizes(x_label), k_core=k_core, min_rating=min_rating, seed=seed)
    _write_features(report, out, clean.raw_item_ids, texts_by_id, text_encoder, images,
                    image_encoder, batch_size=batch_size, progress=progress)
    return report


def encode_new_items(*, items: Path, out: Path, images: Path | None = None,
                     text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
                     item_id_col: str | None = None,
                     text_encoder: str | TextEncoder | None = DEFAULT_TEXT_ENCODER,
                     image_encoder: str | ImageEncoder | None = DEFAULT_IMAGE_ENCODER,
                     batch_size: int = 64, progress: bool = False) -> NewItemsReport:
    """Encode the content of items that are not in a dataset yet into the folder ``out``.

    Every item of the metadata file ``items`` becomes a row, numbered in raw-ID sort order as
    ``prepare_dataset`` numbers items; ``out`` gets ``i_id_mapping.csv`` and the feature and mask
    files of each modality, made exactly as ``prepare_dataset`` makes them (same text rule, same
    encoders, the same per-item cache). ``out`` must be new, empty, or an earlier output of this
    function (it holds ``encode.json``). Pass the same encoders as for the dataset the model was
    trained on; ``fitmm recommend --new-items out`` then ranks these items in.
    """
    _check_batch_size(batch_size)
    images = _image_folder(images)
    if text_encoder is None and (images is None or image_encoder is None):
        raise InputError("nothing to encode: there is no text encoder, and no images with an "
                         "image encoder")
    if images is None:
        image_encoder = None
    out = Path(out).resolve()
    folder = OutputFolder(out, "encode", ["i_id_mapping.csv"]
                          + _feature_files(text_encoder, image_encoder))
    texts_by_id = read_item_texts(Path(items), item_id_col=item_id_col, text_fields=text_fields)
    text_encoder = text_encoder_for(text_encoder, batch_size) if text_encoder is not None else None
    image_encoder = image_encoder_for(image_encoder) if image_encoder is not None else None
    _, raw_item_ids = encode_raw_ids(list(texts_by_id))

    folder.start({
        "items": _resolved(items), "images": _resolved(images), "text_fields": list(text_fields),
        "item_id_col": item_id_col, **_encoder_names(text_encoder, image_encoder)})
    write_id_mapping(out / "i_id_mapping.csv", raw_item_ids, "itemID")
    report = NewItemsReport(out=out, n_items=len(raw_item_ids))
    _write_features(report, out, raw_item_ids, texts_by_id, text_encoder, images, image_encoder,
                    batch_size=batch_size, progress=progress)
    return report


def _write_features(report: PrepareReport | NewItemsReport, out: Path, raw_item_ids: np.ndarray,
                    texts_by_id: dict[str, str] | None, text_encoder: TextEncoder | None,
                    images: Path | None, image_encoder: ImageEncoder | None, *,
                    batch_size: int, progress: bool) -> None:
    """Encode and write each modality that has an encoder; record it in ``report``."""
    if text_encoder is not None:
        report.text = write_text_features(out, [texts_by_id.get(i) for i in raw_item_ids],
                                          text_encoder, batch_size=batch_size, progress=progress)
    if image_encoder is not None:
        report.image = write_image_features(out, find_item_images(images, raw_item_ids),
                                            image_encoder, batch_size=batch_size,
                                            progress=progress)


def _feature_files(text_encoder: str | TextEncoder | None,
                   image_encoder: str | ImageEncoder | None) -> list[str]:
    return ((feature_files("text") if text_encoder is not None else [])
            + (feature_files("image") if image_encoder is not None else []))


def _encoder_names(text_encoder: TextEncoder | None,
                   image_encoder: ImageEncoder | None) -> dict[str, str | None]:
    return {"text_encoder": None if text_encoder is None else text_encoder.name,
            "image_encoder": None if image_encoder is None else image_encoder.name}


def _resolved(path: Path | None) -> str | None:
    """An input path as the manifest records it: absolute, or None when not given."""
    return None if path is None else str(Path(path).resolve())


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ParameterError("batch_size", batch_size, "must be 1 or more")


def _image_folder(images: Path | None) -> Path | None:
    if images is None:
        return None
    if not Path(images).is_dir():
        raise ParameterError("images", str(images), "image folder not found")
    return Path(images)
