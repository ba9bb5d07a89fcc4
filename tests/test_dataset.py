"""Loading dataset folders: the embedded default, the shared data, and every bad input of PROTOCOL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import small_rows, write_inter

from fitmm.data import load_dataset
from fitmm.errors import InputError


def test_builtin_ml100k_matches_the_shared_source(shared_data):
    data = load_dataset("ml100k")
    assert (data.n_users, data.n_items) == (943, 1682)
    assert (data.train.nnz, data.valid.nnz, data.test.nnz) == (75000, 12000, 13000)
    source = np.loadtxt(shared_data / "ml100k" / "ml100k.inter", delimiter="\t", skiprows=1, dtype=np.int64)
    np.testing.assert_array_equal(data.users, source[:, 0])
    np.testing.assert_array_equal(data.labels, source[:, 4])
    text = np.load(shared_data / "ml100k" / "text_feat.npy")
    image = np.load(shared_data / "ml100k" / "image_feat_partial.npy")
    mask = np.load(shared_data / "ml100k" / "image_mask.npy")
    assert data.modalities["text"].features.dtype == np.float32
    np.testing.assert_allclose(data.modalities["text"].features, text, atol=2e-3)
    np.testing.assert_allclose(data.modalities["image"].features, image, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(data.modalities["image"].mask, mask)
    assert data.modalities["image"].mask.sum() == 466


def test_builtin_package_file_is_small():
    from fitmm.data.builtin import BUILTIN_FOLDER

    assert (BUILTIN_FOLDER / "ml100k.npz").stat().st_size < 8_000_000


def test_folder_loads_with_matrices_and_features(small_folder):
    data = load_dataset(small_folder)
    assert data.name == "small"
    assert data.train.nnz == 24 and data.valid.nnz == 6 and data.test.nnz == 6
    assert data.modalities["text"].mask.all()
    assert list(data.evaluation_users("test")) == list(range(6))


def test_shared_baby_loads(shared_data):
    data = load_dataset(shared_data / "baby")
    assert (data.n_users, data.n_items) == (19445, 7050)
    assert (data.train.nnz, data.valid.nnz, data.test.nnz) == (119674, 20559, 20559)
    assert data.modalities == {}


def expect_error(folder: Path, *fragments: str) -> None:
    with pytest.raises(InputError) as caught:
        load_dataset(folder)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_column(tmp_path):
    write_inter(tmp_path / "d", [(0, 1)], header="userID\titemID")
    expect_error(tmp_path / "d", "d.inter", "line 1", "missing column", "x_label")


def test_non_integer_id(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 0), ("u7", 2, 0)])
    expect_error(folder, "d.inter", "line 3", "userID 'u7' is not an integer")


def test_negative_id(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 0), (1, -2, 0)])
    expect_error(folder, "line 3", "itemID -2 is negative")


def test_label_outside_range(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 0), (1, 2, 3)])
    expect_error(folder, "line 3", "x_label 3 is not 0, 1 or 2")


def test_wrong_field_count(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 0)])
    with (folder / "d.inter").open("a") as handle:
        handle.write("1\t2\n")
    expect_error(folder, "line 3", "expected 3 tab-separated fields, found 2")


def test_feature_row_count(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, small_rows())
    np.save(folder / "image_feat.npy", np.zeros((3, 4), dtype=np.float32))
    expect_error(folder, "image_feat.npy", "has 3 rows", "items")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(tmp_path, bad):
    folder = tmp_path / "d"
    rows = small_rows()
    write_inter(folder, rows)
    features = np.ones((max(r[1] for r in rows) + 1, 4), dtype=np.float32)
    features[2, 1] = bad
    np.save(folder / "text_feat.npy", features)
    expect_error(folder, "text_feat.npy", "row 2", "NaN or infinite")


def test_mask_of_wrong_length(tmp_path):
    folder = tmp_path / "d"
    rows = small_rows()
    write_inter(folder, rows)
    n_items = max(r[1] for r in rows) + 1
    np.save(folder / "image_feat.npy", np.ones((n_items, 4), dtype=np.float32))
    np.save(folder / "image_mask.npy", np.ones(n_items + 1, dtype=bool))
    expect_error(folder, "image_mask.npy", "one entry per item")


def test_empty_training_split(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 1), (0, 2, 2)])
    expect_error(folder, "d.inter", "training split is empty")


def test_empty_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "d.inter").write_text("")
    expect_error(folder, "d.inter", "empty")


def test_missing_folder(tmp_path):
    expect_error(tmp_path / "nowhere", "no such dataset folder")


def test_evaluation_only_ids_warn_and_count(tmp_path, caplog):
    folder = tmp_path / "d"
    rows = small_rows() + [(6, 1, 2), (0, 9, 1)]
    write_inter(folder, rows)
    with caplog.at_level("WARNING", logger="fitmm"):
        data = load_dataset(folder)
    text = caplog.text
    assert "1 user ID(s) occur only in validation/test" in text
    assert "1 item ID(s) occur only in validation/test" in text
    assert 6 not in data.evaluation_users("test")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    folder = tmp_path / "d"
    write_inter(folder, [(0, 1, 0), (1, 2, 7)])
    completed = subprocess.run(
        [sys.executable, "-m", "fitmm", "info", str(folder)], capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [
        f"fitmm: error: {folder / 'd.inter'}, line 3: x_label 7 is not 0, 1 or 2"
    ]
