"""Full-ranking evaluation. Knows nothing of models: it ranks whatever scores a function returns."""

from fitmm.evaluation.evaluator import EvaluationResult, evaluate, excluded_splits, rank_excluding
from fitmm.evaluation.metrics import CUTOFFS, METRIC_NAMES, METRICS, metric_name, ranking_metrics, top_k

__all__ = ["CUTOFFS", "METRICS", "METRIC_NAMES", "EvaluationResult", "evaluate", "excluded_splits", "metric_name",
           "rank_excluding", "ranking_metrics", "top_k"]
