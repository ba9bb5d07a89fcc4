"""Runs you can trust, through the real command line: one run per folder, dataset fingerprints, no code
from data files, one-line errors for plausible mistakes, and lists that never hold an excluded item."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import small_rows, write_inter

from fitmm.interfaces.cli import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``fitmm ARGS`` in this process; returns (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("fitmm: error:") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small dataset folder with text features."""
    folder = tmp_path / "shop"
    rows = small_rows(n_users=30, n_items=24)
    write_inter(folder, rows)
    n_items = max(row[1] for row in rows) + 1
    np.save(folder / "text_feat.npy", np.random.default_rng(1).normal(size=(n_items, 6)).astype(np.float32))
    return folder


def train(capsys, folder: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "train", "--model", "mf", "--dataset", str(folder), "--out", str(out), "--quiet", *extra)


# ----------------------------------------------------------------------------- one run per folder
def test_a_folder_holds_one_run_and_overwrite_replaces_it_first(capsys, folder, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, folder, out, "--epochs", "3", "--seed", "7")[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = train(capsys, folder, out, "--epochs", "2", "--set", "reg_weight=0.5")
    assert code == 2 and "--overwrite" in one_line_error(err) and "--resume" in err
    first = json.loads((out / "result.json").read_text())
    assert first["config"]["seed"] == 7  # untouched
    code, _, err = train(capsys, folder, out, "--epochs", "2", "--set", "reg_weight=0.5", "--resume")
    assert code == 2 and "another run" in one_line_error(err) and "reg_weight" in err
    assert train(capsys, folder, out, "--epochs", "2", "--set", "reg_weight=0.5", "--overwrite")[0] == 0
    second = json.loads((out / "result.json").read_text())
    assert second["config"]["reg_weight"] == 0.5 and second["epochs_run"] == 2
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: never touched


def test_new_settings_killed_then_resumed_cannot_mix_two_runs(capsys, folder, tmp_path, monkeypatch):
    """The reported sequence: a finished run (seed 7, 6 epochs), then other settings, killed in
    epoch 0, then --resume: the second run must say --overwrite, and what resumes is the new run alone."""
    from fitmm.training.trainer import Trainer

    out = tmp_path / "run"
    assert train(capsys, folder, out, "--epochs", "6", "--seed", "7")[0] == 0
    assert train(capsys, folder, out, "--epochs", "3")[0] == 2
    assert train(capsys, folder, out, "--epochs", "0")[0] == 2  # no way around it either
    code, _, err = train(capsys, folder, out, "--epochs", "3", "--resume")
    assert code == 2 and "another run" in err and "epochs 6 in it, 3 here" in err

    def killed(self, epoch):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_epoch", killed)
        code, _, err = train(capsys, folder, out, "--epochs", "3", "--overwrite")
    assert code == 130 and "--resume" in err and not (out / "result.json").exists() and not (out / "best.pt").exists()
    assert train(capsys, folder, out, "--epochs", "3", "--resume")[0] == 0
    result = json.loads((out / "result.json").read_text())
    fresh = tmp_path / "fresh"
    assert train(capsys, folder, fresh, "--epochs", "3")[0] == 0
    assert result["test"] == json.loads((fresh / "result.json").read_text())["test"]
    assert result["config"]["epochs"] == 3 and result["config"]["seed"] == 999 and result["epochs_run"] == 3


def test_a_checkpoint_of_another_run_is_refused_by_every_command(capsys, folder, tmp_path):
    for name, seed in (("a", "1"), ("b", "2")):
        assert train(capsys, folder, tmp_path / name, "--epochs", "2", "--seed", seed)[0] == 0
    shutil.copy(tmp_path / "b" / "best.pt", tmp_path / "a" / "best.pt")
    shutil.copy(tmp_path / "b" / "last.pt", tmp_path / "a" / "last.pt")
    for args in (("evaluate", "--run", str(tmp_path / "a")),
                 ("recommend", "--run", str(tmp_path / "a"), "--out", str(tmp_path / "r.csv")),
                 ("export", "--run", str(tmp_path / "a"), "--out", str(tmp_path / "e"))):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "belongs to another run (settings differ: seed 2 in it, 1 here)" in one_line_error(err)
    code, _, err = train(capsys, folder, tmp_path / "a", "--epochs", "2", "--seed", "1", "--resume")
    assert code == 2 and "last.pt: belongs to another run" in one_line_error(err)


# ----------------------------------------------------------------------------- dataset fingerprint
def test_result_records_the_dataset_fingerprint(capsys, folder, tmp_path):
    assert train(capsys, folder, tmp_path / "run", "--epochs", "1")[0] == 0
    fingerprint = json.loads((tmp_path / "run" / "result.json").read_text())["dataset_fingerprint"]
    assert set(fingerprint["files"]) == {"shop.inter", "text_feat.npy"}
    assert fingerprint["files"]["shop.inter"]["bytes"] == (folder / "shop.inter").stat().st_size
    assert len(fingerprint["files"]["text_feat.npy"]["sha256"]) == 64
    assert (fingerprint["users"], fingerprint["items"]) == (30, 24)


def test_a_changed_dataset_is_refused_naming_the_file_unless_allowed(capsys, folder, tmp_path):
    assert train(capsys, folder, tmp_path / "run", "--epochs", "1")[0] == 0
    inter = folder / "shop.inter"
    original = inter.read_text()
    lines = original.splitlines()
    train_row = next(i for i, line in enumerate(lines[1:], 1) if line.endswith("\t0"))
    test_row = next(i for i, line in enumerate(lines[1:], 1) if line.endswith("\t2"))
    lines[train_row], lines[test_row] = lines[train_row][:-1] + "2", lines[test_row][:-1] + "0"  # relabel
    inter.write_text("\n".join(lines) + "\n")
    assert inter.stat().st_size == len(original.encode())  # same size, other content
    code, _, err = cli(capsys, "evaluate", "--run", str(tmp_path / "run"))
    assert code == 2 and "shop.inter changed (same size" in one_line_error(err) and "--allow-data-change" in err
    code, out, err = cli(capsys, "evaluate", "--run", str(tmp_path / "run"), "--allow-data-change")
    assert code == 0 and "the dataset changed since this run was trained" in err and "recall@20" in out
    inter.write_text(original + "30\t3\t0\n30\t4\t2\n")  # one more user
    for args in (("evaluate",), ("recommend", "--out", str(tmp_path / "r.csv")), ("serve", "--port", "8765")):
        code, _, err = cli(capsys, args[0], "--run", str(tmp_path / "run"), *args[1:])
        assert code == 2 and "30 → 31 users" in one_line_error(err)
    code, _, err = cli(capsys, "evaluate", "--run", str(tmp_path / "run"), "--allow-data-change")
    assert code == 2 and "cannot score a different number of users or items" in one_line_error(err)


# ----------------------------------------------------------------------------- no code from files
class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_never_runs(capsys, folder, tmp_path):
    run = tmp_path / "run"
    marker = tmp_path / "PWNED"
    assert train(capsys, folder, run, "--epochs", "2")[0] == 0
    for name in ("best.pt", "last.pt"):
        torch.save({"format": 1, "payload": _Payload(marker)}, run / name)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"dataset": str(folder), "seeds": [999],
                                     "variants": [{"name": "run", "model": "mf", "settings": {"epochs": 2}}]}))
    (tmp_path / "suite" / "trials").mkdir(parents=True)
    shutil.copytree(run, tmp_path / "suite" / "trials" / "run-seed999")
    (tmp_path / "suite" / "trials" / "run-seed999" / "result.json").unlink()  # unfinished: the suite resumes it
    commands = [("train", "--model", "mf", "--dataset", str(folder), "--out", str(run), "--epochs", "2", "--resume",
                 "--quiet"),
                ("evaluate", "--run", str(run)),
                ("recommend", "--run", str(run), "--out", str(tmp_path / "r.csv")),
                ("export", "--run", str(run), "--out", str(tmp_path / "export")),
                ("serve", "--run", str(run), "--port", "8766")]
    for args in commands:
        code, _, err = cli(capsys, *args)
        assert code == 2 and "refused, it holds something other than tensors" in one_line_error(err), args
    code, _, err = cli(capsys, "suite", str(suite), "--out", str(tmp_path / "suite"), "--quiet")
    assert code == 1 and "refused, it holds something other than tensors" in err and "Traceback" not in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- one line, never a traceback
