"""Experiments people can trust: multi-seed tunes selected on validation (process pool and Ray give
the same summary), training and tunes that survive SIGKILL, paired significance tests, reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fitmm.errors import InputError, MissingExtraError
from fitmm.experiments import RayBackend, compare_groups, load_group, tune, write_report
from fitmm.experiments.backends import in_own_process
from fitmm.experiments.tune import LEGACY_WARNING, configuration_id, grid_points, parse_grid

GRID = ("--grid", "n_layers=1,2", "--grid", "reg_weight=1e-4,1e-3")
SEEDS = (999, 1, 2)
TUNE = ("tune", "--model", "lightgcn", "--dataset", "ml100k", "--epochs", "2", "--quiet")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MATPLOTLIB_MISSING = "matplotlib is not installed (the optional extra fitmm[report])"


def fitmm_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "fitmm", *arguments]


def run_fitmm(*arguments: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(fitmm_command(*arguments), capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    return completed


def wait_until(condition, process: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    """Poll ``condition`` every 20 ms while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent ID) of process ``pid`` from Linux /proc, None if it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def child_processes(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        state = process_state(int(entry.name)) if entry.name.isdigit() else None
        if state is not None and state[1] == pid:
            children.append(int(entry.name))
    return children


def is_running(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def compared_fields(run_directory: Path) -> dict:
    result = json.loads((run_directory / "result.json").read_text())
    return {key: result[key] for key in ("valid", "test", "best_epoch")}


@dataclass
class TuneOutput:
    directory: Path
    stdout: str
    summary_json: str  # as written by this tune, before any later command rewrites it
    summary_md: str

    @property
    def summary(self) -> dict:
        return json.loads(self.summary_json)


@pytest.fixture(scope="module")
def pool_tune(tmp_path_factory) -> TuneOutput:
    """The 2×2 grid × 3 seeds tune of LightGCN, 2 at a time in local processes."""
    out = tmp_path_factory.mktemp("tune") / "pool"
    completed = run_fitmm(*TUNE, *GRID, "--seeds", ",".join(map(str, SEEDS)), "--workers", "2", "--out", str(out))
    return TuneOutput(out, completed.stdout, (out / "summary.json").read_text(), (out / "summary.md").read_text())


def trial_results(tune: TuneOutput) -> dict[str, list[dict]]:
    """Configuration ID → the result.json of each of its trials, read from the trial directories."""
    by_configuration: dict[str, list[dict]] = {}
    for result_path in sorted((tune.directory / "trials").glob("*/result.json")):
        config_id, seed = re.fullmatch(r"([0-9a-f]{8})-seed(\d+)", result_path.parent.name).groups()
        result = json.loads(result_path.read_text())
        assert result["seed"] == int(seed)
        by_configuration.setdefault(config_id, []).append(result)
    return by_configuration


# ----------------------------------------------------------------------------- tune
def test_tune_chooses_by_mean_validation_and_reports_mean_and_std(pool_tune):
    summary = pool_tune.summary
    assert "12 trials run" in pool_tune.stdout
    results = trial_results(pool_tune)
    assert len(results) == 4 and all(len(trials) == 3 for trials in results.values())
    assert [record["id"] for record in summary["configurations"]] == list(dict.fromkeys(
        configuration_id("lightgcn", "ml100k", {"epochs": 2, **settings})
        for settings in grid_points({"n_layers": [1, 2], "reg_weight": [1e-4, 1e-3]})))
    for record in summary["configurations"]:
        assert record["complete"] and [trial["seed"] for trial in record["trials"]] == list(SEEDS)
        for split in ("valid", "test"):
            for metric in ("recall@20", "ndcg@20", "recall@10", "ndcg@10"):
                values = [result[split][metric] for result in results[record["id"]]]
                assert record[split][metric]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
                assert record[split][metric]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    best_valid = max(results, key=lambda config_id: np.mean([r["valid"]["recall@20"] for r in results[config_id]]))
    chosen = summary["chosen"]
    assert summary["selection"] == {"split": "valid", "metric": "recall@20", "statistic": "mean over seeds",
                                    "legacy_test_selection": False}
    assert chosen["id"] == best_valid
    assert chosen["test"]["recall@20"]["mean"] == pytest.approx(
        np.mean([r["test"]["recall@20"] for r in results[best_valid]]), abs=1e-12)
    assert f"**`{best_valid}` (chosen)**" in pool_tune.summary_md
    assert re.search(r"\| test \| \d\.\d{4} ± \d\.\d{4} \|", pool_tune.summary_md)
    assert "LEGACY" not in pool_tune.summary_md + pool_tune.summary_json


def test_legacy_test_selection_is_labelled_in_both_outputs(pool_tune):
    trial_times = {path: path.stat().st_mtime_ns for path in pool_tune.directory.glob("trials/*/result.json")}
    completed = run_fitmm(*TUNE, *GRID, "--seeds", ",".join(map(str, SEEDS)), "--out", str(pool_tune.directory),
                          "--legacy-test-selection")
    assert "0 trials run" in completed.stdout and "12 finished earlier (skipped)" in completed.stdout
    assert LEGACY_WARNING in completed.stdout
    assert {path: path.stat().st_mtime_ns for path in trial_times} == trial_times
    summary_text = (pool_tune.directory / "summary.json").read_text()
    summary = json.loads(summary_text)
    assert LEGACY_WARNING in summary_text and summary["warning"] == LEGACY_WARNING
    assert LEGACY_WARNING in (pool_tune.directory / "summary.md").read_text()
    assert summary["selection"]["split"] == "test" and summary["selection"]["legacy_test_selection"]
    best_test = max(summary["configurations"], key=lambda record: record["test"]["recall@20"]["mean"])
    assert summary["chosen"]["id"] == best_test["id"]


def test_ray_backend_gives_the_same_summary_as_the_process_pool(pool_tune, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (the optional extra fitmm[ray])")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        completed = run_fitmm(*TUNE, *GRID, "--seeds", ",".join(map(str, SEEDS)),
                              "--ray-address", context.address_info["gcs_address"], "--out", str(out))
    finally:
        ray.shutdown()
    assert "12 trials run on Ray tasks" in completed.stdout
    assert (out / "summary.json").read_text() == pool_tune.summary_json
    assert (out / "summary.md").read_text() == pool_tune.summary_md


@pytest.mark.skipif(not Path("/proc/self").is_symlink(), reason="reads the process ID from /proc/self")
def test_every_trial_process_is_new_and_passes_errors_back():
    pids = [in_own_process(os.readlink, "/proc/self") for _ in range(2)]
    assert len({*pids, str(os.getpid())}) == 3
    with pytest.raises(ValueError, match="invalid literal"):
        in_own_process(int, "not a number")


def test_ray_backend_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'fitmm[ray]'")):
        RayBackend("auto")


def test_grid_values_random_search_and_configuration_ids():
    grid = parse_grid(["n_layers=1,2,3", "reg_weight=1e-4,0.001", "exclude_valid=true,false"])
    assert grid == {"n_layers": [1, 2, 3], "reg_weight": [0.0001, 0.001], "exclude_valid": [True, False]}
    points = grid_points(grid)
    assert len(points) == 12 and points[0] == {"n_layers": 1, "reg_weight": 0.0001, "exclude_valid": True}
    sample = grid_points(grid, random_count=5, search_seed=3)
    assert sample == grid_points(grid, random_count=5, search_seed=3) != grid_points(grid, 5, search_seed=4)
    assert len(sample) == 5 and all(point in points for point in sample)
    assert sample == [point for point in points if point in sample]  # kept in grid order
    with pytest.raises(InputError, match="--random 13"):
        grid_points(grid, random_count=13)
    with pytest.raises(InputError, match="listed twice"):
        parse_grid(["n_layers=1,1"])
    assert configuration_id("lightgcn", "ml100k", {"a": 1, "b": 2}) == configuration_id("lightgcn", "ml100k",
                                                                                        {"b": 2, "a": 1})
    assert configuration_id("lightgcn", "ml100k", {"a": 1}) != configuration_id("mf", "ml100k", {"a": 1})


def test_tune_rejects_bad_searches_before_training(tmp_path):
    cases = (({"n_layer": [1, 2]}, {}, "--grid: unknown setting(s) n_layer for model 'lightgcn'"),
             ({"n_layers": [1, 2]}, {"n_layers": 3}, "both searched"),
             ({"seed": [1, 2]}, {}, "use --seeds"),
             ({"embedding_size": [4, "eight"]}, {}, "--grid/--set: setting embedding_size='eight'"),
             ({"valid_metric": ["recall@20", "ndcg@20"]}, {}, "compared on one metric"))
    for grid, settings, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            tune("lightgcn", "ml100k", tmp_path / "t", grid, [999], settings=settings)
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------- resuming
def test_training_killed_mid_run_resumes_to_identical_result(tmp_path):
    train = ("train", "--model", "lightgcn", "--dataset", "ml100k", "--epochs", "8",
             "--set", "checkpoint_every=1", "--quiet", "--out")
    reference = subprocess.Popen(fitmm_command(*train, str(tmp_path / "uninterrupted")))
    killed = tmp_path / "killed"
    process = subprocess.Popen(fitmm_command(*train, str(killed)))
    log = killed / "train.log"
    wait_until(lambda: (killed / "last.pt").exists() and log.exists() and "epoch 2:" in log.read_text(),
               process, "3 epochs were done")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists()
    run_fitmm(*train, str(killed), "--resume")
    assert reference.wait() == 0
    resumed = re.findall(r"resumed from .* after epoch (\d+)", log.read_text())
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 7
    assert compared_fields(killed) == compared_fields(tmp_path / "uninterrupted")
    assert json.loads((killed / "result.json").read_text())["epochs_run"] == 8


def test_killed_tune_restarts_without_rerunning_finished_trials(pool_tune, tmp_path):
    out = tmp_path / "restart"
    command = (*TUNE, "--grid", "n_layers=1,2", "--grid", "reg_weight=1e-4", "--seeds", "999,1", "--out", str(out))
    process = subprocess.Popen(fitmm_command(*command, "--workers", "2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = out / "trials"

    def finished() -> set[Path]:
        return {path.parent for path in trials.glob("*/result.json")}

    def interrupted() -> set[Path]:
        return {path.parent for path in trials.glob("*/last.pt")} - finished()

    wait_until(lambda: finished() and interrupted(), process, "a trial finished while another was mid-run")
    workers = child_processes(process.pid)
    assert workers, "the tune started no worker processes"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in workers):  # the workers notice that the tune is gone and exit
        assert time.monotonic() < deadline, "the pool's workers outlived the killed tune"
        time.sleep(0.05)
    done_before, mid_run = finished(), interrupted()
    finished_times = {path: (path / "result.json").stat().st_mtime_ns for path in done_before}

    completed = run_fitmm(*command)  # this time in one process: the same results as the pool's
    ran = int(re.search(r"(\d+) trials run on this process", completed.stdout).group(1))
    assert ran == 4 - len(done_before) and f"{len(done_before)} finished earlier (skipped)" in completed.stdout
    assert {path: (path / "result.json").stat().st_mtime_ns for path in done_before} == finished_times
    assert len(finished()) == 4
    for directory in mid_run:
        assert "resumed from" in (directory / "train.log").read_text()
    for directory in finished():  # the same trials (same configuration IDs) as in the uninterrupted tune
        assert compared_fields(directory) == compared_fields(pool_tune.directory / "trials" / directory.name)


# ----------------------------------------------------------------------------- compare
def per_user(run_directory: Path) -> dict[str, np.ndarray]:
    with np.load(run_directory / "per_user_test.npz") as archive:
        order = np.argsort(archive["users"])
        return {name: archive[name][order] for name in ("users", "recall@20", "ndcg@20")}


def test_compare_p_values_are_scipys(pool_tune):
    trials = pool_tune.directory / "trials"
    summary = json.loads((pool_tune.directory / "summary.json").read_text())  # as another test may have rewritten it
    chosen = summary["chosen"]["id"]
    chosen_layers = summary["chosen"]["settings"]["n_layers"]
    other = next(record["id"] for record in summary["configurations"]
                 if record["settings"]["n_layers"] != chosen_layers)
    run_a, run_b = trials / f"{chosen}-seed999", trials / f"{other}-seed999"
    comparison = json.loads(run_fitmm("compare", str(run_a), str(run_b), "--json").stdout)
    a, b = per_user(run_a), per_user(run_b)
    assert np.array_equal(a["users"], b["users"]) and comparison["users"] == len(a["users"])
    for metric in ("recall@20", "ndcg@20"):
        reported = comparison["metrics"][metric]
        assert reported["t_test"]["p_value"] == stats.ttest_rel(a[metric], b[metric]).pvalue
        assert reported["wilcoxon"]["p_value"] == stats.wilcoxon(a[metric], b[metric]).pvalue
        assert reported["seed_t_test"] is None

    # the tune directory (its chosen configuration's 3 seeds) against another configuration's seeds
    others = ",".join(str(trials / f"{other}-seed{seed}") for seed in SEEDS)
    comparison = compare_groups(load_group(str(pool_tune.directory)), load_group(others))
    assert comparison["a"]["seeds"] == list(SEEDS) and comparison["paired_seeds"] == sorted(SEEDS)
    for metric in ("recall@20", "ndcg@20"):
        x, y = (np.mean([per_user(trials / f"{config_id}-seed{seed}")[metric] for seed in SEEDS], axis=0)
                for config_id in (chosen, other))
        reported = comparison["metrics"][metric]
        assert reported["t_test"]["p_value"] == stats.ttest_rel(x, y).pvalue
        assert reported["wilcoxon"]["p_value"] == stats.wilcoxon(x, y).pvalue
        seed_means = [[json.loads((trials / f"{config_id}-seed{seed}" / "result.json").read_text())["test"][metric]
                       for seed in sorted(SEEDS)] for config_id in (chosen, other)]
        assert reported["seed_t_test"]["p_value"] == stats.ttest_rel(*seed_means).pvalue

    text = run_fitmm("compare", str(run_a), str(run_b)).stdout
    verdicts = [line for line in text.splitlines() if "on recall@20" in line or "on ndcg@20" in line]
    assert len(verdicts) == 2
    assert all(re.match(r"(A is better than B|B is better than A|no significant difference|inconclusive)", line)
               for line in verdicts)


# ----------------------------------------------------------------------------- report
def assert_pictures(report_directory: Path, names: list[str]) -> None:
    markdown = (report_directory / "report.md").read_text()
    for name in names:
        data = (report_directory / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 8000, name
        assert f"]({name})" in markdown, name
    assert set(re.findall(r"\]\(([^)]+\.png)\)", markdown)) == set(names)


def synthetic_fitmm_result(n_epochs: int = 6, n_bands: int = 3) -> dict:
    rng = np.random.default_rng(0)
    metrics = {f"{name}@{k}": float(rng.uniform(0.05, 0.4)) for name in ("recall", "ndcg", "precision", "map", "hit")
               for k in (5, 10, 20, 50)}

    def shares() -> list[float]:
        values = rng.uniform(0.1, 1.0, n_bands)
        return (values / values.sum()).tolist()

    diagnostics = [{
        "band_energy_share": {side: {modality: shares() for modality in ("id", "image", "text")}
                              for side in ("user", "item")},
        "gate_mean": {side: rng.uniform(0, 1, n_bands).tolist() for side in ("user", "item")},
        "band_weights": rng.normal(size=n_bands).tolist(),
        **({} if epoch == 0 else {  # the band allocation measures its SNR from the first epoch's end
            "band_snr": rng.uniform(0, 500, n_bands).tolist(),
            "band_snr_by_modality": {modality: rng.uniform(0, 200, n_bands).tolist()
                                     for modality in ("id", "image", "text")},
            "band_gain": rng.uniform(0, 1, n_bands).tolist()}),
    } for epoch in range(n_epochs)]
    return {
        "model": "fitmm", "dataset": "ml100k", "seed": 999, "best_epoch": 4, "epochs_run": n_epochs,
        "valid": metrics, "test": metrics,
        "train_seconds_per_epoch": [1.0] * n_epochs, "eval_seconds_per_epoch": [0.2] * n_epochs,
        "peak_rss_mb": 500.0,
        "history": {"loss": [{"loss": 1.0 / (e + 1), "bpr": 0.9 / (e + 1), "ib": 0.1} for e in range(n_epochs)],
                    "valid_recall@20": [0.1 + 0.01 * e for e in range(n_epochs)], "diagnostics": diagnostics},
        "diagnostics": diagnostics[4],
        "config": {"seed": 999, "n_bands": n_bands},
    }


def test_report_draws_fitmm_diagnostics(tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_MISSING)
    run = tmp_path / "fitmm_run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps(synthetic_fitmm_result()))
    run_fitmm("report", str(run))
    assert_pictures(run / "report", ["loss.png", "validation.png", "diagnostics_band_energy_share.png",
                                     "diagnostics_gate_mean.png", "diagnostics_band_weights.png",
                                     "diagnostics_band_snr.png", "diagnostics_band_snr_by_modality.png",
                                     "diagnostics_band_gain.png"])
    assert "Band SNR per epoch" in (run / "report" / "report.md").read_text()
    markdown = (run / "report" / "report.md").read_text()
    assert "| test | recall |" in markdown and "@50" in markdown


def test_report_on_a_real_run_and_a_tune(pool_tune, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_MISSING)
    run = pool_tune.directory / "trials" / f"{pool_tune.summary['chosen']['id']}-seed999"
    assert write_report(run, tmp_path / "run_report") == tmp_path / "run_report" / "report.md"
    assert_pictures(tmp_path / "run_report", ["loss.png", "validation.png"])  # LightGCN records no diagnostics
    write_report(pool_tune.directory, tmp_path / "tune_report")
    assert_pictures(tmp_path / "tune_report", ["configurations.png", "validation_curves.png"])
    assert "± " in (tmp_path / "tune_report" / "report.md").read_text()


def test_in_process_random_search_records_a_failing_configuration(small_folder, tmp_path):
    grid = {"knn_k": [2, 3, 100]}  # 100 neighbours among 8 items: its trials fail when the model is built
    run = tune("freedom", small_folder, tmp_path / "tune", grid, [1, 2], random_count=2, search_seed=0, epochs=1,
               progress=False)
    summary = run.summary
    assert run.ran == 4 and run.skipped == 0 and run.backend == "this process"
    assert [record["settings"] for record in summary["configurations"]] == grid_points(grid, 2, search_seed=0) \
        == [{"knn_k": 3}, {"knn_k": 100}]
    assert summary["search"]["random"] == {"count": 2, "seed": 0}
    working, failing = summary["configurations"]
    assert working["complete"] and not failing["complete"] and failing["valid"] is None
    failed = [(trial["id"], trial["seed"]) for trial in summary["failed_trials"]]
    assert failed == [(failing["id"], 1), (failing["id"], 2)]
    assert all("kNN size 100 must be between 1 and the 8 items" in trial["error"]
               for trial in summary["failed_trials"])
    assert summary["chosen"]["id"] == working["id"]
    assert "## Unfinished trials" in (tmp_path / "tune" / "summary.md").read_text()
