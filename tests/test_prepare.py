"""``fitmm data prepare``: readers, cleaning, k-core, ID mapping, output layout, cache, CLI.

Encoders here are small deterministic stand-ins, so these tests need no optional extra; the
real encoders are tested in ``test_features.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import string
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from fitmm.data.prepare import (
    encode_raw_ids,
    item_text,
    kcore_filter,
    latest_unique,
    prepare_dataset,
    read_interactions,
    read_item_texts,
)
from fitmm.data.prepare.splitting import holdout_sizes
from fitmm.errors import InputError
from fitmm.interfaces.cli_data import add_data_commands


class FakeTextEncoder:
    """Deterministic 8-d unit vectors from a text's hash; records what it was asked to encode."""

    name = "fake-text"
    dim = 8

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.seen: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def encode(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # an interrupted run
        self.seen.extend(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts]
        rows = np.asarray(rows, dtype=np.float32) + 1.0
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class FakeImageEncoder:
    """4-d features: mean RGB of an 8×8 centre crop, plus 1. Uses the real decoding helpers."""

    name = "fake-image"
    dim = 4

    def __init__(self) -> None:
        self.encoded = 0

    def preprocess(self, data: bytes) -> np.ndarray:
        from fitmm.features.image import decode_rgb, resize_center_crop

        return resize_center_crop(decode_rgb(data), 8).astype(np.float32).transpose(2, 0, 1)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        self.encoded += len(batch)
        means = batch.mean(axis=(2, 3))
        return np.concatenate([means, np.ones((len(batch), 1), np.float32)], axis=1)


def _read_inter(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return header, np.loadtxt(io.StringIO("\n".join(lines[1:])), dtype=np.float64, ndmin=2)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _prepare_ids_only(tmp_path: Path, interactions: Path, **options):
    return prepare_dataset(interactions=interactions, out=tmp_path / "out", text_encoder=None,
                           image_encoder=None, **options)


# ------------------------------------------------------------------------------------------
# k-core, duplicates and IDs against plain-Python references


def _kcore_reference(users: list[int], items: list[int], k: int) -> list[bool]:
    keep = [True] * len(users)
    changed = True
    while changed:
        changed = False
        user_degree: dict[int, int] = defaultdict(int)
        item_degree: dict[int, int] = defaultdict(int)
        for row, kept in enumerate(keep):
            if kept:
                user_degree[users[row]] += 1
                item_degree[items[row]] += 1
        for row, kept in enumerate(keep):
            if kept and (user_degree[users[row]] < k or item_degree[items[row]] < k):
                keep[row] = False
                changed = True
    return keep


@pytest.mark.parametrize("seed", range(12))
def test_kcore_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = rng.integers(5, 60), rng.integers(5, 60)
    n_rows = int(rng.integers(0, 600))
    # skewed degrees so that cores are non-trivial: some users/items are popular
    users = rng.choice(n_users, size=n_rows, p=rng.dirichlet(np.full(n_users, 0.7)))
    items = rng.choice(n_items, size=n_rows, p=rng.dirichlet(np.full(n_items, 0.7)))
    for k in (0, 1, 2, 3, 5, 8):
        keep, rounds = kcore_filter(users, items, k)
        assert keep.tolist() == _kcore_reference(users.tolist(), items.tolist(), k)
        assert rounds >= 1
        if keep.any():
            assert np.bincount(users[keep])[np.unique(users[keep])].min() >= k
            assert np.bincount(items[keep])[np.unique(items[keep])].min() >= k


@pytest.mark.parametrize("seed", range(6))
def test_latest_unique_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 400
    users, items = rng.integers(0, 10, n), rng.integers(0, 8, n)
    timestamps = rng.integers(0, 5, n).astype(float)  # many ties
    best: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}
    for row in range(n):
        pair = (int(users[row]), int(items[row]))
        last[pair] = row
        if pair not in best or timestamps[row] >= timestamps[best[pair]]:
            best[pair] = row
    assert np.flatnonzero(latest_unique(users, items, timestamps)).tolist() == sorted(best.values())
    assert np.flatnonzero(latest_unique(users, items, None)).tolist() == sorted(last.values())


def test_encode_raw_ids_orders_numbers_numerically_else_as_strings():
    codes, uniques = encode_raw_ids(np.array(["10", "9", "100", "9"]))
    assert uniques.tolist() == ["9", "10", "100"] and codes.tolist() == [1, 0, 2, 0]
    codes, uniques = encode_raw_ids(np.array(["10", "09", "b", "A"]))
    assert uniques.tolist() == ["09", "10", "A", "b"] and codes.tolist() == [1, 0, 3, 2]


# ------------------------------------------------------------------------------------------
# Output layout, split sizes, reproducibility


def _random_csv(path: Path, seed: int, n_users: int = 60, n_items: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,rating,timestamp"]
    for user in range(n_users):
        for item in rng.choice(n_items, size=int(rng.integers(3, 30)), replace=False):
            rating, timestamp = rng.integers(1, 6), rng.integers(10**9, 2 * 10**9)
            lines.append(f"u{user:03d},i{item:03d},{rating},{timestamp}")
    return _write(path, "\n".join(lines) + "\n")


def test_output_layout_and_exact_split_sizes(tmp_path):
    interactions = _random_csv(tmp_path / "ratings.csv", seed=1)
    report = _prepare_ids_only(tmp_path, interactions, k_core=3, seed=7)
    out = tmp_path / "out"
    header, table = _read_inter(out / "out.inter")
    assert header == ["userID", "itemID", "rating", "timestamp", "x_label"]
    users, items, x_label = table[:, 0].astype(int), table[:, 1].astype(int), table[:, 4]
    assert set(np.unique(users)) == set(range(report.n_users))
    assert set(np.unique(items)) == set(range(report.n_items))
    assert len(users) == report.n_interactions
    assert report.split_sizes == {"train": int((x_label == 0).sum()),
                                  "valid": int((x_label == 1).sum()),
                                  "test": int((x_label == 2).sum())}
    for user in range(report.n_users):
        labels = x_label[users == user]
        n_valid, n_test = (int(v[0]) for v in holdout_sizes(np.array([len(labels)])))
        assert (labels == 1).sum() == n_valid and (labels == 2).sum() == n_test
    user_map = (out / "u_id_mapping.csv").read_text().splitlines()
    assert user_map[0] == "raw_id,userID"
    assert user_map[1:] == [f"{raw},{new}" for new, raw in enumerate(
        sorted({line.split(",")[0] for line in interactions.read_text().splitlines()[1:]}
               & {row.split(",")[0] for row in user_map[1:]}))]
    assert (out / "i_id_mapping.csv").read_text().splitlines()[0] == "raw_id,itemID"
    assert not (out / "text_feat.npy").exists() and not (out / "image_feat.npy").exists()


def test_same_seed_gives_byte_identical_files(tmp_path):
    interactions = _random_csv(tmp_path / "ratings.csv", seed=2)
    images = _image_folder(tmp_path / "imgs", [f"i{i:03d}" for i in range(0, 40, 3)])
    metadata = _write(tmp_path / "items.csv", "item_id,title\n" + "".join(
        f"i{i:03d},Item number {i}\n" for i in range(40)))
    outputs = []
    for run in ("a", "b", "c"):
        out = tmp_path / run / "shop"
        prepare_dataset(interactions=interactions, items=metadata, images=images, out=out,
                        seed=11 if run != "c" else 12, text_encoder=FakeTextEncoder(),
                        image_encoder=FakeImageEncoder(), text_fields=("title",))
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()})
    assert sorted(outputs[0]) == ["i_id_mapping.csv", "image_feat.npy", "image_mask.npy",
                                  "prepare.json", "shop.inter", "text_feat.npy", "text_mask.npy",
                                  "u_id_mapping.csv"]
    assert outputs[0] == outputs[1]
    assert outputs[0]["shop.inter"] != outputs[2]["shop.inter"]


