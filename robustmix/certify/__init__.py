"""Certificates of the mixture: sound radii from Theorems 1 and 2 (interval and linear bound propagation over
the ball, and linear bounds on the mixture's margin), Lipschitz radii for fixed convex mixes, and
randomized-smoothing certificates (l_2, with a stated confidence)."""

from .bounds import (
    SUPPORTED_LAYERS,
    BallBounds,
    BoundMethod,
    CompiledNetwork,
    activation_ranges,
    compile_network,
)
from .radius import (
    CertifiableMixin,
    CertifyReport,
    CertMethod,
    CertResult,
    certified_radii,
    certified_radius,
    certify,
)
from .randomized import (
    LIPSCHITZ_CONSTANT,
    RandomizedSmoothing,
    RSCertificate,
    certify_mixture,
    clopper_pearson_lower,
    clopper_pearson_upper,
    rs_radii,
)
from .theorems import (
    Theorem1Constants,
    Theorem2Constants,
    knn_constant_on_ball,
    theorem1_radius,
    theorem2_C,
    theorem2_radius,
)

__all__ = [
    "LIPSCHITZ_CONSTANT",
    "SUPPORTED_LAYERS",
    "BallBounds",
    "BoundMethod",
    "CertMethod",
    "CertResult",
    "CertifiableMixin",
    "CertifyReport",
    "CompiledNetwork",
    "RSCertificate",
    "RandomizedSmoothing",
    "Theorem1Constants",
    "Theorem2Constants",
    "activation_ranges",
    "certified_radii",
    "certified_radius",
    "certify",
    "certify_mixture",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "compile_network",
    "knn_constant_on_ball",
    "rs_radii",
    "theorem1_radius",
    "theorem2_C",
    "theorem2_radius",
]
