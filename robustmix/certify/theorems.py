"""Theorems 1 and 2 as pure functions of their constants (sections 3.1 and 4.1), and the geometric check that
the K-NN oracle of eq. 2 is constant on a ball (Theorem 1's assumption).

The proofs (appendix B) were checked: Theorem 1 repeats h_i where h_j is meant; Lemma 4 is loose by a
factor 2; two typos in the proof of Theorem 2 do not change the result. ``theorem2_C`` uses the code's
``R_k = ||∇g_k|| / (||∇h_k|| + eps_c)``: ``m^h, M^h`` become ``m^h + eps_c, M^h + eps_c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils.checks import check_choice
from .._utils.norms import NORMS
from ..knn import KNNClassifier

__all__ = [
    "Theorem1Constants",
    "Theorem2Constants",
    "theorem1_radius",
    "theorem2_C",
    "theorem2_radius",
    "knn_constant_on_ball",
]

_F64 = torch.float64


# -- the theorems as pure functions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Theorem1Constants:
    """Constants of Theorem 1 (section 3.1) for one class k, over ``B_p(x, ε)``.

    ``M = sup ||∇g_k||_{p*}``; ``L`` satisfies eq. 3; ``g_x = g_k(x)``; ``grad_norm_x = ||∇g_k(x)||_{p*}``.
    """

    M: float
    L: float
    g_x: float
    grad_norm_x: float


def theorem1_radius(ci: Theorem1Constants, cj: Theorem1Constants, alpha: float, margin: float, h_bound: float = 1.0) -> float:
    """Eq. 4: ``(sqrt(b² + 4(L_i + L_j)|margin|) - b) / (2(L_i + L_j))``.

    ``b = Σ_k α L_k |g_k(x)| / (1 + α||∇g_k(x)||) + 2 α h_bound L_k + M_k / (1 + α M_k)`` (section 3.1; the
    paper has ``h_bound = 1`` since the K-NN oracle lies in [-1, 1]; Lemma 4's term scales with ``|h_k(x)|``).
    If ε is at most this value (with constants taken over ``B_p(x, ε)``) and h is constant there, the sign of
    ``g^α_i - g^α_j`` is kept on the ball (appendix B.1). Returns ``inf`` when all constants vanish.
    """
    _check_alpha_finite(alpha)
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")
    b = sum(
        alpha * c.L * abs(c.g_x) / (1 + alpha * c.grad_norm_x) + 2 * alpha * h_bound * c.L + c.M / (1 + alpha * c.M)
        for c in (ci, cj)
    )
    L = ci.L + cj.L
    m = abs(margin)
    if L == 0:
        return math.inf if b == 0 and m > 0 else (0.0 if b == 0 else m / b)
    return (math.sqrt(b * b + 4 * L * m) - b) / (2 * L)


@dataclass(frozen=True)
class Theorem2Constants:
    """Constants of Theorem 2 (section 4.1) for one class k, over ``B_p(x, ε)``, and ``R_x = R_k(x)``.

    ``K = sup |f_k|``, ``m = inf ||∇f_k||_{p*}``, ``M = sup ||∇f_k||_{p*}``, ``L`` a Lipschitz constant of
    ``∇f_k`` relative to x, for ``f = g`` and ``f = h``.
    """

    K_g: float
    m_g: float
    M_g: float
    L_g: float
    K_h: float
    m_h: float
    M_h: float
    L_h: float
    R_x: float


def theorem2_C(c: Theorem2Constants, alpha: float, eps_c: float = 0.0) -> tuple[float, float]:
    """``(C^(1)_k, C^(2)_k)`` of section 4.1 with ``m^h, M^h`` shifted by ``eps_c`` (the code's R)."""
    mh, Mh = c.m_h + eps_c, c.M_h + eps_c
    if mh <= 0:
        return math.inf, math.inf
    den = (1 + alpha * c.m_g / Mh) * (1 + alpha * c.R_x)
    dR = (c.L_h * c.R_x + c.L_g) / mh  # eq. 13: |R(x) - R(x+δ)| <= dR ||δ||
    C1 = (c.M_g * (1 + alpha * c.M_g / mh) + alpha * c.K_g * dR) / den
    C2 = (c.M_g * Mh / mh * (1 + alpha * c.R_x) + c.K_h * dR) / den
    return C1, C2


def theorem2_radius(ci: Theorem2Constants, cj: Theorem2Constants, alpha: float, margin: float, eps_c: float = 0.0) -> float:
    """Theorem 2: ``|margin| / Σ_{k∈{i,j}} (C^(1)_k + α C^(2)_k)``.

    If ε is at most this value (constants over ``B_p(x, ε)``), the sign of ``g^α_i - g^α_j`` (eq. 5 with
    ``R = ||∇g|| / (||∇h|| + eps_c)``) is kept on the ball (appendix B.2).
    """
    _check_alpha_finite(alpha)
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")
    total = 0.0
    for c in (ci, cj):
        C1, C2 = theorem2_C(c, alpha, eps_c)
        total += C1 + alpha * C2
    if total == 0:
        return math.inf if margin != 0 else 0.0
    return abs(margin) / total


def _check_alpha_finite(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0 for this theorem, got {alpha}")


# -- K-NN oracle -----------------------------------------------------------------------------------------
def _norm_factor(d: int, attack: float, metric: float) -> float:
    """``κ`` with ``||δ||_metric ≤ κ ||δ||_attack`` in R^d: ``d^{max(0, 1/metric - 1/attack)}``."""
    inv_metric = 0.0 if math.isinf(metric) else 1.0 / metric
    inv_attack = 0.0 if math.isinf(attack) else 1.0 / attack
    return float(d) ** max(0.0, inv_metric - inv_attack)


def knn_constant_on_ball(knn: KNNClassifier, x: Tensor, eps: float, norm: str) -> bool:
    """True if the uniform K-NN vote (eq. 2's h) provably takes the same value on all of ``B_p(x, eps)``.

    Proof: every training distance moves by at most ``ρ = κ ε`` (``κ`` converts the attack norm to the
    K-NN metric, triangle inequality). A point ``a`` surely stays among the K nearest if fewer than K other
    points can come within its reach (``#{b ≠ a: d_b - ρ ≤ d_a + ρ} < K``); it surely stays out if at least
    K points are surely closer (``#{b: d_b + ρ < d_a - ρ} ≥ K``). All other points are uncertain. The chosen
    set always contains the sure-in points plus some uncertain ones, so its label multiset — and the vote —
    cannot change if all uncertain points share one label (in particular if there are none, which is the
    gap condition ``d_(K+1) - d_(K) > 2ρ``). Ties count as uncertain, so tie-breaking never matters.
    """
    if knn.weighting != "uniform":
        raise ValueError("only the uniform K-NN vote (eq. 2) is piecewise constant; distance weighting varies with x")
    check_choice("norm", norm, NORMS)
    tx = knn.train_x.to(_F64)
    q = x.reshape(1, -1).to(_F64)
    d = torch.cdist(q, tx, p=knn.p, compute_mode="donot_use_mm_for_euclid_dist")[0]
    rho = _norm_factor(tx.shape[1], math.inf if norm == "linf" else 2.0, knn.p) * eps
    rho = rho * (1 + 1e-9) + 1e-12  # rounding of the distances
    k = knn.k
    sd = d.sort().values
    lower, upper = d - rho, d + rho
    # number of points (itself included) whose lower bound is <= my upper bound
    reach = torch.searchsorted(sd - rho, upper, right=True)
    sure_in = reach <= k  # counts itself, so < K others
    surely_closer = torch.searchsorted(sd + rho, lower, right=False)
    sure_out = surely_closer >= k
    uncertain = ~sure_in & ~sure_out
    labels = knn.train_y[uncertain]
    if int(sure_in.sum()) > k:
        return False
    return labels.numel() == 0 or bool((labels == labels[0]).all())


def weight_on_h(alpha: float, R: Tensor) -> Tensor:
    """``w = αR / (1 + αR)``, the weight eq. 5 puts on h, increasing in R (``R = inf`` gives 1)."""
    return torch.where(torch.isinf(R), torch.ones_like(R), alpha * R / (1 + alpha * R))