def test_temporal_splits_through_prepare(tmp_path):
    interactions = _random_csv(tmp_path / "ratings.csv", seed=3)
    for split in ("user-temporal", "global-temporal"):
        report = _prepare_ids_only(tmp_path, interactions, k_core=0, split=split)
        _, table = _read_inter(tmp_path / "out" / "out.inter")
        assert report.split == split and report.n_interactions == len(table)
        timestamps, x_label = table[:, 3], table[:, 4]
        if split == "global-temporal":
            assert timestamps[x_label == 0].max() <= timestamps[x_label == 2].min()


def test_min_rating_and_report(tmp_path):
    interactions = _random_csv(tmp_path / "ratings.csv", seed=4)
    ratings = np.array([float(line.split(",")[2]) for line in
                        interactions.read_text().splitlines()[1:]])
    report = _prepare_ids_only(tmp_path, interactions, k_core=2, min_rating=4)
    assert report.rows_read == len(ratings)
    assert report.dropped_below_min_rating == int((ratings < 4).sum())
    assert (report.rows_read - report.dropped_below_min_rating - report.dropped_duplicates
            - report.dropped_kcore) == report.n_interactions
    _, table = _read_inter(tmp_path / "out" / "out.inter")
    assert table[:, 2].min() >= 4
    summary = report.summary()
    assert "dropped below min rating: " in summary and "2-core" in summary


