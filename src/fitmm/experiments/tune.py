"""Hyperparameter search whose choice and numbers can be trusted.

Every configuration of a grid (or of a seeded random sample of it) is trained on every seed, each
trial in its own run directory ``OUT/trials/<config-id>-seed<seed>/``. The configuration is chosen
by its mean VALIDATION score over the seeds, on the trials' ``valid_metric`` (the metric early
stopping uses, recall@20 by default), and test metrics are reported for that choice
(``docs/protocol.md`` §5). ``legacy_test_selection`` reproduces MMRec's choice by the test score, and
every output it writes says that this leaks test information.

A tune can be restarted: trials whose ``result.json`` exists are skipped, interrupted ones resume
from their ``last.pt``. ``summary.json`` and ``summary.md`` are computed from the trials' result
files only, so they are the same whichever backend ran the trials and however often it restarted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from fitmm.data import load_dataset
from fitmm.errors import InputError
from fitmm.experiments.backends import LocalBackend, TrialBackend, TrialRequest, output_folder, run_pending
from fitmm.experiments.summary import (
    LEGACY_WARNING,
    STD_DEFINITION,
    TABLE_METRICS,
    format_settings,
    format_statistic,
    metric_statistics,
)
from fitmm.files import atomic_write, read_json
from fitmm.training.settings import check_known, load_settings_yaml, resolve_settings

log = logging.getLogger("fitmm.experiments")



def parse_setting_value(text: str):
    """One setting value, read as ``--set`` reads it (YAML, exponent notation as floats)."""
    try:
        return load_settings_yaml(text.strip())
    except yaml.YAMLError:
        raise InputError(f"'{text}' is not a valid setting value") from None


def parse_grid(assignments: list[str]) -> dict[str, list]:
    """Searched settings from ``--grid`` assignments: ``["n_layers=1,2"]`` → ``{"n_layers": [1, 2]}``."""
    grid: dict[str, list] = {}
    for assignment in assignments:
        key, separator, values = assignment.partition("=")
        key = key.strip()
        if not separator or not key or not values.strip():
            raise InputError(f"--grid '{assignment}': expected KEY=V1,V2,...")
        if key in grid:
            raise InputError(f"--grid '{assignment}': {key} is searched twice")
        texts = values.split(",")
        if any(not text.strip() for text in texts):
            raise InputError(f"--grid '{assignment}': an empty value in the list")
        parsed = [parse_setting_value(text) for text in texts]
        if len({json.dumps(value) for value in parsed}) < len(parsed):
            raise InputError(f"--grid '{assignment}': a value is listed twice")
        grid[key] = parsed
    return grid


def grid_points(grid: dict[str, list], random_count: int | None = None, search_seed: int = 0) -> list[dict]:
    """The Cartesian product of ``grid`` (the first key varies slowest), or, with ``random_count``,
    that many of its points drawn without replacement by a RNG seeded with ``search_seed``, kept
    in grid order."""
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    if random_count is None:
        return points
    if not 1 <= random_count <= len(points):
        raise InputError(f"--random {random_count}: choose 1 to {len(points)} (the grid's size)")
    drawn = sorted(random.Random(search_seed).sample(range(len(points)), random_count))
    return [points[index] for index in drawn]


def configuration_id(model: str, dataset: str, settings: dict) -> str:
    """A short stable hash of the model, the dataset (a built-in name or a folder's absolute path)
    and the sorted settings of a configuration."""
    identity = json.dumps({"model": model, "dataset": dataset, "settings": settings}, sort_keys=True)
    return hashlib.sha1(identity.encode()).hexdigest()[:8]


def trial_directory(config_id: str, seed: int) -> str:
    """A trial's run directory, relative to the tune directory."""
    return f"trials/{config_id}-seed{seed}"


@dataclass(frozen=True)
class Configuration:
    """One point of the search: its stable ID, its searched settings, and every override of its trials."""

    id: str
    searched: dict
    settings: dict  # the searched settings, the fixed ones and the epoch limit


@dataclass
class TuneRun:
    """What one call of :func:`tune` did: the summary it wrote, and how many trials it ran."""

    summary: dict
    skipped: int  # trials that had finished before (their result.json existed)
    ran: int
    backend: str


def tune(
    model: str,
    dataset: str | Path,
    out: str | Path,
    grid: dict[str, list],
    seeds: list[int],
    *,
    random_count: int | None = None,
    search_seed: int = 0,
    settings: dict | None = None,
    epochs: int | None = None,
    backend: TrialBackend | None = None,
    legacy_test_selection: bool = False,
    progress: bool = True,
) -> TuneRun:
    """Train every configuration of the search on every seed and choose one by validation.

    ``grid`` maps setting names to the values searched; ``random_count`` samples that many
    configurations of the grid (seeded by ``search_seed``) instead of taking all; ``settings`` are
    fixed for every trial. Trials run on ``backend`` (default: one after another in this process).
    Writes ``out/summary.json`` and ``out/summary.md``.
    """
    settings = dict(settings or {})
    if epochs is not None:
        settings["epochs"] = epochs
    seeds = list(seeds)
    if not seeds:
        raise InputError("--seeds: give at least one seed")
    if len(set(seeds)) < len(seeds):
        raise InputError(f"--seeds {','.join(map(str, seeds))}: a seed is listed twice")
    if "seed" in grid or "seed" in settings:
        raise InputError("the seed is not searched or fixed with --grid/--set in a tune: use --seeds")
    if "valid_metric" in grid:
        raise InputError("--grid valid_metric: configurations are compared on one metric; fix it with --set")
    check_known(model, grid, "--grid")
    both = sorted(set(grid) & set(settings))
    if both:
        raise InputError(f"{', '.join(both)}: both searched (--grid) and fixed (--set/--epochs)")

    data = load_dataset(dataset)
    dataset_key = data.source or data.name  # what a worker loads, wherever its working directory is
    configurations: list[Configuration] = []
    devices: list[str] = []
    selection_metric = resolve_settings(model, None, settings).training.valid_metric
    for searched in grid_points(grid, random_count, search_seed):
        trial_settings = {**settings, **searched}
        # every value checked before any training or any file is made
        devices.append(resolve_settings(model, None, trial_settings, overrides_source="--grid/--set").training.device)
        configurations.append(Configuration(configuration_id(model, dataset_key, trial_settings), searched,
                                            trial_settings))
    out = output_folder(out)
    requests = [TrialRequest(model, dataset_key, str(out / trial_directory(configuration.id, seed)), seed,
                             configuration.settings, device)
                for configuration, device in zip(configurations, devices) for seed in seeds]

    backend = backend or LocalBackend()
    finished = sum(Path(request.directory, "result.json").exists() for request in requests)
    log.info("tune %s on %s: %d trials, %d finished earlier, %d to run on %s", model, data.name,
             len(requests), finished, len(requests) - finished, backend.description)
    errors = run_pending(requests, backend, progress=progress, desc=f"tune {model} on {data.name}")

    search = {
        "grid": grid,
        "random": None if random_count is None else {"count": random_count, "seed": search_seed},
        "fixed_settings": settings,
        "seeds": seeds,
    }
    summary = summarise(model, data.name, search, configurations, out, errors, legacy_test_selection,
                        selection_metric)
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    atomic_write(out / "summary.md", summary_markdown(summary))
    return TuneRun(summary, skipped=finished, ran=len(requests) - finished, backend=backend.description)


def summarise(model: str, dataset_name: str, search: dict, configurations: list[Configuration],
              out: Path, errors: dict[str, str], legacy_test_selection: bool, selection_metric: str) -> dict:
    """The summary of a tune from the result files of its trials (``errors``: this run's failures
    by trial directory). Only configurations with every seed finished can be chosen, by their mean
    ``selection_metric`` on validation (on test with ``legacy_test_selection``)."""
    metrics = tuple(dict.fromkeys((selection_metric, *TABLE_METRICS)))
    seeds = search["seeds"]
    records, failed = [], []
    for configuration in configurations:
        results, trials = [], []
        for seed in seeds:
            relative = trial_directory(configuration.id, seed)
            result_path = out / relative / "result.json"
            if not result_path.exists():
                failed.append({"id": configuration.id, "seed": seed, "directory": relative,
                               "error": errors.get(str(out / relative), "no result.json")})
                continue
            result = read_json(result_path)
            results.append(result)
            trials.append({"seed": seed, "directory": relative, "best_epoch": result["best_epoch"],
                           "epochs_run": result["epochs_run"],
                           f"valid_{selection_metric}": result["valid"][selection_metric],
                           f"test_{selection_metric}": result["test"][selection_metric]})
        records.append({"id": configuration.id, "settings": configuration.searched,
                        "complete": len(results) == len(seeds), "valid": metric_statistics(results, "valid", metrics),
                        "test": metric_statistics(results, "test", metrics), "trials": trials})
    split = "test" if legacy_test_selection else "valid"
    chosen = max((record for record in records if record["complete"]),
                 key=lambda record: record[split][selection_metric]["mean"], default=None)
    summary = {"warning": LEGACY_WARNING} if legacy_test_selection else {}
    summary.update({
        "model": model,
        "dataset": dataset_name,
        "search": search,
        "selection": {"split": split, "metric": selection_metric, "statistic": "mean over seeds",
                      "legacy_test_selection": legacy_test_selection},
        "std": STD_DEFINITION,
        "configurations": records,
        "chosen": None if chosen is None else {key: chosen[key] for key in ("id", "settings", "valid", "test")},
        "failed_trials": failed,
    })
    return summary


def configurations_table(summary: dict) -> str:
    """Markdown table of every configuration's mean ± std over seeds; the chosen one in bold."""
    metrics = tuple(dict.fromkeys((summary["selection"]["metric"], *TABLE_METRICS)))
    columns = [(split, metric) for split in ("valid", "test") for metric in metrics]
    chosen_id = summary["chosen"]["id"] if summary["chosen"] else None
    lines = ["| config | settings | seeds | " + " | ".join(f"{s} {m}" for s, m in columns) + " |",
             "|---" * (3 + len(columns)) + "|"]
    for record in summary["configurations"]:
        label = f"**`{record['id']}` (chosen)**" if record["id"] == chosen_id else f"`{record['id']}`"
        seeds = f"{len(record['trials'])}/{len(summary['search']['seeds'])}"
        cells = ["—" if record[split] is None else format_statistic(record[split][metric])
                 for split, metric in columns]
        lines.append(f"| {label} | {format_settings(record['settings'])} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(summary: dict) -> str:
    """The human-readable ``summary.md`` of a tune."""
    search, selection = summary["search"], summary["selection"]
    lines = [f"# Tune: {summary['model']} on {summary['dataset']}", ""]
    if selection["legacy_test_selection"]:
        lines += [f"> **{LEGACY_WARNING}.** The configuration was chosen by its mean TEST "
                  f"{selection['metric']} (MMRec's search), so its test metrics are optimistically biased "
                  "and are not a held-out result.", ""]
    searched = ", ".join(f"{key} ∈ {{{', '.join(map(str, values))}}}" for key, values in search["grid"].items())
    sampling = (f"random sample of {search['random']['count']} grid points (search seed {search['random']['seed']})"
                if search["random"] else "full grid")
    lines += [f"Searched: {searched or 'nothing (defaults)'} — {sampling}, "
              f"{len(summary['configurations'])} configurations; fixed: {format_settings(search['fixed_settings'])}; "
              f"seeds {', '.join(map(str, search['seeds']))}.",
              f"Selection: the highest mean {selection['split'].upper()} {selection['metric']} over the seeds. "
              f"± is the {summary['std']}.", ""]
    chosen = summary["chosen"]
    if chosen is None:
        lines += ["## No configuration chosen: none has every seed finished", ""]
    else:
        lines += [f"## Chosen configuration: `{chosen['id']}` ({format_settings(chosen['settings'])})", "",
                  "| split | " + " | ".join(chosen["test"]) + " |", "|---" * (1 + len(chosen["test"])) + "|"]
        for split in ("valid", "test"):
            cells = [format_statistic(statistic) for statistic in chosen[split].values()]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## All configurations (mean ± std over seeds)", "", configurations_table(summary), ""]
    if summary["failed_trials"]:
        lines += ["## Unfinished trials", ""]
        lines += [f"- `{trial['directory']}`: {trial['error']}" for trial in summary["failed_trials"]]
        lines.append("")
    return "\n".join(lines)
