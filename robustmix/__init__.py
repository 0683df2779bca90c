"""robustmix: adaptive smoothing of a standard and a robust classifier.

Implements Bai, Anderson, Sojoudi, "Avoiding the Accuracy-Robustness Trade-off of Classifiers via Local
Adaptive Smoothing": ``AdaptiveSmoothing(g, h, alpha=...)`` mixes an accurate model ``g`` with a robust
model ``h`` (eq. 5), optionally with a learned policy choosing α per input (eq. 7, :class:`PolicyNet`,
trained by :class:`PolicyTrainer` with eq. 9). Attacks, worst-case evaluation, sound certified radii
(Theorems 1 and 2, randomized smoothing) and safe Hugging Face Hub I/O are included.
"""

from . import _deprecated
from ._utils.version import __version__
from .attacks import PAPER_ALPHAS, adaptive_pgd, autoattack, composite_pgd, pgd, surrogate_pgd
from .calibration import Calibration, calibrate, calibrate_mixture
from .certify import (
    CertResult,
    RandomizedSmoothing,
    certified_radii,
    certified_radius,
    certify,
    theorem1_radius,
    theorem2_radius,
)
from .errors import (
    ConfigError,
    InputError,
    MissingDependencyError,
    PretrainedUnavailableError,
    RobustmixError,
)
from .evaluate import (
    AttackSuite,
    EvalReport,
    alpha_sweep,
    evaluate_models,
    format_table,
    plot_alpha_sweep,
    robust_accuracy,
)
from .knn import KNNClassifier
from .nn import architectures  # noqa: F401  (registers the built-in architectures)
from .nn.maps import HardMax, LayerNormMap, NonlinearMap, TemperatureMap
from .nn.policies import LogitPolicy, MixingNetPolicy, PolicyNet
from .registry import register_architecture, register_policy
from .sensitivity import class_gradient_norms, dual_norm, predicted_class_gradient_norm
from .smoothing import BETA_CLAMP, AdaptiveSmoothing, SmoothingOutput, mix, mixing_weight
from .training import PolicyTrainer

#: Load a saved mixture: a local directory, a Hub repo id or a zoo name (:meth:`AdaptiveSmoothing.from_pretrained`).
from_pretrained = AdaptiveSmoothing.from_pretrained

_deprecated.install()

__all__ = [
    "AdaptiveSmoothing",
    "AttackSuite",
    "BETA_CLAMP",
    "CertResult",
    "Calibration",
    "ConfigError",
    "EvalReport",
    "HardMax",
    "InputError",
    "KNNClassifier",
    "LayerNormMap",
    "LogitPolicy",
    "MissingDependencyError",
    "MixingNetPolicy",
    "NonlinearMap",
    "PAPER_ALPHAS",
    "PolicyNet",
    "PolicyTrainer",
    "PretrainedUnavailableError",
    "RandomizedSmoothing",
    "RobustmixError",
    "SmoothingOutput",
    "TemperatureMap",
    "adaptive_pgd",
    "alpha_sweep",
    "autoattack",
    "calibrate",
    "calibrate_mixture",
    "certified_radii",
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
    "surrogate_pgd",
    "robust_accuracy",
    "theorem1_radius",
    "theorem2_radius",
    "__version__",
]
