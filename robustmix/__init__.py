"""robustmix: adaptive smoothing of a standard and a robust classifier.

Implements Bai, Anderson, Sojoudi, "Avoiding the Accuracy-Robustness Trade-off of Classifiers via Local
Adaptive Smoothing": ``AdaptiveSmoothing(g, h, alpha=...)`` mixes an accurate model ``g`` with a robust
model ``h`` (eq. 5), optionally with a learned policy choosing α per input (eq. 7).
"""

from .knn import KNNClassifier
from .sensitivity import class_gradient_norms, dual_norm, predicted_class_gradient_norm
from .smoothing import BETA_CLAMP, AdaptiveSmoothing, SmoothingOutput, mix, mixing_weight

__version__ = "0.1.0"

__all__ = [
    "AdaptiveSmoothing",
    "BETA_CLAMP",
    "KNNClassifier",
    "SmoothingOutput",
    "class_gradient_norms",
    "dual_norm",
    "mix",
    "mixing_weight",
    "predicted_class_gradient_norm",
    "__version__",
]
