"""``fitmm suite``: variants × seeds into one validated table; restarts skip finished trials."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fitmm.errors import InputError
from fitmm.experiments.suite import load_suite

SUITE = """
title: Small suite
dataset: ml100k
seeds: [999, 1]
settings: {epochs: 2}
variants:
  - {name: Popularity, model: pop, settings: {epochs: 1}}
  - {name: BPR-MF strong reg, model: mf, settings: {reg_weight: 1e-2}}
appendices: [extra/speed.md]
"""


def run(args):
    return subprocess.run([sys.executable, "-m", "fitmm", *args], capture_output=True, text=True)


def test_suite_table_and_restart(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    page = tmp_path / "page.md"
    empty = run(["suite", str(path), "--out", str(tmp_path / "out"), "--page", str(page), "--table-only", "--quiet"])
    assert empty.returncode == 1 and "unfinished: Popularity, BPR-MF strong reg" in empty.stdout
    assert not (tmp_path / "out" / "trials").exists() and "| Popularity | `pop` | epochs=1 | – |" in page.read_text()
    assert "Appendix `speed.md` has not been written yet" in page.read_text()
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "speed.md").write_text("## Speed\n\n| model | s |\n|---|---|\n| mf | 1.0 |\n")
    first = run(["suite", str(path), "--out", str(tmp_path / "out"), "--page", str(page), "--quiet"])
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    mf_row = summary["rows"][1]
    assert mf_row["seeds_finished"] == 2 and mf_row["settings"] == {"epochs": 2, "reg_weight": 0.01}
    per_seed = [json.loads((tmp_path / "out" / "trials" / f"bpr-mf-strong-reg-seed{s}" / "result.json").read_text())
                for s in (999, 1)]
    assert mf_row["test"]["recall@20"]["mean"] == pytest.approx(sum(r["test"]["recall@20"] for r in per_seed) / 2)
    text = page.read_text()
    assert "| BPR-MF strong reg | `mf` | epochs=2, reg_weight=0.01 |" in text and "2/2" in text
    assert text.rstrip().endswith("## Speed\n\n| model | s |\n|---|---|\n| mf | 1.0 |")  # the appendix, as written
    mtimes = sorted(p.stat().st_mtime_ns for p in (tmp_path / "out" / "trials").glob("*/result.json"))
    again = run(["suite", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "out" / "trials").glob("*/result.json")) == mtimes


@pytest.mark.parametrize(("content", "message"), [
    ("dataset: ml100k\nseeds: [1]\n", "missing 'variants'"),
    ("dataset: ml100k\nseeds: [1]\nvariants: [{name: a, model: mf, settings: {nope: 1}}]\n", "unknown setting(s) nope"),
    ("dataset: ml100k\nseeds: [1]\nvariants: [{name: a, model: mf}, {name: a, model: pop}]\n", "share a name"),
    ("dataset: ml100k\nseeds: [1]\nvariants: [{name: a, model: mf, settings: {seed: 3}}]\n", "fixes the seed"),
])
def test_bad_suite_files(tmp_path, content, message):
    path = tmp_path / "suite.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_suite(path)


@pytest.mark.parametrize("name", ["results_ml100k.yaml", "fitmm_ablation_ml100k.yaml"])
def test_shipped_suites_are_valid(name):
    from pathlib import Path

    suite = load_suite(Path(__file__).resolve().parents[1] / "experiments" / name)
    assert suite.seeds == [999, 1, 2] and len(suite.variants) >= 12


class RecordingBackend:
    """Records the order in which trials are submitted; every trial 'fails' without training."""

    description = "recorder"

    def __init__(self):
        self.order = []

    def run(self, requests):
        for request in requests:
            self.order.append((request.directory.rsplit("/", 1)[-1]))
            yield request, "not run"


def test_trials_run_seed_major_so_an_interrupted_suite_fills_every_row(tmp_path):
    from fitmm.experiments.suite import run_suite

    path = tmp_path / "suite.yaml"
    path.write_text("dataset: ml100k\nseeds: [7, 8]\nvariants: [{name: A, model: mf}, {name: B, model: pop}]\n")
    backend = RecordingBackend()
    summary = run_suite(load_suite(path), tmp_path / "out", backend=backend, progress=False)
    assert backend.order == ["a-seed7", "b-seed7", "a-seed8", "b-seed8"]
    assert [row["failed"] for row in summary["rows"]] == [["not run", "not run"]] * 2
