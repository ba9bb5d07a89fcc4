"""Reading a raw catalogue: interaction files and item metadata.

Files are CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.inter``) with a header line, or JSON lines
(``.json``, ``.jsonl``, ``.ndjson``; lines in Python-literal form, as in the 2014 Amazon metadata,
are accepted too); any of them gzip-compressed when the name ends in ``.gz``. Text is UTF-8 (a
byte-order mark at the start is allowed). Each physical line is decoded on its own, so an error
names the line it is on. Blank lines are skipped; any malformed row stops the run with an
:class:`InputError` naming the file and line (nothing is silently dropped).

Interactions: the columns are named by the caller or found among common names; the Amazon review
dump (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``) is recognised by its keys.
Timestamps are numbers (e.g. Unix seconds) or ISO-8601 dates (naive ones taken as UTC; a final
``Z`` means UTC on every supported Python).

Item metadata: CSV/TSV or JSON-lines records with an item ID column and text fields, or a JSON
document that gives each item's text directly: a list of strings (the string at index i is the
text of raw item ID ``"i"``) or an object mapping raw item ID → string (the text fields are then
not used). The text of a record (:func:`item_text`):

* One text field: a string value is the text exactly as given (not stripped, no final "."); any
  other value (a number, a list, an object) is made into text as with several fields.
* Several text fields: for each field in order, its value flattened (nested lists and objects in
  order, numbers as written), each piece stripped, empty and repeated pieces dropped, pieces
  joined with ", "; each non-empty field text gets a final "." unless it already ends in ".",
  "!" or "?"; the field texts are joined with a space.

An item with no text (no record, or a blank text) gets a zero feature row and ``text_mask``
False; a blank text is never encoded.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fitmm.errors import InputError, ParameterError

DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")
USER_COLUMNS = ("userID", "user_id", "user", "reviewerID")
ITEM_COLUMNS = ("itemID", "item_id", "item", "asin")
RATING_COLUMNS = ("rating", "overall")
TIME_COLUMNS = ("timestamp", "unixReviewTime", "time")
ITEM_ID_COLUMNS = ("itemID", "item_id", "item", "asin", "id")
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t"}
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


@dataclass
class Interactions:
    """Interaction rows as read: raw IDs as strings, optional ratings and timestamps."""

    users: np.ndarray  # (n,) str
    items: np.ndarray  # (n,) str
    ratings: np.ndarray | None  # (n,) float64
    timestamps: np.ndarray | None  # (n,) float64 (seconds when parsed from dates)


def read_interactions(path: Path, *, user_col: str | None, item_col: str | None,
                      rating_col: str | None, time_col: str | None) -> Interactions:
    """Read an interaction file (formats: module docstring).

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
                _resolve_column(path, names, user_col, USER_COLUMNS, "user", "user_col"),
                _resolve_column(path, names, item_col, ITEM_COLUMNS, "item", "item_col"),
                _resolve_column(path, names, rating_col, RATING_COLUMNS, None, "rating_col"),
                _resolve_column(path, names, time_col, TIME_COLUMNS, None, "time_col"),
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
    """Map raw item ID → item text from a metadata file (formats and text rule: module
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
                                        "item ID", "item_id_col")
        raw_id = _raw_id(path, line, id_column, _field(path, line, record, id_column))
        if raw_id in first_line:
            raise InputError(f"{path}: line {line}: item ID {raw_id!r} appears again "
                             f"(first on line {first_line[raw_id]})")
        first_line[raw_id] = line
        fields_seen = fields_seen or any(name in record for name in text_fields)
        try:
            text = item_text(record, text_fields)
        except ValueError as error:  # an integer too long to write as text
            raise InputError(f"{path}: line {line}: {error}") from None
        texts[raw_id] = _writable(path, f"line {line}", "the item text", text)
    if not texts:
        raise InputError(f"{path}: no item records")
    if not fields_seen:
        raise ParameterError("text_fields", tuple(text_fields),
                             f"none of these fields occurs in {path}; choose others")
    return texts


def item_text(record: dict, text_fields: Sequence[str]) -> str:
    """The text of one metadata record from its ``text_fields`` (the rule: module docstring)."""
    if len(text_fields) == 1 and isinstance(record.get(text_fields[0]), str):
        return record[text_fields[0]]
    parts = []
    for name in text_fields:
        pieces = list(dict.fromkeys(p for p in (piece.strip() for piece in
                                                _flatten(record.get(name))) if p))
        if pieces:
            text = ", ".join(pieces)
            parts.append(text if text.endswith((".", "!", "?")) else text + ".")
    return " ".join(parts)


def replace_utc_designator(text: str) -> str:
    """An ISO-8601 date's final ``Z`` (or ``z``, "UTC") written as ``+00:00``.

    :meth:`datetime.fromisoformat` reads ``Z`` only from Python 3.11 on; ``+00:00`` it reads on
    every Python fitmm supports.
    """
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text


def _flatten(value) -> Iterator[str]:
    """Strings of a metadata value: nested lists/objects in order, numbers as text."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield str(value)
        elif isinstance(value, (list, tuple)):
            pending.extend(reversed(value))
        elif isinstance(value, dict):
            pending.extend(reversed(list(value.values())))


