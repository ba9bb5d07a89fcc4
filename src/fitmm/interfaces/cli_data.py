"""``fitmm data prepare`` (a raw catalogue → a dataset folder) and ``fitmm data encode`` (new items →
their content features); see fitmm.data.prepare."""

from __future__ import annotations

import argparse
from pathlib import Path

from fitmm.errors import InputError, ParameterError

_NONE = "none"
_TEXT_RULE = ("With one field, a string value is the item's text exactly as given (not stripped, "
              "no final '.'). With several fields, or a one-field value that is a number, list "
              "or object: each field's value is flattened (nested lists and objects in order), "
              "its pieces stripped, empty and repeated pieces dropped, the rest joined with ', ' "
              "and ended with '.' unless it ends in '.', '!' or '?'; the field texts are joined "
              "with a space. An item without text gets a zero row and a False mask; a JSON "
              "list/object of ready texts is used as given.")
_OUT_RULE = ("a new or empty folder, or an earlier output of this command (it holds {manifest}, "
             "which lists the files the command wrote: only those are replaced or removed, and "
             "the feature cache makes a rerun encode only what is missing)")


def add_data_commands(subparsers) -> None:
    """Add the ``data`` command (subcommands ``prepare`` and ``encode``) to an argparse ``subparsers`` object."""
    from fitmm.data.prepare import DEFAULT_SEED, SPLITS

    data = subparsers.add_parser("data", help="prepare datasets, or encode new items, from raw files")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    prepare = data_commands.add_parser(
        "prepare", help="raw interactions + item metadata (+ images) -> dataset folder",
        description="Read raw interactions, clean them (min rating, duplicates, k-core), number "
                    "users and items, split, and encode item text and image features into a "
                    "dataset folder in the MMRec layout. Features are cached per item in "
                    "DATASET_DIR/.feature_cache, so a rerun encodes only what is missing.")
    prepare.add_argument("--interactions", required=True, type=Path, metavar="FILE",
                         help="CSV/TSV/JSON-lines interactions, optionally .gz (Amazon review "
                              "dumps are recognised)")
    prepare.add_argument("--items", required=True, type=Path, metavar="FILE",
                         help="item metadata (CSV/TSV/JSON lines), or a JSON list/object of "
                              "ready item texts")
    prepare.add_argument("--images", type=Path, metavar="DIR",
                         help="folder of <raw item id>.<jpg|jpeg|png|webp> images")
    prepare.add_argument("--out", required=True, type=Path, metavar="DATASET_DIR",
                         help="output dataset folder, whose name names the .inter file: "
                              + _OUT_RULE.format(manifest="prepare.json"))
    prepare.add_argument("--k-core", type=int, default=5, metavar="K",
                         help="minimum interactions per user and per item (default 5; 0 = off)")
    prepare.add_argument("--min-rating", type=float, metavar="R",
                         help="keep interactions with rating >= R")
    prepare.add_argument("--split", choices=SPLITS, default="random",
                         help="random (MMRec's per-user rule, default), user-temporal or "
                              "global-temporal")
    prepare.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="N",
                         help=f"seed of the random split (default {DEFAULT_SEED})")
    prepare.add_argument("--user-col", metavar="NAME", help="user column of the interactions")
    prepare.add_argument("--item-col", metavar="NAME", help="item column of the interactions")
    prepare.add_argument("--rating-col", metavar="NAME", help="rating column of the interactions")
    prepare.add_argument("--time-col", metavar="NAME",
                         help="timestamp column of the interactions")
    _add_content_options(prepare)
    prepare.set_defaults(func=_prepare)

    encode = data_commands.add_parser(
        "encode", help="item metadata (+ images) of new items -> a folder of their content features",
        description="Encode the text (and images) of items that are not in a dataset yet, exactly as "
                    "`fitmm data prepare` encodes a dataset's items, into OUT_DIR: "
                    "i_id_mapping.csv, text_feat.npy/text_mask.npy, image_feat.npy/image_mask.npy. "
                    "`fitmm recommend --new-items OUT_DIR` then ranks them in from their content.")
    encode.add_argument("--items", required=True, type=Path, metavar="FILE",
                        help="metadata of the new items (CSV/TSV/JSON lines), or a JSON list/object of texts")
    encode.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of <raw item id>.<jpg|jpeg|png|webp> images")
    encode.add_argument("--out", required=True, type=Path, metavar="OUT_DIR",
                        help="output folder: " + _OUT_RULE.format(manifest="encode.json"))
    _add_content_options(encode)
    encode.set_defaults(func=_encode)


