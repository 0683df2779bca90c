"""robustmix: adaptive smoothing of a standard and a robust classifier.

Implements Bai, Anderson, Sojoudi, "Avoiding the Accuracy-Robustness Trade-off of Classifiers via Local
Adaptive Smoothing": ``AdaptiveSmoothing(g, h, alpha=...)`` mixes an accurate model ``g`` with a robust
model ``h`` (eq. 5), optionally with a learned policy choosing α per input (eq. 7, :class:`PolicyNet`,
trained by :class:`PolicyTrainer` with eq. 9). Attacks, worst-case evaluation, sound certified radii
(Theorems 1 and 2, randomized smoothing) and safe Hugging Face Hub I/O are included.
"""

from .attacks import PAPER_ALPHAS, adaptive_pgd, autoattack, composite_pgd, pgd
from .certify import CertResult, certified_radius, certify, theorem1_radius, theorem2_radius
from .evaluate import (
    AttackSuite,
    EvalReport,
    evaluate_models,
    format_table,
    plot_alpha_sweep,
    robust_accuracy,
)
from .knn import KNNClassifier
from .policy import LogitPolicy, PolicyNet
from .randomized import RandomizedSmoothing
from .registry import register_architecture, register_policy
from .sensitivity import class_gradient_norms, dual_norm, predicted_class_gradient_norm
from .smoothing import BETA_CLAMP, AdaptiveSmoothing, SmoothingOutput, mix, mixing_weight
from .training import PolicyTrainer
from .zoo import from_pretrained

__version__ = "0.1.0"

__all__ = [
    "AdaptiveSmoothing",
    "AttackSuite",
    "BETA_CLAMP",
    "CertResult",
    "EvalReport",
    "KNNClassifier",
    "LogitPolicy",
    "PAPER_ALPHAS",
    "PolicyNet",
    "PolicyTrainer",
    "RandomizedSmoothing",
    "SmoothingOutput",
    "adaptive_pgd",
    "autoattack",
    "certified_radius",
    "certify",
    "class_gradient_norms",
    "composite_pgd",
    "dual_norm",
    "evaluate_models",
    "format_table",
    "from_pretrained",
    "mix",
    "mixing_weight",
    "pgd",
    "plot_alpha_sweep",
    "predicted_class_gradient_norm",
    "register_architecture",
    "register_policy",
    "robust_accuracy",
    "theorem1_radius",
    "theorem2_radius",
    "__version__",
]
