"""Property-based fuzzing of every reader of user files: the ``.inter`` reader of dataset folders
and the raw-catalogue readers of ``fitmm data prepare`` / ``fitmm data encode``.

Each reader gets arbitrary bytes, and valid files with one structured fault: a field replaced by
odd text or a huge number, a field too many or too few, odd quoting, blank lines, other line
endings, a byte-order mark, NUL bytes, bytes that are not UTF-8, a truncation, a damaged gzip
stream. The only allowed outcomes are success or an :class:`InputError` whose message is one line;
any other exception is a reader bug. The examples are derandomised, so every run tries the same
ones and a failure reproduces; the explicit ``@example`` cases are faults these tests found.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fitmm.data.dataset import load_folder
from fitmm.data.prepare import read_interactions, read_item_texts
from fitmm.errors import InputError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _read_or_refuse(read: Callable[[Path], object], name: str, content: bytes) -> None:
    """Write ``content`` as ``name`` in a fresh folder and read it: success, or a one-line
    InputError; any other exception propagates and fails the test."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data" / name
        path.parent.mkdir()
        path.write_bytes(content)
        try:
            read(path)
        except InputError as error:
            message = str(error)
            assert message and "\n" not in message and "\r" not in message, repr(message)


def _load_inter(path: Path) -> None:
    load_folder(path.parent)


def _read_interactions(path: Path) -> None:
    read_interactions(path, user_col=None, item_col=None, rating_col=None, time_col=None)


def _read_item_texts(path: Path) -> None:
    read_item_texts(path, item_id_col=None, text_fields=("title", "description"))


def _read_one_item_text(path: Path) -> None:
    read_item_texts(path, item_id_col=None, text_fields=("description",))


# ------------------------------------------------------------------------------------------
# Odd values and faults


ODD_TEXTS = st.sampled_from([
    "", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "-0", "0x10", "1_0", "١٢", "+3",
    "9" * 5000, str(2 ** 63), str(-2 ** 63 - 1), str(2 ** 64), str(10 ** 12), "3.5", "1e5",
    "2014-01-31T10:00:00Z", "2014-01-31T10:00:00z", "2014-01-31", "2014-13-45", "Z",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999Z",
    '"', '""', '"a""b"', 'a"b', '"a\nb"', "\x00", "a\x00", "\ufeff", "\r", "\n", "\r\n", "a\tb",
    "a,b",
    "\ud800", "\udcff", "\x85", "\u2028", "é", "😀", "[1, 2]", "{}", "null", "true",
])
FIELD_VALUES = st.one_of(
    ODD_TEXTS,
    st.text(max_size=12),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
    st.floats().map(repr),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats() | st.text(max_size=10) | ODD_TEXTS,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8)
RAW_JSON_VALUES = st.sampled_from([
    "[" * 3000 + "]" * 3000, "{" * 50, "1" * 5000, "0x" + "f" * 5000, '"\\ud800"', '"\\u0000"',
    "NaN", "-Infinity", "1e400", "'single'", "b'bytes'", "{1, 2}", "1j", "...", "None", "set()",
    "(1,)", '"a" "b"',
])


def _encode(text: str) -> bytes:
    """UTF-8, letting lone surrogates through as (invalid) bytes."""
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _byte_fault(draw, content: bytes) -> bytes:
    """``content`` with one byte-level fault, or as it is."""
    fault = draw(st.sampled_from(["none", "bom", "nul", "bad byte", "truncate", "crlf", "cr",
                                  "bytes", "blank lines"]))
    at = draw(st.integers(min_value=0, max_value=len(content)))
    if fault == "bom":
        return b"\xef\xbb\xbf" + content
    if fault == "nul":
        return content[:at] + b"\x00" + content[at:]
    if fault == "bad byte":
        return content[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) \
            + content[at + 1:]
    if fault == "truncate":
        return content[:at]
    if fault == "crlf":
        return content.replace(b"\n", b"\r\n")
    if fault == "cr":
        return content.replace(b"\n", b"\r")
    if fault == "bytes":
        return content[:at] + draw(st.binary(max_size=8)) + content[at:]
    if fault == "blank lines":
        return content[:at] + draw(st.sampled_from([b"\n", b"\n\n", b" \t \n", b"\r\n"])) \
            + content[at:]
    return content


