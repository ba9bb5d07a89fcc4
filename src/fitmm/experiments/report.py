"""A run's or a tune's pictures (PNG, drawn with matplotlib's Agg backend) and a Markdown page.

For a run directory: the training loss and the validation metric per epoch, and one picture per
diagnostic that the model recorded per epoch (``result.json["history"]["diagnostics"]``), e.g.
FITMM's band energy shares per side and modality, mean gate per band and band weights; every
numeric value or list of numbers found under a diagnostic's key is drawn, anything else is
skipped. ``report.md`` holds the metrics at the best epoch (every metric at every K), the
pictures and the settings.

For a tune directory: the summary (every configuration's mean ± std over seeds), a bar chart of
the configurations and the validation curves of every trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fitmm.errors import InputError, MissingExtraError
from fitmm.experiments.backends import output_folder
from fitmm.experiments.tune import summary_markdown
from fitmm.files import read_json

DIAGNOSTIC_TITLES = {  # key → (picture title, name of one entry of a list value)
    "band_energy_share": ("Band energy share per epoch", "band"),
    "gate_mean": ("Mean gate per band per epoch", "band"),
    "band_weights": ("Band weights per epoch", "band"),
    "open_bands": ("Open bands per epoch (1 open, 0 shut by the band allocation)", "band"),
    "band_snr": ("Band SNR per epoch (band allocation, measured over the epoch)", "band"),
    "band_snr_by_modality": ("Band SNR per modality per epoch", "band"),
    "band_gain": ("Optimal band gain per epoch (band allocation)", "band"),
}
PANELS_PER_ROW = 3


def _figure(n_panels: int):
    """A matplotlib figure on the Agg canvas with ``n_panels`` axes (PANELS_PER_ROW to a row)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("fitmm report draws with matplotlib: pip install 'fitmm[report]'") from None
    columns = min(PANELS_PER_ROW, n_panels)
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(4.4 * columns, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _epoch_axis(panel, best_epoch: int | None) -> None:
    """Whole-number epochs on the x axis, and a dashed line at the best epoch if there is one."""
    from matplotlib.ticker import MaxNLocator

    if best_epoch is not None:
        panel.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
    panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    panel.set_xlabel("epoch")


def _numeric_leaves(value, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[float]]]:
    """Every number or list of numbers inside ``value`` (nested dicts), with its key path."""
    def is_number(item) -> bool:
        return isinstance(item, (int, float)) and not isinstance(item, bool)

    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numeric_leaves(item, path + (str(key),))
    elif is_number(value):
        yield path, [float(value)]
    elif isinstance(value, list) and value and all(is_number(item) for item in value):
        yield path, [float(item) for item in value]


def _diagnostic_series(per_epoch: list[dict], key: str) -> dict[tuple[str, ...], np.ndarray]:
    """Key path → (epochs × entries) array of one diagnostic, NaN where an epoch lacks it."""
    found: dict[tuple[str, ...], dict[int, list[float]]] = {}
    for epoch, diagnostics in enumerate(per_epoch):
        for path, values in _numeric_leaves((diagnostics or {}).get(key)):
            found.setdefault(path, {})[epoch] = values
    series = {}
    for path, by_epoch in found.items():
        table = np.full((len(per_epoch), max(len(values) for values in by_epoch.values())), np.nan)
        for epoch, values in by_epoch.items():
            table[epoch, :len(values)] = values
        series[path] = table
    return series


def _draw_diagnostic(key: str, series: dict[tuple[str, ...], np.ndarray], best_epoch: int, path: Path) -> str:
    title, entry_name = DIAGNOSTIC_TITLES.get(key, (f"{key} per epoch", "entry"))
    figure, axes = _figure(len(series))
    for panel, (leaf, table) in zip(axes, series.items(), strict=True):
        epochs = np.arange(table.shape[0])
        for column in range(table.shape[1]):
            label = f"{entry_name} {column}" if table.shape[1] > 1 else None
            panel.plot(epochs, table[:, column], marker=".", markersize=3, label=label)
        _epoch_axis(panel, best_epoch)
        panel.set_title(" / ".join(leaf) or key, fontsize=10)
        panel.legend(fontsize=7)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return title