# ------------------------------------------------------------------------------------------
# Amazon review dump layout, end to end


def _amazon_id(rng: random.Random, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choice(string.ascii_uppercase + string.digits)
                            for _ in range(length - len(prefix)))


def _image_folder(folder: Path, raw_ids: list[str], corrupt: tuple[str, ...] = ()) -> Path:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to write test images")
    folder.mkdir(parents=True, exist_ok=True)
    for index, raw_id in enumerate(raw_ids):
        if raw_id in corrupt:
            (folder / f"{raw_id}.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
            continue
        colour = ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)
        suffix = ("jpg", "png", "webp")[index % 3]
        Image.new("RGB", (30 + index % 7, 45), colour).save(folder / f"{raw_id}.{suffix}")
    return folder


def _amazon_catalogue(folder: Path, seed: int = 0):
    """Reviews (gzip JSON lines), metadata (gzip Python-literal lines, as in the 2014 dump),
    images. Returns paths and the item IDs with special content."""
    rng = random.Random(seed)
    users = [_amazon_id(rng, "A", 14) for _ in range(45)]
    asins = [_amazon_id(rng, "B00", 10) for _ in range(30)]
    reviews = []
    for user in users:
        for asin in rng.sample(asins, rng.randint(6, 12)):
            reviews.append({
                "reviewerID": user, "asin": asin, "reviewerName": "J. Doe",
                "helpful": [rng.randint(0, 3), rng.randint(3, 6)],
                "reviewText": "Works as described. " * rng.randint(1, 4),
                "overall": float(rng.randint(1, 5)), "summary": "Good",
                "unixReviewTime": rng.randint(1_300_000_000, 1_400_000_000),
                "reviewTime": "01 2, 2014"})
    sparse_users = [_amazon_id(rng, "A", 14) for _ in range(5)]  # 2 reviews each: not in 3-core
    rare_asin = _amazon_id(rng, "B00", 10)  # reviewed twice: not in the 3-core
    for user in sparse_users:
        for asin in rng.sample(asins, 2):
            reviews.append(dict(reviews[-1], reviewerID=user, asin=asin))
    for user in users[:2]:
        reviews.append(dict(reviews[-1], reviewerID=user, asin=rare_asin))
    duplicate = dict(reviews[0], overall=1.0, unixReviewTime=reviews[0]["unixReviewTime"] + 10)
    reviews.insert(5, duplicate)  # same user and item, later: must be the row kept
    reviews_path = folder / "reviews_Baby_5.json.gz"
    with gzip.open(reviews_path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(review) + "\n" for review in reviews)

    blank_text_item, no_metadata_item, corrupt_image_item = asins[0], asins[1], asins[2]
    metadata_lines = []
    for index, asin in enumerate(asins):
        if asin == no_metadata_item:
            continue
        record = {"asin": asin, "title": f"Soft Baby Blanket {index}", "price": 12.99,
                  "imUrl": f"http://example.invalid/{asin}.jpg", "brand": "Acme",
                  "categories": [["Baby", "Nursery", "Bedding"], ["Baby"]],
                  "salesRank": {"Baby": 1000 + index}}
        if index % 2:
            record["description"] = ["Warm and soft.", "Machine washable"]
        else:
            record["description"] = "A cozy blanket for the crib!"
        if asin == blank_text_item:
            record = {"asin": asin, "title": "   ", "related": {"also_bought": [asins[3]]}}
        metadata_lines.append(repr(record) + "\n")
    metadata_path = folder / "meta_Baby.json.gz"
    with gzip.open(metadata_path, "wt", encoding="utf-8") as handle:
        handle.writelines(metadata_lines)

    with_images = [asin for index, asin in enumerate(asins) if index % 5 != 4]
    images = _image_folder(folder / "images", with_images, corrupt=(corrupt_image_item,))
    return reviews_path, metadata_path, images, {
        "blank_text": blank_text_item, "no_metadata": no_metadata_item,
        "corrupt_image": corrupt_image_item, "with_images": with_images,
        "duplicate": duplicate, "n_reviews": len(reviews),
        "dropped_by_kcore": sparse_users + [rare_asin]}