@st.composite
def _delimited(draw, header: list[str], row: st.SearchStrategy, delimiter: str) -> bytes:
    """A valid delimited file (header and rows), then one fault in a field, a row or the bytes."""
    rows = [header] + draw(st.lists(row, min_size=0, max_size=8))
    fault = draw(st.sampled_from(["field", "quoted field", "missing field", "extra field",
                                  "header", "row of text", "none"]))
    target = draw(st.integers(min_value=0, max_value=len(rows) - 1))
    line = list(rows[target])
    column = draw(st.integers(min_value=0, max_value=len(line) - 1))
    if fault == "field":
        line[column] = draw(FIELD_VALUES)
    elif fault == "quoted field":
        line[column] = '"' + draw(FIELD_VALUES) + draw(st.sampled_from(['"', ""]))
    elif fault == "missing field":
        del line[column]
    elif fault == "extra field":
        line.insert(column, draw(FIELD_VALUES))
    elif fault == "header":
        rows[0] = draw(st.lists(FIELD_VALUES, min_size=1, max_size=5))
    elif fault == "row of text":
        line = [draw(st.text(max_size=30))]
    rows[target] = line
    text = "".join(delimiter.join(fields) + "\n" for fields in rows)
    return draw(_byte_fault(_encode(text)))


@st.composite
def _json_lines(draw, record: st.SearchStrategy) -> bytes:
    """Valid JSON lines (or Python-literal lines), then one fault in a value, a line or the bytes."""
    records = draw(st.lists(record, min_size=1, max_size=8))
    python_literals = draw(st.booleans())
    lines = [repr(item) if python_literals else json.dumps(item) for item in records]
    fault = draw(st.sampled_from(["value", "raw value", "missing key", "line of text",
                                  "cut line", "none"]))
    target = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    key = draw(st.sampled_from(sorted(records[target])))
    if fault == "value":
        lines[target] = json.dumps(dict(records[target], **{key: draw(JSON_VALUES)}))
    elif fault == "raw value":
        lines[target] = json.dumps(dict(records[target], **{key: 0})).replace(
            f'"{key}": 0', f'"{key}": {draw(RAW_JSON_VALUES)}')
    elif fault == "missing key":
        lines[target] = json.dumps({k: v for k, v in records[target].items() if k != key})
    elif fault == "line of text":
        lines[target] = draw(st.text(max_size=40))
    elif fault == "cut line":
        lines[target] = lines[target][:draw(st.integers(0, len(lines[target])))]
    return draw(_byte_fault(_encode("".join(line + "\n" for line in lines))))


def _maybe_gzip(name: str, content: st.SearchStrategy) -> st.SearchStrategy:
    """``(name, content)``, or ``(name.gz, gzip of content)``, possibly cut or damaged."""
    @st.composite
    def pair(draw):
        data = draw(content)
        if not draw(st.booleans()):
            return name, data
        packed = gzip.compress(data, mtime=0)
        fault = draw(st.sampled_from(["none", "cut", "flip"]))
        at = draw(st.integers(min_value=0, max_value=len(packed) - 1))
        if fault == "cut":
            packed = packed[:at]
        elif fault == "flip":
            packed = packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1:]
        return name + ".gz", packed
    return pair()


IDS = st.integers(min_value=0, max_value=30).map(str)
RAW_IDS = st.one_of(IDS, st.text(alphabet="abcXYZ019", min_size=1, max_size=6))
INTER_ROW = st.tuples(IDS, IDS, st.sampled_from(["0", "0", "1", "2"])).map(list)
INTERACTION_ROW = st.tuples(RAW_IDS, RAW_IDS, st.sampled_from(["1", "4.5", "5"]),
                            st.sampled_from(["1400000000", "2014-01-31T10:00:00Z",
                                             "2014-01-31"])).map(list)
ITEM_ROW = st.tuples(RAW_IDS, st.text(max_size=15), st.text(max_size=15)).map(list)
INTERACTION_RECORD = st.fixed_dictionaries({
    "reviewerID": RAW_IDS, "asin": RAW_IDS, "overall": st.sampled_from([1.0, 4, 5.0]),
    "unixReviewTime": st.integers(min_value=10 ** 9, max_value=2 * 10 ** 9)})
ITEM_RECORD = st.fixed_dictionaries({
    "asin": RAW_IDS, "title": st.text(max_size=15),
    "description": st.one_of(st.text(max_size=15), st.lists(st.text(max_size=8), max_size=3))})


