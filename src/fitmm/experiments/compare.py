"""Is run A really better than run B? Paired significance tests on saved per-user test metrics.

Each side is one run directory, a comma-separated list of run directories (several seeds of one
configuration), or a tune directory (the trials of its chosen configuration). A user's metric is
averaged over the side's seeds; the two sides are paired over the test users they have in common,
with a paired t-test and a Wilcoxon signed-rank test (SciPy's ``ttest_rel`` and ``wilcoxon``, with
their defaults). When both sides have at least two seeds in common, a paired t-test across those
seeds on each run's mean test metric is reported too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
from scipy import stats

from fitmm.errors import InputError
from fitmm.evaluation import metric_name
from fitmm.experiments.summary import LEGACY_WARNING, format_settings
from fitmm.files import read_json

COMPARED_METRICS = (metric_name("recall", 20), metric_name("ndcg", 20))
DEFAULT_ALPHA = 0.05


@dataclass
class RunGroup:
    """One side of a comparison: the finished runs of one or more seeds."""

    label: str  # as the user gave it
    description: str
    directories: list[Path]
    results: list[dict]  # each run's result.json

    @property
    def seeds(self) -> list[int]:
        return [result["seed"] for result in self.results]


def _tune_trials(directory: Path) -> tuple[list[Path], str]:
    summary = read_json(directory / "summary.json")
    chosen = summary["chosen"]
    if chosen is None:
        raise InputError(f"{directory}: the tune chose no configuration (no configuration has every seed finished)")
    record = next(record for record in summary["configurations"] if record["id"] == chosen["id"])
    description = (f"tune of {summary['model']}: chosen configuration {chosen['id']} "
                   f"({format_settings(chosen['settings'])}), chosen by {summary['selection']['split']} "
                   f"{summary['selection']['metric']}")
    if summary["selection"]["legacy_test_selection"]:
        description += f" — {LEGACY_WARNING}"
    return [directory / trial["directory"] for trial in record["trials"]], description


def load_group(spec: str) -> RunGroup:
    """The runs named by ``spec``: a run directory, a tune directory, or ``DIR1,DIR2,...``."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise InputError(f"'{spec}': name a run directory, a tune directory or a comma list of run directories")
    description = ""
    directories = [Path(name) for name in names]
    if len(directories) == 1 and not (directories[0] / "result.json").exists() \
            and (directories[0] / "summary.json").exists():
        directories, description = _tune_trials(directories[0])
    results = []
    for directory in directories:
        for needed in ("result.json", "per_user_test.npz"):
            if not (directory / needed).exists():
                raise InputError(f"{directory}: no {needed} (not a finished fitmm run or tune directory)")
        results.append(read_json(directory / "result.json"))
    seeds = [result["seed"] for result in results]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise InputError(f"'{spec}': seed {repeated[0]} occurs in more than one of its runs")
    models = sorted({result["model"] for result in results})
    if not description:
        description = f"{'/'.join(models)}, {len(results)} run{'s' if len(results) > 1 else ''}"
    description += f"; seeds {', '.join(map(str, seeds))}"
    return RunGroup(spec, description, directories, results)


def _dataset_of(group: RunGroup) -> tuple[str, str | None]:
    datasets = {(result["dataset"], result.get("dataset_source")) for result in group.results}
    if len(datasets) > 1:
        raise InputError(f"'{group.label}': its runs are on different datasets")
    return datasets.pop()