def _add_content_options(command: argparse.ArgumentParser) -> None:
    """The options that say how item content is read and encoded (shared by prepare and encode)."""
    from fitmm.data.prepare import DEFAULT_TEXT_FIELDS
    from fitmm.features import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER

    command.add_argument("--text-fields", type=_field_list, default=DEFAULT_TEXT_FIELDS,
                         metavar="FIELD,FIELD,...",
                         help=f"metadata fields that make the item text (default "
                              f"{','.join(DEFAULT_TEXT_FIELDS)}). {_TEXT_RULE}")
    command.add_argument("--item-id-col", metavar="NAME", help="item ID column of the metadata")
    command.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER, metavar="MODEL",
                         help=f"sentence-transformers model name or path (default "
                              f"{DEFAULT_TEXT_ENCODER}, shipped by the features extra); "
                              f"'{_NONE}' skips text features")
    command.add_argument("--image-encoder", default=DEFAULT_IMAGE_ENCODER, metavar="ENCODER",
                         help=f"{DEFAULT_IMAGE_ENCODER} (default) or torchvision:MODEL_NAME; "
                              f"'{_NONE}' skips image features")
    command.add_argument("--batch-size", type=int, default=64, metavar="N",
                         help="encoder batch size (default 64)")


def _field_list(text: str) -> tuple[str, ...]:
    fields = tuple(name.strip() for name in text.split(",") if name.strip())
    if not fields:
        raise argparse.ArgumentTypeError("give at least one field name")
    return fields


def _flag_error(error: ParameterError) -> InputError:
    """The library's error about a parameter (``k_core -1: ...``), naming the flag instead
    (``--k-core -1: ...``)."""
    flag = "--" + error.parameter.replace("_", "-")
    if error.value is None:
        return InputError(f"{flag}: {error.problem}")
    value = ",".join(error.value) if isinstance(error.value, tuple) else str(error.value)
    return InputError(f"{flag} {value if value.isprintable() else repr(value)}: {error.problem}")


def _prepare(args: argparse.Namespace) -> int:
    from fitmm.data.prepare import prepare_dataset

    try:
        report = prepare_dataset(
            interactions=args.interactions, out=args.out, items=args.items, images=args.images,
            k_core=args.k_core, min_rating=args.min_rating, split=args.split, seed=args.seed,
            text_fields=args.text_fields, user_col=args.user_col, item_col=args.item_col,
            rating_col=args.rating_col, time_col=args.time_col, item_id_col=args.item_id_col,
            text_encoder=None if args.text_encoder == _NONE else args.text_encoder,
            image_encoder=None if args.image_encoder == _NONE else args.image_encoder,
            batch_size=args.batch_size, progress=True)
    except ParameterError as error:
        raise _flag_error(error) from None
    print(report.summary())
    return 0


def _encode(args: argparse.Namespace) -> int:
    from fitmm.data.prepare import encode_new_items

    try:
        report = encode_new_items(
            items=args.items, out=args.out, images=args.images, text_fields=args.text_fields,
            item_id_col=args.item_id_col,
            text_encoder=None if args.text_encoder == _NONE else args.text_encoder,
            image_encoder=None if args.image_encoder == _NONE else args.image_encoder,
            batch_size=args.batch_size, progress=True)
    except ParameterError as error:
        raise _flag_error(error) from None
    print(report.summary())
    return 0