# ------------------------------------------------------------------------------------------
# The .inter reader of dataset folders


@FUZZ
@given(st.binary(max_size=400))
def test_inter_reader_on_arbitrary_bytes(content):
    _read_or_refuse(_load_inter, "data.inter", content)


@FUZZ
@given(_delimited(["userID", "itemID", "x_label"], INTER_ROW, "\t"))
@example(b"userID\titemID\tx_label\n0\t0\t0\n%d\t1\t0\n" % 10 ** 30)  # beyond int64
@example(b"userID\titemID\tx_label\n0\t0\t0\n%d\t1\t0\n" % 10 ** 12)  # 10^12 users
@example(b'"user\nID"\titemID\tx_label\n0\t0\t0\n')  # a newline in the header
@example(b'userID\titemID\tx_label\n"0\n1"\t0\t0\n')  # a newline in a value
@example(b"userID\titemID\tx_label\n0\t0\t\xff\n")  # not UTF-8
def test_inter_reader_on_near_misses(content):
    _read_or_refuse(_load_inter, "data.inter", content)


# ------------------------------------------------------------------------------------------
# The raw-catalogue readers of fitmm data prepare


@FUZZ
@given(st.sampled_from(["r.csv", "r.tsv", "r.jsonl", "r.csv.gz", "r.jsonl.gz"]),
       st.binary(max_size=400))
def test_interaction_reader_on_arbitrary_bytes(name, content):
    _read_or_refuse(_read_interactions, name, content)


@FUZZ
@given(st.one_of(
    _maybe_gzip("r.csv", _delimited(["user_id", "item_id", "rating", "timestamp"],
                                    INTERACTION_ROW, ",")),
    _maybe_gzip("r.tsv", _delimited(["user_id", "item_id", "rating", "timestamp"],
                                    INTERACTION_ROW, "\t")),
))
def test_interaction_reader_on_csv_and_tsv_near_misses(named):
    _read_or_refuse(_read_interactions, *named)


@FUZZ
@given(_maybe_gzip("r.jsonl", _json_lines(INTERACTION_RECORD)))
@example(("r.jsonl", b'{"reviewerID": "a", "asin": "b", "overall": 1%s}\n' % (b"0" * 400)))
@example(("r.jsonl", b"{'reviewerID': 'a', 'asin': 0x%s}\n" % (b"f" * 5000)))
@example(("r.jsonl", b'{"reviewerID": "a", "asin": %s1%s}\n' % (b"[" * 3000, b"]" * 3000)))
@example(("r.jsonl", b'{"reviewerID": "\\ud800", "asin": "b"}\n'))
@example(("r.jsonl", b'{"reviewerID": "a\\u0000", "asin": "b"}\n'))
def test_interaction_reader_on_json_lines_near_misses(named):
    _read_or_refuse(_read_interactions, *named)


@FUZZ
@given(st.sampled_from(["m.csv", "m.jsonl", "m.json", "m.json.gz"]), st.binary(max_size=400))
def test_item_text_reader_on_arbitrary_bytes(name, content):
    _read_or_refuse(_read_item_texts, name, content)


@FUZZ
@given(st.one_of(
    _maybe_gzip("m.csv", _delimited(["item_id", "title", "description"], ITEM_ROW, ",")),
    _maybe_gzip("m.jsonl", _json_lines(ITEM_RECORD)),
), st.booleans())
@example(("m.jsonl", b"{'asin': 'a', 'title': 0x%s}\n" % (b"f" * 5000)), False)
@example(("m.jsonl", b'{"asin": "a", "title": %s"x"%s}\n' % (b"[" * 950, b"]" * 950)), False)
@example(("m.jsonl", b'{"asin": "a", "description": "\\udc80"}\n'), True)
def test_item_text_reader_on_near_misses(named, one_field):
    _read_or_refuse(_read_one_item_text if one_field else _read_item_texts, *named)


@FUZZ
@given(st.one_of(st.lists(JSON_VALUES, max_size=6), st.dictionaries(st.text(max_size=6),
                                                                     JSON_VALUES, max_size=6),
                 JSON_VALUES).map(json.dumps).flatmap(lambda text: _byte_fault(_encode(text))))
def test_ready_texts_reader_on_near_misses(content):
    _read_or_refuse(_read_item_texts, "texts.json", content)