def _ready_texts(path: Path, item_id_col: str | None) -> dict[str, str] | None:
    """Texts given directly by a JSON document (list or object of strings), else None.

    Returns None when the file is JSON lines (its first line is an object holding an item ID
    key); those are read as records.
    """
    record = _parse_line_value(_first_nonblank_line(path))
    candidates = (item_id_col,) if item_id_col else ITEM_ID_COLUMNS
    if isinstance(record, dict) and any(name in record for name in candidates):
        return None
    try:
        document = json.loads("".join(_PhysicalLines(path)))
    except (ValueError, RecursionError) as error:
        raise InputError(f"{path}: neither JSON lines with an item ID key ("
                         f"{', '.join(candidates)}) nor a JSON list/object of texts ({error})"
                         ) from None
    if isinstance(document, list):
        entries = [(str(index), text) for index, text in enumerate(document)]
    elif isinstance(document, dict):
        entries = list(document.items())
    else:
        raise InputError(f"{path}: a JSON document of item texts must be a list or an object")
    for raw_id, text in entries:
        where = f"item {_writable(path, 'an item ID', 'the ID', raw_id)!r}"
        if text is not None and not isinstance(text, str):
            raise InputError(f"{path}: {where}: text must be a string or null, "
                             f"not {type(text).__name__}")
        _writable(path, where, "the text", text or "")
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


def _open_bytes(path: Path) -> BinaryIO:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as error:
        raise InputError(f"{path}: cannot be opened ({error.strerror})") from None


