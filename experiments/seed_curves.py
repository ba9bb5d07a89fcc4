"""Per-seed validation curves of finished runs, and whether the epoch limit cut them short.

For each run: the best epoch, the epochs run, the epoch limit, what ended training (early stopping
or the limit) and the validation gain over the last 50 epochs before the best one. The picture
draws every run's validation metric per epoch with its best epoch marked.

    python experiments/seed_curves.py RUN_DIR [RUN_DIR ...] --picture docs/img/NAME.png [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fitmm.files import read_json

WINDOW = 50


def describe(directory: Path) -> dict:
    result = read_json(directory / "result.json")
    metric = result["config"]["valid_metric"]
    curve = result["history"][f"valid_{metric}"]
    best, limit = result["best_epoch"], result["config"]["epochs"]
    before = curve[max(0, best - WINDOW)]
    return {"run": str(directory), "seed": result["seed"], "metric": metric, "curve": curve, "best_epoch": best,
            "epochs_run": result["epochs_run"], "epoch_limit": limit,
            "ended_by": "the epoch limit" if result["epochs_run"] >= limit else "early stopping",
            f"gain_over_last_{WINDOW}_epochs_before_best": curve[best] - before,
            "test_recall@20": result["test"]["recall@20"], "valid_best": curve[best]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--picture", required=True, type=Path)
    parser.add_argument("--title", default="Validation per epoch, one curve per seed")
    args = parser.parse_args()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [describe(directory) for directory in args.runs]
    figure = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(figure)
    panel = figure.subplots()
    for index, row in enumerate(rows):
        colour = f"C{index}"
        panel.plot(row["curve"], color=colour, linewidth=1, label=f"seed {row['seed']} (best epoch {row['best_epoch']}, "
                                                                   f"test recall@20 {row['test_recall@20']:.4f})")
        panel.axvline(row["best_epoch"], color=colour, linestyle="--", linewidth=0.8)
    panel.axvline(rows[0]["epoch_limit"], color="grey", linewidth=1, label=f"epoch limit {rows[0]['epoch_limit']}")
    panel.set(xlabel="epoch", ylabel=f"validation {rows[0]['metric']}", title=args.title)
    panel.legend(fontsize=7)
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.picture, dpi=110)
    for row in rows:
        row.pop("curve")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