def per_user_metrics(group: RunGroup, metrics: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The test users evaluated in every run of ``group`` (sorted) and their metrics averaged over the runs."""
    tables = []
    for directory in group.directories:
        with np.load(directory / "per_user_test.npz") as archive:
            missing = [metric for metric in metrics if metric not in archive]
            if missing:
                raise InputError(f"{directory}/per_user_test.npz: no per-user {', '.join(missing)}")
            tables.append((archive["users"], {metric: archive[metric] for metric in metrics}))
    users = reduce(np.intersect1d, [table_users for table_users, _ in tables])
    averaged = {}
    for metric in metrics:
        aligned = [values[metric][_positions(table_users, users)] for table_users, values in tables]
        averaged[metric] = np.mean(aligned, axis=0)
    return users, averaged


def _positions(users: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indices into ``users`` of the IDs in ``wanted`` (each of which occurs in ``users``)."""
    order = np.argsort(users, kind="stable")
    return order[np.searchsorted(users, wanted, sorter=order)]


def _paired_test(test: Callable, a: np.ndarray, b: np.ndarray) -> dict:
    """SciPy's paired ``test`` of a against b; statistic and p-value are None where undefined
    (identical samples)."""
    if np.array_equal(a, b):
        return {"statistic": None, "p_value": None}
    outcome = test(a, b)
    statistic = float(outcome.statistic)
    return {"statistic": statistic if np.isfinite(statistic) else None, "p_value": float(outcome.pvalue)}


def _verdict(metric: str, mean_a: float, mean_b: float, t_p: float | None, w_p: float | None, alpha: float) -> str:
    if t_p is None:
        return f"no difference on {metric}: A and B have identical per-user values"
    better, worse = ("A", "B") if mean_a >= mean_b else ("B", "A")
    means = f"mean {mean_a:.4f} vs {mean_b:.4f}"
    tests = f"paired t-test p={t_p:.3g}, Wilcoxon p={w_p:.3g}"
    if t_p < alpha and w_p < alpha:
        return f"{better} is better than {worse} on {metric} ({means}; {tests}; significant at {alpha})"
    if t_p >= alpha and w_p >= alpha:
        return f"no significant difference on {metric} ({means}; {tests}; not significant at {alpha})"
    only = "paired t-test" if t_p < alpha else "Wilcoxon test"
    return (f"inconclusive on {metric}: {better} is higher ({means}) but only the {only} is significant "
            f"at {alpha} ({tests})")


def _side(group: RunGroup) -> dict:
    return {"label": group.label, "description": group.description,
            "runs": [str(directory) for directory in group.directories], "seeds": group.seeds}


def compare_groups(a: RunGroup, b: RunGroup, metrics: tuple[str, ...] = COMPARED_METRICS,
                   alpha: float = DEFAULT_ALPHA) -> dict:
    """Paired tests of A against B on each of ``metrics`` (test split); JSON-ready."""
    if _dataset_of(a) != _dataset_of(b):
        raise InputError(f"'{a.label}' and '{b.label}' are runs on different datasets")
    users_a, values_a = per_user_metrics(a, metrics)
    users_b, values_b = per_user_metrics(b, metrics)
    users = np.intersect1d(users_a, users_b)
    if len(users) < 2:
        raise InputError(f"'{a.label}' and '{b.label}' have fewer than 2 evaluated test users in common")
    seeds = sorted(set(a.seeds) & set(b.seeds))
    by_seed_a = {result["seed"]: result for result in a.results}
    by_seed_b = {result["seed"]: result for result in b.results}
    compared = {}
    for metric in metrics:
        x = values_a[metric][np.searchsorted(users_a, users)]
        y = values_b[metric][np.searchsorted(users_b, users)]
        t_test, wilcoxon = _paired_test(stats.ttest_rel, x, y), _paired_test(stats.wilcoxon, x, y)
        seed_test = None
        if len(seeds) >= 2:
            seed_test = _paired_test(stats.ttest_rel, np.array([by_seed_a[s]["test"][metric] for s in seeds]),
                                     np.array([by_seed_b[s]["test"][metric] for s in seeds]))
        compared[metric] = {
            "mean_a": float(x.mean()), "mean_b": float(y.mean()), "difference": float(x.mean() - y.mean()),
            "t_test": t_test, "wilcoxon": wilcoxon, "seed_t_test": seed_test,
            "verdict": _verdict(metric, float(x.mean()), float(y.mean()), t_test["p_value"],
                                wilcoxon["p_value"], alpha),
        }
    return {"a": _side(a), "b": _side(b), "split": "test", "users": int(len(users)), "alpha": alpha,
            "paired_seeds": seeds, "metrics": compared}


def _p(test: dict | None) -> str:
    return "—" if test is None or test["p_value"] is None else f"{test['p_value']:.3g}"


def format_comparison(comparison: dict) -> str:
    """The comparison as text: the two sides, a table of means and p-values, one verdict per metric."""
    seeds = comparison["paired_seeds"]
    lines = [f"A: {comparison['a']['label']} ({comparison['a']['description']})",
             f"B: {comparison['b']['label']} ({comparison['b']['description']})",
             f"paired over the {comparison['users']} test users of both sides "
             "(a user's metric is averaged over the side's seeds)",
             "",
             f"{'metric':<12}{'mean A':>9}{'mean B':>9}{'A-B':>10}{'t-test p':>11}{'Wilcoxon p':>12}"
             f"{'seed t-test p':>15}"]
    for metric, result in comparison["metrics"].items():
        lines.append(f"{metric:<12}{result['mean_a']:>9.4f}{result['mean_b']:>9.4f}{result['difference']:>+10.4f}"
                     f"{_p(result['t_test']):>11}{_p(result['wilcoxon']):>12}{_p(result['seed_t_test']):>15}")
    lines.append("")
    if len(seeds) >= 2:
        lines.append(f"seed t-test: paired over seeds {', '.join(map(str, seeds))} on each run's mean test metric")
    else:
        lines.append("seed t-test: not available (needs at least 2 seeds common to A and B)")
    if len(comparison["metrics"]) > 1:
        lines.append("p-values are per metric, not corrected for testing several metrics")
    lines += [result["verdict"] for result in comparison["metrics"].values()]
    return "\n".join(lines)