class _PhysicalLines:
    """The text lines of a file (plain or gzip), each decoded from UTF-8 on its own.

    ``number`` is the physical line last read (lines end at ``\\n``, ``\\r\\n`` or ``\\r``).
    Decoding line by line, rather than through a decoder that reads ahead in blocks, lets a
    decoding error, or a fault found by whoever reads these lines, name the line it is on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        handle = _open_bytes(self.path)
        encoding = "utf-8-sig"  # the first line may start with a byte-order mark
        try:
            with handle:
                for block in handle:  # up to and including a \n
                    for raw in block.splitlines(keepends=True) if b"\r" in block else (block,):
                        self.number += 1
                        try:
                            text = raw.decode(encoding)
                        except UnicodeDecodeError as error:
                            raise InputError(f"{self.path}: line {self.number}: not UTF-8 text "
                                             f"({error.reason} at byte {error.start + 1} of the "
                                             "line)") from None
                        encoding = "utf-8"
                        yield text
        except (OSError, EOFError, zlib.error) as error:
            raise InputError(f"{self.path}: line {self.number + 1}: cannot be read ({error})"
                             ) from None


def _first_nonblank_line(path: Path) -> str:
    for text in _PhysicalLines(path):
        if text.strip():
            return text
    return ""


def _iter_records(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for each row: a dict of column → value (strings for CSV/TSV).

    Raises InputError for unreadable files, malformed lines and rows of the wrong width.
    """
    file_format = _file_format(path)
    lines = _PhysicalLines(path)
    if file_format == "json":
        for text in lines:
            if text.strip():
                yield lines.number, _parse_json_line(path, lines.number, text)
        return
    reader = csv.reader(lines, delimiter=file_format)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file (a header line is needed)")
        header = [name.strip() for name in header]
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise InputError(f"{path}: line {lines.number}: {len(row)} fields, the header "
                                 f"has {len(header)}")
            yield lines.number, dict(zip(header, row))
    except csv.Error as error:
        raise InputError(f"{path}: line {lines.number}: cannot be read ({error})") from None


_UNPARSED = object()


def _parse_line_value(text: str):
    """The value on one line: JSON, else a Python literal (2014 Amazon metadata), else _UNPARSED."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
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
                    candidates: Sequence[str], role: str | None, parameter: str) -> str | None:
    """The column to use: ``explicit`` (which must exist) or the first candidate present.

    ``role`` names the column for the error when none is found; None = the column is optional.
    ``parameter`` is the caller's parameter that names the column.
    """
    if explicit is not None:
        if explicit not in names:
            raise ParameterError(parameter, explicit, f"no such column in {path} (its columns: "
                                                      f"{', '.join(map(repr, names))})")
        return explicit
    found = next((name for name in candidates if name in names), None)
    if found is None and role is not None:
        raise ParameterError(parameter, None, f"{path} has no {role} column (looked for "
                                              f"{', '.join(candidates)}); name the column")
    return found


def _field(path: Path, line: int, record: dict, name: str):
    if name not in record:
        raise InputError(f"{path}: line {line}: missing {name!r}")
    return record[name]


def _raw_id(path: Path, line: int, name: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{path}: line {line}: {name} must be a string or integer ID, "
                         f"not {_shown(value)}")
    try:
        raw_id = str(value).strip()
    except ValueError as error:  # an integer too long to write as text
        raise InputError(f"{path}: line {line}: {name}: {error}") from None
    if not raw_id:
        raise InputError(f"{path}: line {line}: empty {name}")
    if "\0" in raw_id:
        raise InputError(f"{path}: line {line}: {name} {raw_id!r} holds a NUL character")
    return _writable(path, f"line {line}", name, raw_id)


def _writable(path: Path, where: str, what: str, text: str) -> str:
    """``text``, checked to be writable as UTF-8: a JSON or Python escape can make a lone
    surrogate, which is no character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(f"{path}: {where}: {what} holds {text[error.start]!r}, a lone "
                         "surrogate (not a character)") from None
    return text


def _shown(value) -> str:
    """``repr(value)`` for a message, cut to 60 characters (a value may be a long text, or an
    integer too long to write out)."""
    try:
        text = repr(value)
    except ValueError:
        return f"(an {type(value).__name__} too long to show)"
    return text if len(text) <= 60 else text[:57] + "..."


def _number(path: Path, line: int, name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{path}: line {line}: {name} {_shown(value)} is not a finite number")
    return number


def _timestamp(path: Path, line: int, name: str, value) -> float:
    if isinstance(value, str):
        try:
            return _number(path, line, name, value)
        except InputError:
            pass
        try:
            moment = datetime.fromisoformat(replace_utc_designator(value.strip()))
        except ValueError:
            raise InputError(f"{path}: line {line}: {name} {_shown(value)} is neither a number "
                             "nor an ISO-8601 date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return _number(path, line, name, value)