def _corrupt(target: str):
    def damage(run: Path) -> None:
        path = run / target
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    return damage


@pytest.mark.parametrize(("command", "prepare", "message"), [
    (("train", "--set", "learning_rate=abc"), None, "learning_rate='abc': expected a finite number"),
    (("train", "--set", "batch_size=0"), None, "batch_size=0: out of range; allowed ≥ 1"),
    (("train", "--set", "n_layers=-1", "--model", "lightgcn"), None, "n_layers=-1: out of range"),
    (("train", "--set", "device=gpu"), None, "device='gpu': 'gpu' is not allowed; one of cpu, cuda"),
    (("train", "--device", "gpu"), None, "device='gpu'"),
    (("train", "--set", "valid_metric=recall@7"), None, "valid_metric='recall@7'"),
    (("train", "--epochs", "0"), None, "epochs=0: out of range; allowed ≥ 1"),
    (("train", "--seed", "-3"), None, "seed=-3: out of range"),
    (("train", "--set", "nope=1"), None, "unknown setting(s) nope"),
    (("train", "--config", "{missing}"), None, "cannot read the configuration file"),
    (("train", "--out", "{file}"), None, "exists and is not a directory"),
    (("train", "--out", "{file}/below"), None, "cannot create the directory"),
    (("evaluate", "--run", "{run}"), lambda run: (run / "best.pt").unlink(), "best.pt: missing"),
    (("evaluate", "--run", "{run}"), _corrupt("best.pt"), "best.pt: not a readable checkpoint"),
    (("evaluate", "--run", "{run}"), _corrupt("result.json"), "result.json: not valid JSON"),
    (("evaluate", "--run", "{run}"), lambda run: (run / "result.json").unlink(), "no result.json"),
    (("evaluate", "--run", "{run}"), lambda run: (run / "result.json").write_text('{"model": "mf"}'),
     "not a result of this fitmm version (no dataset)"),
    (("evaluate", "--run", "{missing}"), None, "no such run directory"),
    (("recommend", "--run", "{run}", "--out", "{file}/r.csv"), None, "cannot write"),
    (("recommend", "--run", "{run}", "--out", "r.csv", "--k", "0"), None, "k must be between 1 and"),
    (("train", "--resume", "--out", "{run}", "--epochs", "1"), _corrupt("last.pt"), "last.pt: not a readable checkpoint"),
    (("train", "--resume", "--out", "{run}", "--epochs", "1"), lambda run: (run / "run.json").write_text("{}"),
     "its identity is missing or unreadable"),
    (("train", "--resume", "--out", "{run}", "--epochs", "1"), lambda run: (run / "run.json").write_text("[1"),
     "run.json: not valid JSON"),
    (("serve", "--run", "{run}", "--port", "70000"), None, "between 1 and 65535"),
    (("serve", "--run", "{run}", "--port", "http"), None, "between 1 and 65535"),
    (("train", "--model", "nope"), None, "unknown model 'nope'"),
    (("train", "--model", "fitmm", "--set", "content_modalities=[text]", "--set", "knn_k=25"), None,
     "the text kNN size 25 must be between 1 and the 24 items with text content"),
    (("train", "--model", "fitmm", "--set", "content_modalities=[text]", "--set", "user_graph_k=31"), None,
     "the text kNN size 31 must be between 1 and the 30 users with text content"),
    (("train", "--model", "freedom", "--set", "knn_k=25"), None, "the 24 items with text content"),
    (("tune", "--model", "mf", "--epochs", "1", "--out", "{file}"), None, "--out {file}: cannot be a folder"),
    (("report", "{run}", "--out", "{file}"), None, "cannot be a folder"),
    (("report", "{run}"), _corrupt("result.json"), "result.json: not valid JSON"),
    (("compare", "{run}", "{missing}"), None, "no result.json (not a finished fitmm run or tune directory)"),
    (("models", "nope"), None, "unknown model 'nope'"),
])
def test_plausible_mistakes_get_one_line_and_exit_2(capsys, folder, tmp_path, command, prepare, message):
    run = tmp_path / "run"
    assert train(capsys, folder, run, "--epochs", "1")[0] == 0
    if prepare is not None:
        prepare(run)
    (tmp_path / "file").write_text("not a folder")
    values = {"run": str(run), "file": str(tmp_path / "file"), "missing": str(tmp_path / "missing")}
    args = [part.format(**values) for part in command]
    message = message.format(**values)
    if args[0] == "train" and "--out" not in args:
        args += ["--out", str(tmp_path / "other")]
    if args[0] == "train" and "--model" not in args:
        args += ["--model", "mf"]
    if args[0] == "train":
        args += ["--dataset", str(folder), "--quiet"]
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert message in one_line_error(err)


