"""End-to-end: real training on the embedded ml100k, determinism, the CLI contract."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import fitmm
from fitmm.training.runs import load_run
from fitmm.training.trainer import peak_rss_mb


@pytest.fixture(scope="module")
def popularity(tmp_path_factory):
    return fitmm.train("pop", "ml100k", tmp_path_factory.mktemp("pop"), progress=False)


@pytest.fixture(scope="module")
def lightgcn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightgcn")
    result = fitmm.train("lightgcn", "ml100k", out, epochs=25, overrides=["learning_rate=0.005"], progress=False)
    return out, result


def test_lightgcn_learns_beyond_popularity(lightgcn_run, popularity):
    _, result = lightgcn_run
    for metric in ("recall@20", "ndcg@20"):
        assert result["test"][metric] > popularity["test"][metric] * 1.1, metric


def test_result_json_follows_the_protocol(lightgcn_run):
    out, result = lightgcn_run
    saved = json.loads((out / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("model", "dataset", "seed", "best_epoch", "epochs_run", "valid", "test",
                "train_seconds_per_epoch", "eval_seconds_per_epoch", "peak_rss_mb", "config"):
        assert key in saved
    assert saved["model"] == "lightgcn" and saved["dataset"] == "ml100k" and saved["seed"] == 999
    assert len(saved["train_seconds_per_epoch"]) == saved["epochs_run"] == 25
    assert {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map", "hit") for k in (5, 10, 20, 50)} == set(saved["test"])
    assert saved["config"]["learning_rate"] == 0.005 and saved["config"]["n_layers"] == 2
    assert (out / "best.pt").exists() and (out / "train.log").exists()


def test_evaluate_rescores_the_checkpoint(lightgcn_run):
    out, result = lightgcn_run
    assert load_run(out).evaluate("test").means() == pytest.approx(result["test"], abs=1e-9)


def test_recommend_csv_reproduces_test_recall(lightgcn_run, tmp_path):
    out, result = lightgcn_run
    path, raw_path = tmp_path / "r.csv", tmp_path / "raw.csv"
    for ids, target in (("internal", path), ("raw", raw_path)):
        completed = subprocess.run(
            [sys.executable, "-m", "fitmm", "recommend", "--run", str(out), "--k", "20", "--split", "test",
             "--ids", ids, "--out", str(target)], capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr
    with path.open() as internal, raw_path.open() as raw:  # ml100k's raw IDs are MovieLens's: internal + 1
        for internal_row, raw_row in zip(csv.DictReader(internal), csv.DictReader(raw), strict=True):
            assert int(raw_row["user_id"]) == int(internal_row["user_id"]) + 1
            assert int(raw_row["item_id"]) == int(internal_row["item_id"]) + 1
    lists = defaultdict(list)
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["user_id", "item_id", "rank", "score"]
        for row in reader:
            lists[int(row["user_id"])].append((int(row["rank"]), int(row["item_id"])))
    run = load_run(out)
    test, train = run.dataset.test, run.dataset.train
    recalls = []
    for user, ranked in lists.items():
        items = {item for _, item in ranked}
        assert sorted(r for r, _ in ranked) == list(range(1, 21))
        assert not items & set(train[user].indices)
        truth = set(test[user].indices)
        recalls.append(len(items & truth) / len(truth))
    assert len(lists) == len(run.dataset.evaluation_users("test"))
    assert np.mean(recalls) == pytest.approx(result["test"]["recall@20"], abs=1e-6)


def test_same_seed_gives_identical_metrics(tmp_path):
    results = [fitmm.train("mf", "ml100k", tmp_path / f"run{i}", epochs=3, progress=False) for i in range(2)]
    texts = [json.dumps({k: json.loads((tmp_path / f"run{i}" / "result.json").read_text())[k]
                         for k in ("valid", "test", "best_epoch")}, sort_keys=True) for i in range(2)]
    assert texts[0] == texts[1]
    other = fitmm.train("mf", "ml100k", tmp_path / "other", epochs=3, seed=1, progress=False)
    assert other["valid"] != results[0]["valid"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS restarts per run on Linux only")
def test_peak_rss_is_the_runs_own_not_the_process_s(tmp_path):
    ballast = np.ones(2**26)  # 512 MiB, written, so resident
    ballast_peak = peak_rss_mb()
    del ballast
    result = fitmm.train("mf", "ml100k", tmp_path / "run", epochs=1, progress=False)
    assert result["peak_rss_mb"] < ballast_peak - 256


def test_cli_train_writes_result(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "fitmm", "train", "--model", "mf", "--dataset", "ml100k", "--out",
         str(tmp_path / "run"), "--epochs", "2", "--set", "reg_weight=0.01", "--quiet"],
        capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 2 and result["config"]["reg_weight"] == 0.01


def test_cli_rejects_unknown_setting(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "fitmm", "train", "--model", "mf", "--out", str(tmp_path / "run"),
         "--set", "regweight=1"], capture_output=True, text=True)
    assert completed.returncode == 2
    assert "unknown setting(s) regweight" in completed.stderr and "Traceback" not in completed.stderr
