"""What tune, suite and compare share: statistics over seeds, how they are written, the legacy label.

Every table of the experiments reports a metric as mean ± sample standard deviation over seeds;
metric names are those of ``fitmm.evaluation`` (``recall@20`` …).
"""

from __future__ import annotations

import statistics

from fitmm.evaluation import metric_name

TABLE_METRICS = tuple(metric_name(metric, k) for metric in ("recall", "ndcg") for k in (10, 20))
STD_DEFINITION = "sample standard deviation over seeds (ddof=1); null with a single seed"
LEGACY_WARNING = "LEGACY TEST-BASED SELECTION — leaks test information"


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std", "n"}`` of ``values`` (std None for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def metric_statistics(results: list[dict], split: str, metrics: tuple[str, ...]) -> dict | None:
    """Mean ± std over runs of each metric of ``split`` (None when there is no run)."""
    if not results:
        return None
    return {metric: mean_std([result[split][metric] for result in results]) for metric in metrics}


def format_statistic(statistic: dict) -> str:
    """``{"mean": 0.21, "std": 0.004}`` → ``0.2100 ± 0.0040``."""
    std = "—" if statistic["std"] is None else f"{statistic['std']:.4f}"
    return f"{statistic['mean']:.4f} ± {std}"


def format_settings(settings: dict) -> str:
    """``{"n_layers": 2, "reg_weight": 0.001}`` → ``n_layers=2, reg_weight=0.001`` (``defaults`` if empty)."""
    return ", ".join(f"{key}={value}" for key, value in settings.items()) or "defaults"