def test_amazon_dump_end_to_end(tmp_path):
    reviews, metadata, images, info = _amazon_catalogue(tmp_path)
    text_encoder, image_encoder = FakeTextEncoder(), FakeImageEncoder()
    out = tmp_path / "amazon_baby"
    report = prepare_dataset(interactions=reviews, items=metadata, images=images, out=out,
                             k_core=3, text_encoder=text_encoder, image_encoder=image_encoder,
                             batch_size=4)
    assert report.rows_read == info["n_reviews"]
    assert report.dropped_duplicates == 1
    assert report.dropped_kcore == 12 and report.kcore_rounds == 2

    header, table = _read_inter(out / "amazon_baby.inter")
    assert header == ["userID", "itemID", "rating", "timestamp", "x_label"]
    n_users, n_items = int(table[:, 0].max()) + 1, int(table[:, 1].max()) + 1
    assert (n_users, n_items) == (report.n_users, report.n_items)
    assert set(np.unique(table[:, 4])) <= {0, 1, 2}
    raw_users = [line.split(",")[0] for line in (out / "u_id_mapping.csv").read_text().split()[1:]]
    raw_items = [line.split(",")[0] for line in (out / "i_id_mapping.csv").read_text().split()[1:]]
    assert raw_users == sorted(raw_users) and len(raw_users) == n_users
    assert raw_items == sorted(raw_items) and len(raw_items) == n_items
    assert all(u.startswith("A") for u in raw_users) and all(i.startswith("B00") for i in raw_items)
    assert not set(info["dropped_by_kcore"]) & set(raw_users + raw_items)

    # the duplicate: the later review (rating 1.0) is the one kept
    dup = info["duplicate"]
    row = table[(table[:, 0] == raw_users.index(dup["reviewerID"]))
                & (table[:, 1] == raw_items.index(dup["asin"]))]
    assert row.shape[0] == 1 and row[0, 2] == 1.0 and row[0, 3] == dup["unixReviewTime"]

    text_feat, text_mask = np.load(out / "text_feat.npy"), np.load(out / "text_mask.npy")
    image_feat, image_mask = np.load(out / "image_feat.npy"), np.load(out / "image_mask.npy")
    assert text_feat.shape == (n_items, 8) and text_feat.dtype == np.float32
    assert image_feat.shape == (n_items, 4) and image_feat.dtype == np.float32
    assert text_mask.dtype == bool and image_mask.dtype == bool
    assert np.all(text_feat[~text_mask] == 0) and np.all(image_feat[~image_mask] == 0)
    assert np.allclose(np.linalg.norm(text_feat[text_mask], axis=1), 1, atol=1e-6)

    # empty text and missing metadata: masked, never encoded
    for raw_id in (info["blank_text"], info["no_metadata"]):
        assert not text_mask[raw_items.index(raw_id)]
    assert "" not in text_encoder.seen and all(t.strip() for t in text_encoder.seen)
    assert report.text.n_no_content == int((~text_mask).sum())
    assert report.text.n_with_content == int(text_mask.sum()) == len(text_encoder.seen)

    # images: the corrupt one is masked and counted; items without a file are masked
    expected_image = np.array([raw_id in info["with_images"] and raw_id != info["corrupt_image"]
                               for raw_id in raw_items])
    assert np.array_equal(image_mask, expected_image)
    assert report.image.n_unreadable == 1
    assert report.image.n_no_content == sum(r not in info["with_images"] for r in raw_items)
    assert image_encoder.encoded == report.image.n_encoded == int(image_mask.sum())

    # a second run encodes nothing and gives the same files
    before = {name: (out / name).read_bytes() for name in
              ("amazon_baby.inter", "text_feat.npy", "image_feat.npy", "image_mask.npy")}
    again = prepare_dataset(interactions=reviews, items=metadata, images=images, out=out,
                            k_core=3, text_encoder=FakeTextEncoder(),
                            image_encoder=FakeImageEncoder(), batch_size=4)
    assert again.text.n_encoded == 0 and again.image.n_encoded == 0
    assert again.text.n_from_cache == report.text.n_with_content
    assert again.image.n_from_cache == report.image.n_with_content
    assert before == {name: (out / name).read_bytes() for name in before}