def test_a_diverging_loss_stops_with_one_line_naming_epoch_and_term_and_keeps_last_pt(capsys, folder, tmp_path):
    np.save(folder / "text_feat.npy", np.full((24, 6), 3e38, dtype=np.float32))
    code, _, err = cli(capsys, "train", "--model", "vbpr", "--dataset", str(folder), "--out", str(tmp_path / "run"),
                       "--quiet", "--epochs", "3")
    assert code == 3
    line = one_line_error(err)
    assert "training diverged in epoch 0" in line and "'bpr' term is nan" in line
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == -1


def test_ctrl_c_keeps_a_resumable_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fitmm", "train", "--model", "lightgcn", "--out", str(out), "--epochs", "10",
               "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "epoch 2:" not in ((out / "train.log").read_text() if (out / "train.log").exists()
                                                          else ""):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines() == [err.strip()] and "--resume" in err and "Traceback" not in err
    saved = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert saved >= 2 and not (out / "result.json").exists()
    resumed = subprocess.run(command[:-1] + ["--resume", "--quiet", "--epochs", "10"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in (out / "train.log").read_text()
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_run"] > saved + 1


# ----------------------------------------------------------------------------- recommendations
def test_lists_never_hold_an_excluded_item_and_short_lists_are_announced_once(capsys, folder, tmp_path):
    run = tmp_path / "run"
    assert train(capsys, folder, run, "--epochs", "1")[0] == 0
    code, out, _ = cli(capsys, "recommend", "--run", str(run), "--k", "24", "--ids", "internal", "--out",
                       str(tmp_path / "r.csv"))
    assert code == 0 and out.count("have fewer than 24 items left") == 1
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert all(np.isfinite(float(row["score"])) for row in rows)
    train_items: dict[str, set[str]] = {}
    for line in (folder / "shop.inter").read_text().splitlines()[1:]:
        user, item, label = line.split("\t")
        if label == "0":
            train_items.setdefault(user, set()).add(item)
    per_user: dict[str, list[str]] = {}
    for row in rows:
        per_user.setdefault(row["user_id"], []).append(row["item_id"])
    for user, items in per_user.items():
        assert not set(items) & train_items[user] and len(items) == 24 - len(train_items[user])
