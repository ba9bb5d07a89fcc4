"""Experiments people can trust: multi-seed hyperparameter search selected on validation
(``tune``), paired significance tests between runs (``compare``), and run/tune reports (``report``)."""

from fitmm.experiments.backends import LocalBackend, RayBackend, TrialRequest
from fitmm.experiments.compare import compare_groups, format_comparison, load_group
from fitmm.experiments.report import write_report
from fitmm.experiments.tune import TuneRun, parse_grid, tune

__all__ = [
    "LocalBackend", "RayBackend", "TrialRequest", "TuneRun", "compare_groups", "format_comparison",
    "load_group", "parse_grid", "tune", "write_report",
]
