"""Evaluation: clean and per-example worst-case robust accuracy over an attack suite (AutoAttack included),
Table-1-style reports and the accuracy-robustness plot."""

from .accuracy import EvalReport, Score, alpha_sweep, clean_accuracy, evaluate_models, robust_accuracy
from .plots import plot_alpha_sweep
from .report import format_table
from .suite import Attack, AttackSuite

__all__ = [
    "Attack",
    "AttackSuite",
    "EvalReport",
    "Score",
    "alpha_sweep",
    "clean_accuracy",
    "evaluate_models",
    "format_table",
    "plot_alpha_sweep",
    "robust_accuracy",
]