def _metrics_table(result: dict) -> str:
    """Valid and test metrics at the best epoch: one row per split and metric, one column per K."""
    names = list(dict.fromkeys(key.split("@")[0] for key in result["test"]))
    cutoffs = sorted({int(key.split("@")[1]) for key in result["test"]})
    lines = ["| split | metric | " + " | ".join(f"@{k}" for k in cutoffs) + " |", "|---" * (2 + len(cutoffs)) + "|"]
    for split in ("valid", "test"):
        for name in names:
            cells = [f"{result[split][f'{name}@{k}']:.4f}" if f"{name}@{k}" in result[split] else "—"
                     for k in cutoffs]
            lines.append(f"| {split} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_pictures(result: dict, out: Path) -> list[tuple[str, str]]:
    """Draw a run's pictures into ``out``; returns (title, file name) of each."""
    history = result.get("history", {})
    best_epoch = result["best_epoch"]
    pictures = []
    losses = history.get("loss") or []
    if losses:
        parts = list(dict.fromkeys(part for epoch in losses for part in epoch))
        figure, axes = _figure(len(parts))
        for panel, part in zip(axes, parts, strict=True):
            panel.plot([epoch.get(part, np.nan) for epoch in losses], marker=".", markersize=3)
            _epoch_axis(panel, best_epoch)
            panel.set_title(part, fontsize=10)
        figure.suptitle("Training loss per epoch")
        figure.savefig(out / "loss.png", dpi=110)
        pictures.append(("Training loss per epoch", "loss.png"))
    validation_key = next((key for key in history if key.startswith("valid_") and history[key]), None)
    if validation_key is not None:
        metric = validation_key.removeprefix("valid_")
        figure, (panel,) = _figure(1)
        panel.plot(history[validation_key], marker=".", markersize=3)
        _epoch_axis(panel, best_epoch)
        panel.set(title=f"Validation {metric} per epoch", ylabel=metric)
        panel.legend(fontsize=7)
        figure.savefig(out / "validation.png", dpi=110)
        pictures.append((f"Validation {metric} per epoch", "validation.png"))
    per_epoch = history.get("diagnostics") or []
    for key in dict.fromkeys(key for diagnostics in per_epoch for key in (diagnostics or {})):
        series = _diagnostic_series(per_epoch, key)
        if series:
            name = f"diagnostics_{key}.png"
            pictures.append((_draw_diagnostic(key, series, best_epoch, out / name), name))
    return pictures


def _run_markdown(result: dict, pictures: list[tuple[str, str]]) -> str:
    train_seconds = result.get("train_seconds_per_epoch") or []
    eval_seconds = result.get("eval_seconds_per_epoch") or []
    timing = (f" Training {np.mean(train_seconds):.2f} s/epoch, evaluation {np.mean(eval_seconds):.2f} s/epoch."
              if train_seconds and eval_seconds else "")
    lines = [f"# Run report: {result['model']} on {result['dataset']}", "",
             f"Seed {result['seed']}; best epoch {result['best_epoch']} (by validation) of {result['epochs_run']} "
             f"epochs run.{timing}" + (f" Peak RSS {result['peak_rss_mb']:.0f} MB." if "peak_rss_mb" in result else ""),
             "", "## Metrics at the best epoch", "", _metrics_table(result), ""]
    if pictures:
        lines += ["## Training", ""]
        lines += [f"![{title}]({name})\n" for title, name in pictures]
    settings = result.get("config") or {}
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in settings.items()]
        lines.append("")
    return "\n".join(lines)


def _tune_pictures(directory: Path, summary: dict, out: Path) -> list[tuple[str, str]]:
    metric = summary["selection"]["metric"]
    records = [record for record in summary["configurations"] if record["valid"] is not None]
    if not records:
        return []
    pictures = []
    figure, (panel,) = _figure(1)
    figure.set_size_inches(max(5.0, 0.9 * len(records) + 2), 3.6)
    positions = np.arange(len(records))
    for offset, split in ((-0.1, "valid"), (0.1, "test")):
        statistics = [record[split][metric] for record in records]
        panel.errorbar(positions + offset, [s["mean"] for s in statistics], yerr=[s["std"] or 0.0 for s in statistics],
                       fmt="o", capsize=3, label=split)
    chosen_id = summary["chosen"]["id"] if summary["chosen"] else None
    panel.set_xticks(positions, [record["id"] + (" *" if record["id"] == chosen_id else "") for record in records],
                     rotation=45, ha="right", fontsize=8)
    panel.set(ylabel=f"{metric} (mean ± std over seeds)",
              title=f"Configurations ({'*' if chosen_id else 'none'} chosen)")
    panel.legend(fontsize=8)
    figure.savefig(out / "configurations.png", dpi=110)
    pictures.append((f"Mean {metric} per configuration", "configurations.png"))

    figure, (panel,) = _figure(1)
    colours = {record["id"]: f"C{index % 10}" for index, record in enumerate(records)}
    for record in records:
        for number, trial in enumerate(record["trials"]):
            result = read_json(directory / trial["directory"] / "result.json")
            curve = result.get("history", {}).get(f"valid_{metric}") or []
            panel.plot(curve, color=colours[record["id"]], linewidth=1, label=record["id"] if number == 0 else None)
    _epoch_axis(panel, None)
    panel.set(title=f"Validation {metric} of every trial", ylabel=metric)
    panel.legend(fontsize=7)
    figure.savefig(out / "validation_curves.png", dpi=110)
    pictures.append((f"Validation {metric} per epoch of every trial", "validation_curves.png"))
    return pictures


def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write the pictures and ``report.md`` of a run or tune directory into ``out``
    (default ``directory/report``); returns the path of ``report.md``."""
    directory = Path(directory)
    out = Path(out) if out is not None else directory / "report"
    if (directory / "result.json").exists():
        result = read_json(directory / "result.json")
        out = output_folder(out)
        markdown = _run_markdown(result, _run_pictures(result, out))
    elif (directory / "summary.json").exists():
        summary = read_json(directory / "summary.json")
        out = output_folder(out)
        pictures = _tune_pictures(directory, summary, out)
        markdown = "\n".join([summary_markdown(summary), "## Pictures", ""]
                              + [f"![{title}]({name})\n" for title, name in pictures])
    else:
        raise InputError(f"{directory}: neither a run directory (result.json) nor a tune directory (summary.json)")
    (out / "report.md").write_text(markdown)
    return out / "report.md"
