"""Full-ranking evaluation. Knows nothing of models: it ranks whatever scores a function returns."""

from fitmm.evaluation.evaluator import EvaluationResult, evaluate
from fitmm.evaluation.metrics import CUTOFFS, METRICS, ranking_metrics, top_k

__all__ = ["CUTOFFS", "METRICS", "EvaluationResult", "evaluate", "ranking_metrics", "top_k"]