def test_interrupted_run_resumes_from_cache(tmp_path):
    lines = ["user,item"] + [f"u{u},i{i}" for u in range(10) for i in range(40)]
    interactions = _write(tmp_path / "inter.csv", "\n".join(lines) + "\n")
    metadata = _write(tmp_path / "items.csv", "item,title\n" + "".join(
        f"i{i},Title {i}\n" for i in range(40)))
    options = dict(interactions=interactions, items=metadata, out=tmp_path / "d",
                   image_encoder=None, text_fields=("title",), batch_size=2)  # 16 items a chunk
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(text_encoder=FakeTextEncoder(fail_on_call=2), **options)
    resumed = prepare_dataset(text_encoder=FakeTextEncoder(), **options)
    assert (resumed.text.n_from_cache, resumed.text.n_encoded) == (16, 24)
    fresh_dir = tmp_path / "fresh"
    fresh = prepare_dataset(text_encoder=FakeTextEncoder(), **dict(options, out=fresh_dir))
    assert fresh.text.n_encoded == 40
    assert np.array_equal(np.load(fresh_dir / "text_feat.npy"),
                          np.load(tmp_path / "d" / "text_feat.npy"))


# ------------------------------------------------------------------------------------------
# Readers and item texts


def test_reader_formats_and_column_options(tmp_path):
    tsv = _write(tmp_path / "a.tsv", "who\twhat\tstars\twhen\nx\t1\t4.5\t2014-01-31\n")
    table = read_interactions(tsv, user_col="who", item_col="what", rating_col="stars",
                              time_col="when")
    assert table.users.tolist() == ["x"] and table.items.tolist() == ["1"]
    assert table.ratings.tolist() == [4.5] and table.timestamps.tolist() == [1391126400.0]
    jsonl = _write(tmp_path / "b.jsonl", '{"user_id": 5, "item_id": "q"}\n\n{"user_id": 6, '
                                         '"item_id": "r"}\n')
    table = read_interactions(jsonl, user_col=None, item_col=None, rating_col=None,
                              time_col=None)
    assert table.users.tolist() == ["5", "6"] and table.ratings is None
    assert table.timestamps is None


def test_item_text_joining_rule():
    record = {"title": " Blanket ", "brand": "", "categories": [["Baby", "Nursery"], ["Baby"]],
              "description": ["Warm!", "Soft"], "price": 3}
    assert item_text(record, ("title", "brand", "categories", "description", "price")) == \
        "Blanket. Baby, Nursery. Warm!, Soft. 3."
    assert item_text({"title": "  ", "brand": ""}, ("title", "brand")) == ""


def test_item_text_of_one_field_is_its_value_as_given():
    assert item_text({"description": " Warm and soft "}, ("description",)) == " Warm and soft "
    assert item_text({"title": "  "}, ("title",)) == "  "  # blank: no text, never encoded
    assert item_text({"title": "x"}, ("description",)) == ""
    # a value that is not a string is made into text as with several fields
    assert item_text({"categories": [["Baby", " Nursery "], ["Baby"]]}, ("categories",)) == \
        "Baby, Nursery."
    assert item_text({"price": 3}, ("price",)) == "3."


