"""A suite: named model variants, each trained on several seeds on one dataset, as one table.

The toolkit's results page (every model of the registry) and FITMM's ablation table are suites,
described by YAML files in ``experiments/``::

    title: Every model on ml100k
    dataset: ml100k
    seeds: [999, 1, 2]
    settings: {}                 # optional, applied to every variant (e.g. an epoch limit)
    variants:
      - {name: LightGCN, model: lightgcn}
      - {name: FITMM (paper), model: fitmm, settings: {preset: paper}}
    appendices: [../benchmarks/results/clothing_scale.md]   # optional Markdown, relative to this file

Each trial is a normal run directory ``OUT/trials/<variant>-seed<seed>/``; finished trials are
skipped when the suite is run again, interrupted ones resume. Every number is the test metric at
the best validation epoch of each seed (PROTOCOL's selection), reported as mean ± sample standard
deviation over the seeds; seconds per epoch are the median training epoch of each seed, averaged,
and peak RSS the largest of the seeds'.
Appendices (Markdown files written by other tools, such as the training-speed benchmark) are copied
to the end of the page as they are when the page is written.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from fitmm.data import load_dataset
from fitmm.errors import InputError
from fitmm.experiments.backends import (
    LocalBackend,
    TrialBackend,
    TrialRequest,
    is_finished,
    output_folder,
    run_pending,
)
from fitmm.experiments.summary import TABLE_METRICS, format_settings, format_statistic, mean_std
from fitmm.files import atomic_write, read_json
from fitmm.training.settings import read_config_file, resolve_settings


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    settings: dict


@dataclass(frozen=True)
class Suite:
    title: str
    dataset: str
    seeds: list[int]
    variants: list[Variant]
    note: str
    appendices: list[Path]


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file (every variant's settings are validated against its model)."""
    content = read_config_file(path)
    for key in ("dataset", "seeds", "variants"):
        if key not in content:
            raise InputError(f"{path}: missing '{key}'")
    shared = content.get("settings") or {}
    variants = []
    for index, entry in enumerate(content["variants"], start=1):
        if not isinstance(entry, dict) or "name" not in entry or "model" not in entry:
            raise InputError(f"{path}: variant {index} needs a name and a model")
        settings = {**shared, **(entry.get("settings") or {})}
        if "seed" in settings:
            raise InputError(f"{path}: variant '{entry['name']}' fixes the seed; seeds come from 'seeds'")
        resolve_settings(entry["model"], overrides=settings)  # unknown model or bad setting → clear error
        variants.append(Variant(str(entry["name"]), entry["model"], settings))
    names = [variant.name for variant in variants]
    if len(set(names)) < len(names):
        raise InputError(f"{path}: two variants share a name")
    seeds = [int(seed) for seed in content["seeds"]]
    appendices = [Path(path).resolve().parent / str(entry) for entry in content.get("appendices") or []]
    return Suite(str(content.get("title", Path(path).stem)), str(content["dataset"]), seeds, variants,
                 str(content.get("note", "")).strip(), appendices)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _appendix(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    return f"_Appendix `{path.name}` has not been written yet (it is expected at `{path}`)._"


def run_suite(suite: Suite, out: str | Path, backend: TrialBackend | None = None, progress: bool = True,
              train: bool = True) -> dict:
    """Train every variant on every seed (skipping finished trials) and summarise; writes OUT/summary.json.

    With ``train=False`` nothing is trained: the table summarises the trials finished so far.
    """
    data = load_dataset(suite.dataset)
    dataset_key = data.source or data.name
    out = output_folder(out)
    requests, selection = {}, {}
    for variant in suite.variants:
        training = resolve_settings(variant.model, overrides=variant.settings).training
        selection[variant.name] = training.valid_metric
        requests[variant.name] = [
            TrialRequest(variant.model, dataset_key, str(out / "trials" / f"{_slug(variant.name)}-seed{seed}"), seed,
                         variant.settings, training.device)
            for seed in suite.seeds
        ]
    # seed-major order: every variant's first seed before any variant's second, so that an
    # interrupted suite leaves a table with every row filled in
    ordered = [rs[index] for index in range(len(suite.seeds)) for rs in requests.values()]
    errors = run_pending(ordered, backend or LocalBackend(), progress=progress, desc=suite.title) if train else {}
    rows = []
    for variant in suite.variants:
        results = [read_json(Path(r.directory, "result.json"))
                   for r in requests[variant.name] if is_finished(r)]
        metric = selection[variant.name]
        row = {"name": variant.name, "model": variant.model, "settings": variant.settings,
               "seeds_finished": len(results), "valid_metric": metric,
               "failed": [errors[r.directory] for r in requests[variant.name] if r.directory in errors]}
        if results:
            row["test"] = {m: mean_std([r["test"][m] for r in results]) for m in TABLE_METRICS}
            row["valid"] = mean_std([r["valid"][metric] for r in results])
            row["best_epoch"] = mean_std([r["best_epoch"] for r in results])
            row["train_seconds_per_epoch"] = statistics.fmean(
                statistics.median(r["train_seconds_per_epoch"]) if r["train_seconds_per_epoch"] else 0.0
                for r in results)
            row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
        rows.append(row)
    summary = {"title": suite.title, "dataset": data.name, "seeds": suite.seeds, "note": suite.note, "rows": rows,
               "appendices": [_appendix(path) for path in suite.appendices]}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def suite_markdown(summary: dict, command: str) -> str:
    """The summary as a Markdown page: one row per variant, how it was produced, and its caveats."""
    lines = [f"# {summary['title']}", "",
             f"Dataset `{summary['dataset']}`, seeds {', '.join(map(str, summary['seeds']))}. Test metrics at the "
             "epoch of best validation score of each seed (the selection metric, recall@20 unless a row says "
             "otherwise; no test information used for any choice), mean ± sample standard deviation over the "
             "seeds; seconds per epoch: median training epoch (evaluation excluded), averaged over the seeds; "
             "peak RSS: the largest of the seeds.", "",
             f"Produced by `{command}`.", ""]
    if summary["note"]:
        lines += [summary["note"], ""]
    header = ["variant", "model", "settings", *(f"test {m}" for m in TABLE_METRICS), "valid (selection)",
              "best epoch", "s/epoch", "peak RSS MB", "seeds"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["rows"]:
        settings = format_settings(row["settings"])
        if "test" not in row:
            cells = ["–"] * (len(TABLE_METRICS) + 4)
        else:
            selection = "" if row["valid_metric"] == "recall@20" else f" ({row['valid_metric']})"
            cells = [format_statistic(row["test"][m]) for m in TABLE_METRICS] + [
                format_statistic(row["valid"]) + selection, f"{row['best_epoch']['mean']:.0f}",
                f"{row['train_seconds_per_epoch']:.2f}", f"{row['peak_rss_mb']:.0f}"]
        finished = f"{row['seeds_finished']}/{len(summary['seeds'])}"
        lines.append(f"| {row['name']} | `{row['model']}` | {settings} | " + " | ".join(cells) + f" | {finished} |")
    failures = [(row["name"], error) for row in summary["rows"] for error in row["failed"]]
    if failures:
        lines += ["", "Failed trials:", ""] + [f"- {name}: {error}" for name, error in failures]
    for appendix in summary.get("appendices", []):
        lines += ["", appendix]
    return "\n".join(lines) + "\n"
