"""The offline demo as a library: scikit-learn's digits, the demo's g and h, and the recipe that trains a
policy and evaluates everything (``robustmix demo`` prints it)."""

from .data import Split, load_digits_split
from .models import (
    DEMO_EPS,
    accuracy,
    get_demo_models,
    get_demo_models_on_every_rank,
    train_adversarial,
    train_standard,
)
from .recipe import (
    DEMO_MIX,
    EVAL_ALPHAS,
    POLICY_CONFIG,
    SWEEP_ALPHAS,
    TRAIN_CONFIG,
    DemoResult,
    build_demo_mixture,
    demo_steps,
    demo_trainer,
    run_demo,
    verdict,
)

__all__ = [
    "DEMO_EPS",
    "DEMO_MIX",
    "EVAL_ALPHAS",
    "POLICY_CONFIG",
    "SWEEP_ALPHAS",
    "TRAIN_CONFIG",
    "DemoResult",
    "Split",
    "accuracy",
    "build_demo_mixture",
    "demo_steps",
    "demo_trainer",
    "get_demo_models",
    "get_demo_models_on_every_rank",
    "load_digits_split",
    "run_demo",
    "train_adversarial",
    "train_standard",
    "verdict",
]