def test_ready_texts_json_list_and_object(tmp_path):
    as_list = _write(tmp_path / "texts.json", json.dumps(["first", "", None, "fourth"]))
    assert read_item_texts(as_list, item_id_col=None, text_fields=("title",)) == \
        {"0": "first", "1": "", "2": "", "3": "fourth"}
    as_object = _write(tmp_path / "texts2.json", json.dumps({"B001": "a", "B002": "b"}))
    assert read_item_texts(as_object, item_id_col=None, text_fields=()) == \
        {"B001": "a", "B002": "b"}


def test_ready_texts_indexed_by_numeric_item_id(tmp_path):
    interactions = _write(tmp_path / "x.inter", "userID\titemID\n" + "".join(
        f"{u}\t{i}\n" for u in range(4) for i in (0, 2, 10)))
    texts = _write(tmp_path / "texts.json", json.dumps([f"text {i}" for i in range(11)]))
    encoder = FakeTextEncoder()
    prepare_dataset(interactions=interactions, items=texts, out=tmp_path / "x", k_core=0,
                    text_encoder=encoder, image_encoder=None)
    assert encoder.seen == ["text 0", "text 2", "text 10"]


# ------------------------------------------------------------------------------------------
# Bad input: one-line InputError naming the file and the fault


def _error(call) -> str:
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_column_errors(tmp_path):
    path = _write(tmp_path / "r.csv", "person,thing\na,b\n")
    message = _error(lambda: _prepare_ids_only(tmp_path, path))
    assert "r.csv" in message and "no user column" in message
    message = _error(lambda: _prepare_ids_only(tmp_path, path, user_col="person",
                                               item_col="item"))
    assert message.startswith("item_col 'item': no such column in ") and "r.csv" in message


def test_malformed_lines_error_with_line_number(tmp_path):
    bad_json = _write(tmp_path / "r.json", '{"user_id": "a", "item_id": "b"}\n'
                                           '{"user_id": "a", "item_id": "c"}\n{"user_id": oops\n')
    assert "r.json: line 3: not a JSON object" in _error(
        lambda: _prepare_ids_only(tmp_path, bad_json))
    wide = _write(tmp_path / "w.csv", "user_id,item_id\na,b\na,b,c\n")
    assert "w.csv: line 3: 3 fields" in _error(lambda: _prepare_ids_only(tmp_path, wide))
    rating = _write(tmp_path / "x.csv", "user_id,item_id,rating\na,b,five\n")
    assert "x.csv: line 2: rating 'five'" in _error(lambda: _prepare_ids_only(tmp_path, rating))
    missing = _write(tmp_path / "m.jsonl", '{"user_id": "a", "item_id": "b", "rating": 3}\n'
                                           '{"user_id": "a", "item_id": "b"}\n')
    assert "m.jsonl: line 2: missing 'rating'" in _error(
        lambda: _prepare_ids_only(tmp_path, missing))
    null_rating = _write(tmp_path / "z.jsonl", '{"user_id": "a", "item_id": "b", "rating": 3}\n'
                                               '{"user_id": "a", "item_id": "c", "rating": null}\n')
    assert "z.jsonl: line 2: rating None is not a finite number" in _error(
        lambda: _prepare_ids_only(tmp_path, null_rating))
    empty_id = _write(tmp_path / "e.csv", "user_id,item_id\na,\n")
    assert "e.csv: line 2: empty item_id" in _error(lambda: _prepare_ids_only(tmp_path, empty_id))
    not_gzip = _write(tmp_path / "n.json.gz", "plain text")
    assert "n.json.gz" in _error(lambda: _prepare_ids_only(tmp_path, not_gzip))


def test_other_bad_inputs(tmp_path):
    good = _random_csv(tmp_path / "ok.csv", seed=0)
    assert "file not found" in _error(lambda: _prepare_ids_only(tmp_path, tmp_path / "no.csv"))
    odd = _write(tmp_path / "r.xlsx", "x")
    assert "unsupported file type" in _error(lambda: _prepare_ids_only(tmp_path, odd))
    no_rating = _write(tmp_path / "nr.csv", "user_id,item_id\na,b\n")
    assert "rating_col None: a minimum rating needs a rating column" in _error(
        lambda: _prepare_ids_only(tmp_path, no_rating, min_rating=3))
    assert "needs a timestamp column" in _error(
        lambda: _prepare_ids_only(tmp_path, no_rating, split="user-temporal"))
    assert "unknown split" in _error(lambda: _prepare_ids_only(tmp_path, good, split="x"))
    assert "no interactions left after the 50-core" in _error(
        lambda: _prepare_ids_only(tmp_path, good, k_core=50))
    metadata = _write(tmp_path / "m.csv", "item_id,title\ni1,a\ni1,b\n")
    assert "m.csv: line 3: item ID 'i1' appears again (first on line 2)" in _error(
        lambda: read_item_texts(metadata, item_id_col=None, text_fields=("title",)))
    assert "text_fields ('body',): none of these fields occurs in" in _error(
        lambda: read_item_texts(_write(tmp_path / "m2.csv", "item_id,title\ni1,a\n"),
                                item_id_col=None, text_fields=("body",)))


