"""``fitmm data prepare`` / ``fitmm data encode`` through the real command line: the output folder
is never someone else's, errors name the true line and the flag, ISO dates with ``Z`` parse, and
the text rule (one field: its value exactly as given).

The encoders named on the command line are replaced by small deterministic stand-ins, so these
tests need no optional extra.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from fitmm.data.prepare.readers import replace_utc_designator
from fitmm.interfaces.cli import main


class FakeTextEncoder:
    """4-d rows from a text's SHA-256, so equal texts (and only those) get equal rows."""

    name = "fake-text"
    dim = 4

    def encode(self, texts):
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:4], np.uint8) for t in texts]
        return np.asarray(rows, dtype=np.float32) + 1.0


class FakeImageEncoder:
    """2-d rows: the length of the image file and 1."""

    name = "fake-image"
    dim = 2

    def preprocess(self, data: bytes) -> np.ndarray:
        return np.array([len(data), 1.0], np.float32)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return batch


@pytest.fixture(autouse=True)
def fake_encoders(monkeypatch):
    monkeypatch.setattr("fitmm.data.prepare.features.SentenceTransformerEncoder",
                        lambda name, batch_size: FakeTextEncoder())
    monkeypatch.setattr("fitmm.data.prepare.features.load_image_encoder",
                        lambda name: FakeImageEncoder())


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _catalogue(folder: Path) -> tuple[Path, Path, Path]:
    """Interactions (every user with every item), item titles, one image per item."""
    folder.mkdir(parents=True, exist_ok=True)
    interactions = _write(folder / "ratings.csv", "user_id,item_id\n" + "".join(
        f"u{u},i{i}\n" for u in range(6) for i in range(5)))
    items = _write(folder / "items.csv", "item_id,title\n" + "".join(
        f"i{i},Title {i}\n" for i in range(5)))
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for i in range(5):
        (images / f"i{i}.jpg").write_bytes(b"x" * (i + 1))
    return interactions, items, images


def _prepare(interactions: Path, items: Path, out: Path, *extra: str) -> int:
    return main(["data", "prepare", "--interactions", str(interactions), "--items", str(items),
                 "--out", str(out), "--k-core", "0", "--text-fields", "title", *extra])