def test_unreadable_and_missing_images_are_masked_not_fatal(tmp_path):
    interactions = _write(tmp_path / "r.csv", "user_id,item_id\n" + "".join(
        f"u{u},i{i}\n" for u in range(3) for i in range(4)))
    images = _image_folder(tmp_path / "img", ["i0", "i1", "i2"], corrupt=("i1",))
    (images / "i0.webp").write_bytes(b"")  # i0 has a good .jpg and an empty .webp: .jpg wins
    report = prepare_dataset(interactions=interactions, images=images, out=tmp_path / "o",
                             k_core=0, text_encoder=None, image_encoder=FakeImageEncoder())
    assert np.load(tmp_path / "o" / "image_mask.npy").tolist() == [True, False, True, False]
    assert (report.image.n_unreadable, report.image.n_no_content) == (1, 1)


# ------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fitmm")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_prepare_runs_and_prints_report(tmp_path, capsys):
    interactions = _random_csv(tmp_path / "ratings.csv", seed=5)
    metadata = _write(tmp_path / "items.csv", "item_id,title\n")
    args = _parser().parse_args([
        "data", "prepare", "--interactions", str(interactions), "--items", str(metadata),
        "--out", str(tmp_path / "cli_ds"), "--k-core", "2", "--min-rating", "2",
        "--split", "user-temporal", "--seed", "3", "--user-col", "user_id",
        "--item-col", "item_id", "--rating-col", "rating", "--time-col", "timestamp",
        "--item-id-col", "item_id", "--text-fields", "title,description",
        "--text-encoder", "none", "--image-encoder", "none", "--batch-size", "8"])
    assert args.text_fields == ("title", "description")
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "prepared dataset 'cli_ds'" in printed and "split user-temporal" in printed
    assert (tmp_path / "cli_ds" / "cli_ds.inter").is_file()


def test_cli_defaults():
    args = _parser().parse_args(["data", "prepare", "--interactions", "a.csv", "--items",
                                 "b.csv", "--out", "d"])
    assert (args.k_core, args.min_rating, args.split, args.images) == (5, None, "random", None)
    assert args.text_encoder == "all-MiniLM-L6-v2" and args.image_encoder == "efficientnet-lite0"


def test_amazon_dump_through_the_command_then_trains(tmp_path):
    """The whole path a practitioner takes: ``fitmm data prepare`` with the real encoders, then ``fitmm train``."""
    pytest.importorskip("sentence_transformers", reason="the optional extra fitmm[features] is not installed")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the optional extra fitmm[features] is not installed")
    import subprocess
    import sys

    reviews, metadata, images, _ = _amazon_catalogue(tmp_path)
    out = tmp_path / "amazon_baby"
    prepared = subprocess.run(
        [sys.executable, "-m", "fitmm", "data", "prepare", "--interactions", str(reviews), "--items",
         str(metadata), "--images", str(images), "--out", str(out), "--k-core", "3"],
        capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    assert np.load(out / "text_feat.npy").shape[1] == 384
    assert np.load(out / "image_feat.npy").shape[1] == 1280
    for model in ("lightgcn", "fitmm"):
        trained = subprocess.run(
            [sys.executable, "-m", "fitmm", "train", "--model", model, "--dataset", str(out),
             "--out", str(tmp_path / model), "--epochs", "2", "--quiet"], capture_output=True, text=True)
        assert trained.returncode == 0, trained.stderr
        result = json.loads((tmp_path / model / "result.json").read_text())
        assert result["dataset"] == "amazon_baby" and result["epochs_run"] == 2