def _one_error_line(capsys) -> str:
    """The single stderr line of a refused command (no traceback), without its prefix."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fitmm: error: "), err
    return lines[0].removeprefix("fitmm: error: ")


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------------------------------
# The output folder


def test_a_folder_with_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    out = tmp_path / "thesis"
    out.mkdir()
    _write(out / "chapter1.tex", "my work")
    _write(out / "u_id_mapping.csv", "not fitmm's")
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 2
    message = _one_error_line(capsys)
    assert message == (f"--out {out}: the folder is not empty and is not an earlier output of "
                       "fitmm data prepare (it has no prepare.json); choose an empty or new folder")
    assert _contents(out) == {"chapter1.tex": b"my work", "u_id_mapping.csv": b"not fitmm's"}


def test_a_hidden_file_makes_a_folder_non_empty(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    _write(out / ".notes", "x")
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 2
    assert "choose an empty or new folder" in _one_error_line(capsys)


def test_a_folder_with_only_a_moved_feature_cache_is_used_and_its_cache_reused(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    assert _prepare(interactions, items, tmp_path / "first", "--image-encoder", "none") == 0
    capsys.readouterr()
    (tmp_path / "second").mkdir()
    (tmp_path / "first" / ".feature_cache").rename(tmp_path / "second" / ".feature_cache")
    assert _prepare(interactions, items, tmp_path / "second", "--image-encoder", "none") == 0
    assert "encoded 0, from cache" in capsys.readouterr().out


def test_an_empty_existing_folder_is_used(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    out = tmp_path / "ds"
    out.mkdir()
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 0
    assert "prepared dataset 'ds'" in capsys.readouterr().out
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["command"] == "fitmm data prepare"
    assert manifest["files"] == ["ds.inter", "u_id_mapping.csv", "i_id_mapping.csv",
                                 "text_feat.npy", "text_mask.npy"]
    assert manifest["settings"]["k_core"] == 0
    assert manifest["settings"]["text_fields"] == ["title"]
    assert manifest["settings"]["interactions"] == str(interactions.resolve())
    assert {name for name in _contents(out) if "/" not in name} == {"prepare.json",
                                                                    *manifest["files"]}


def test_rerun_into_its_own_output_resumes_from_cache_and_keeps_other_files(tmp_path, capsys):
    interactions, items, images = _catalogue(tmp_path / "raw")
    out = tmp_path / "ds"
    assert _prepare(interactions, items, out, "--images", str(images)) == 0
    first = _contents(out)
    assert "text features (fake-text): 5/5 items" in capsys.readouterr().out
    _write(out / "README.txt", "notes of mine")

    assert _prepare(interactions, items, out, "--images", str(images)) == 0
    printed = capsys.readouterr().out
    assert "encoded 0, from cache 5" in printed
    again = _contents(out)
    assert again.pop("README.txt") == b"notes of mine"
    assert again == first

    # a run without images removes the image files that the earlier run wrote (listed)
    assert _prepare(interactions, items, out) == 0  # --image-encoder default, no --images
    capsys.readouterr()
    assert not (out / "image_feat.npy").exists() and not (out / "image_mask.npy").exists()
    assert (out / "text_feat.npy").exists() and (out / "README.txt").exists()
    assert "image_feat.npy" not in json.loads((out / "prepare.json").read_text())["files"]


def test_an_unlisted_file_in_the_way_is_never_replaced(tmp_path, capsys):
    interactions, items, images = _catalogue(tmp_path / "raw")
    out = tmp_path / "ds"
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 0
    capsys.readouterr()
    np.save(out / "image_feat.npy", np.ones((2, 2)))  # the user's own array, not in prepare.json
    before = _contents(out)
    assert _prepare(interactions, items, out, "--images", str(images)) == 2
    message = _one_error_line(capsys)
    assert message.startswith(f"--out {out}: it holds image_feat.npy, which its prepare.json "
                              "does not list")
    assert _contents(out) == before


def test_a_folder_holding_another_manifest_is_refused(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    out = tmp_path / "ds"
    out.mkdir()
    _write(out / "prepare.json", json.dumps({"command": "something else", "files": ["x"]}))
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 2
    assert "its prepare.json is not a manifest of fitmm data prepare" in _one_error_line(capsys)
    _write(out / "prepare.json", "{not json")
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 2
    assert "its prepare.json cannot be read" in _one_error_line(capsys)


def test_encode_has_its_own_manifest(tmp_path, capsys):
    interactions, items, images = _catalogue(tmp_path / "raw")
    dataset = tmp_path / "ds"
    assert _prepare(interactions, items, dataset, "--image-encoder", "none") == 0
    capsys.readouterr()
    encode = ["data", "encode", "--items", str(items), "--text-fields", "title"]
    assert main(encode + ["--out", str(dataset)]) == 2  # a prepare output is not encode's
    assert "(it has no encode.json)" in _one_error_line(capsys)

    new = tmp_path / "new"
    assert main(encode + ["--images", str(images), "--out", str(new)]) == 0
    assert json.loads((new / "encode.json").read_text())["files"] == [
        "i_id_mapping.csv", "text_feat.npy", "text_mask.npy", "image_feat.npy",
        "image_mask.npy"]
    assert main(encode + ["--out", str(new), "--image-encoder", "none"]) == 0
    assert not (new / "image_feat.npy").exists()
    capsys.readouterr()
    assert main(["data", "prepare", "--interactions", str(interactions), "--items", str(items),
                 "--out", str(new)]) == 2  # an encode output is not prepare's
    assert "(it has no prepare.json)" in _one_error_line(capsys)


def test_bad_input_writes_nothing(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    bad = _write(tmp_path / "raw" / "bad.csv", "user_id,item_id\nu1,i1\nu2\n")
    fresh = tmp_path / "fresh"
    assert _prepare(bad, items, fresh) == 2
    assert "bad.csv: line 3: 1 fields, the header has 2" in _one_error_line(capsys)
    assert not fresh.exists()

    out = tmp_path / "ds"
    assert _prepare(interactions, items, out, "--image-encoder", "none") == 0
    capsys.readouterr()
    before = _contents(out)
    assert _prepare(bad, items, out, "--image-encoder", "none") == 2
    _one_error_line(capsys)
    assert _prepare(interactions, items, out, "--k-core", "50") == 2  # the last --k-core wins
    assert _one_error_line(capsys).startswith("--k-core 50: no interactions left after the "
                                              "50-core filter (30 of ")
    assert _contents(out) == before


# ------------------------------------------------------------------------------------------
# Errors name the flag


@pytest.mark.parametrize(("flags", "expected"), [
    (["--k-core", "-1"], "--k-core -1: must be 0 or more"),
    (["--batch-size", "0"], "--batch-size 0: must be 1 or more"),
    (["--item-col", "product"], "--item-col product: no such column in {raw}/ratings.csv (its "
                                "columns: 'user_id', 'item_id')"),
    (["--images", "{raw}/nowhere"], "--images {raw}/nowhere: image folder not found"),
    (["--split", "user-temporal"], "--time-col: the user-temporal split needs a timestamp column "
                                   "and {raw}/ratings.csv has none (looked for timestamp, "
                                   "unixReviewTime, time); name the column"),
    (["--min-rating", "3"], "--rating-col: a minimum rating needs a rating column and "
                            "{raw}/ratings.csv has none (looked for rating, overall); name the "
                            "column"),
    (["--text-fields", "body,blurb"], "--text-fields body,blurb: none of these fields occurs in "
                                      "{raw}/items.csv; choose others"),
])
def test_parameter_errors_name_the_flag(tmp_path, capsys, flags, expected):
    raw = tmp_path / "raw"
    interactions, items, _ = _catalogue(raw)
    flags = [flag.format(raw=raw) for flag in flags]
    assert _prepare(interactions, items, tmp_path / "out", *flags) == 2
    assert _one_error_line(capsys) == expected.format(raw=raw)
    assert not (tmp_path / "out").exists()


def test_an_unknown_image_encoder_names_the_flag(tmp_path, capsys, monkeypatch):
    from fitmm.features.image import load_image_encoder

    monkeypatch.setattr("fitmm.data.prepare.features.load_image_encoder", load_image_encoder)
    interactions, items, images = _catalogue(tmp_path / "raw")
    assert _prepare(interactions, items, tmp_path / "out", "--images", str(images),
                    "--image-encoder", "resnet50") == 2
    assert _one_error_line(capsys) == ("--image-encoder resnet50: unknown image encoder (use "
                                       "efficientnet-lite0 or torchvision:MODEL_NAME)")


def test_output_that_is_a_file_names_the_flag(tmp_path, capsys):
    interactions, items, _ = _catalogue(tmp_path / "raw")
    occupied = _write(tmp_path / "occupied", "x")
    assert _prepare(interactions, items, occupied) == 2
    assert _one_error_line(capsys) == f"--out {occupied}: not a folder"
    assert main(["data", "encode", "--items", str(items), "--out", str(occupied)]) == 2
    assert _one_error_line(capsys) == f"--out {occupied}: not a folder"
    assert _prepare(interactions, items, occupied / "inside", "--image-encoder", "none") == 2
    assert _one_error_line(capsys) == (f"--out {occupied / 'inside'}: the folder cannot be made "
                                       "(Not a directory)")


# ------------------------------------------------------------------------------------------
# True line numbers


# Lines of 20-odd bytes with multi-byte characters: a decoder reading ahead in blocks would be
# thousands of bytes past the bad byte when it fails.
CSV_LINES = (b"user_id,item_id,review\n", b"u%d,i%d,\xc3\xa9t\xc3\xa9\n")
JSON_LINES = (b'{"user_id": "u0", "item_id": "i0", "review": "\xc3\xa9t\xc3\xa9"}\n',
              b'{"user_id": "u%d", "item_id": "i%d", "review": "\xc3\xa9t\xc3\xa9"}\n')


def _bytes_with_bad_line(header: bytes, row: bytes, bad_line: int, n_lines: int) -> bytes:
    """Rows from the ``row`` template after ``header``; line ``bad_line`` holds a byte that is
    not UTF-8 (its first "u" becomes 0xFF)."""
    lines = [header] + [row % (number % 7, number % 5) for number in range(2, n_lines + 1)]
    lines[bad_line - 1] = lines[bad_line - 1].replace(b"u", b"\xff", 1)
    return b"".join(lines)


@pytest.mark.parametrize("name", ["ratings.csv", "ratings.csv.gz", "ratings.jsonl",
                                  "ratings.jsonl.gz"])
def test_a_bad_byte_far_into_a_file_names_its_line(tmp_path, capsys, name):
    _, items, _ = _catalogue(tmp_path / "raw")
    header, row = CSV_LINES if ".csv" in name else JSON_LINES
    content = _bytes_with_bad_line(header, row, bad_line=5000, n_lines=6000)
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    assert _prepare(path, items, tmp_path / "out", "--image-encoder", "none") == 2
    column = content.splitlines()[4999].index(b"\xff") + 1
    assert _one_error_line(capsys) == (f"{path}: line 5000: not UTF-8 text (invalid start byte "
                                       f"at byte {column} of the line)")


def test_line_numbers_count_physical_lines(tmp_path, capsys):
    """Blank lines, a quoted field over three lines and CRLF endings all count as lines."""
    _, items, _ = _catalogue(tmp_path / "raw")
    path = tmp_path / "r.csv"
    path.write_bytes(b'user_id,item_id,note\r\nu1,i1,"one\r\ntwo\r\nthree"\r\n\r\n\r\nu2,i2\r\n')
    assert _prepare(path, items, tmp_path / "out") == 2
    assert _one_error_line(capsys) == f"{path}: line 7: 2 fields, the header has 3"
    metadata = tmp_path / "items.jsonl"
    metadata.write_bytes(b'{"item_id": "i1", "title": "a"}\n\n{"item_id": "i2", "title": "\xe9"}\n')
    interactions = tmp_path / "raw" / "ratings.csv"
    assert _prepare(interactions, metadata, tmp_path / "out") == 2
    assert _one_error_line(capsys).startswith(f"{metadata}: line 3: not UTF-8 text")


def test_a_byte_order_mark_is_allowed(tmp_path):
    _, items, _ = _catalogue(tmp_path / "raw")
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id\nu1,i1\nu1,i2\n")
    assert _prepare(path, items, tmp_path / "out", "--image-encoder", "none") == 0


# ------------------------------------------------------------------------------------------
# ISO dates with Z


def test_utc_designator_becomes_an_offset_every_python_reads():
    assert replace_utc_designator("2014-01-31T10:00:00Z") == "2014-01-31T10:00:00+00:00"
    assert replace_utc_designator("2014-01-31T10:00:00.250z") == "2014-01-31T10:00:00.250+00:00"
    assert replace_utc_designator("2014-01-31T10:00:00+02:00") == "2014-01-31T10:00:00+02:00"
    assert replace_utc_designator("2014-01-31") == "2014-01-31"
    # the +HH:MM form is what datetime.isoformat writes, so fromisoformat reads it on 3.10 too
    moment = datetime(2014, 1, 31, 10, 0, 0, 250000, tzinfo=timezone.utc)
    assert replace_utc_designator("2014-01-31T10:00:00.250000Z") == moment.isoformat()


def test_dates_ending_in_z_through_the_command(tmp_path, capsys):
    _, items, _ = _catalogue(tmp_path / "raw")
    path = _write(tmp_path / "r.csv", "user_id,item_id,timestamp\n"
                                      "u1,i1,2014-01-31T10:00:00Z\n"
                                      "u1,i2,2014-01-31T10:00:01.500z\n"
                                      "u1,i3,2014-01-31T12:00:00+02:00\n"
                                      "u1,i4,2014-01-31T10:00:00\n")
    out = tmp_path / "ds"
    assert _prepare(path, items, out, "--image-encoder", "none", "--split", "user-temporal") == 0
    capsys.readouterr()
    table = np.loadtxt(out / "ds.inter", skiprows=1, ndmin=2)
    base = datetime(2014, 1, 31, 10, tzinfo=timezone.utc).timestamp()
    assert table[:, 2].tolist() == [base, base + 1.5, base, base]


# ------------------------------------------------------------------------------------------
# The text rule


def test_the_text_rule_is_in_the_help(capsys):
    for command in ("prepare", "encode"):
        with pytest.raises(SystemExit) as exited:
            main(["data", command, "--help"])
        assert exited.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert "With one field, a string value is the item's text exactly as given (not " \
               "stripped, no final '.')" in help_text
        assert "the field texts are joined with a space" in help_text


def test_a_single_field_is_encoded_exactly_as_given(tmp_path, capsys):
    descriptions = {"b1": "  A kettle that whistles  ", "b2": "Mug, blue", "b3": "Line one.\nTwo"}
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": raw, "description": text, "title": "T"})
                             + "\n" for raw, text in descriptions.items()))
    out = tmp_path / "new"
    assert main(["data", "encode", "--items", str(items), "--text-fields", "description",
                 "--image-encoder", "none", "--out", str(out)]) == 0
    direct = FakeTextEncoder().encode(list(descriptions.values()))
    np.testing.assert_array_equal(np.load(out / "text_feat.npy"), direct)

    # several fields keep the joining rule
    assert main(["data", "encode", "--items", str(items), "--text-fields", "title,description",
                 "--image-encoder", "none", "--out", str(out)]) == 0
    joined = FakeTextEncoder().encode(["T. A kettle that whistles.", "T. Mug, blue.",
                                       "T. Line one.\nTwo."])
    np.testing.assert_array_equal(np.load(out / "text_feat.npy"), joined)
