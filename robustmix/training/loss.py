"""The composite loss of eq. 9 (section 5.3) and its supervised label ``sgn(log α* − β0)``."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

__all__ = ["composite_loss", "alpha_star_sign"]


def alpha_star_sign(alpha_t: float, beta0: float) -> float:
    """``sgn(log α* − β0)`` for an attack at α_t: +1 (α* = inf, prefer h) if α_t <= exp(β0), else −1."""
    return 1.0 if alpha_t <= math.exp(beta0) else -1.0


def composite_loss(
    logits: Tensor, y: Tensor, beta: Tensor, sign: Tensor, c1: float = 0.5, c2: float = 0.8, c3: float = 3.2
) -> Tensor:
    """Eq. 9 per example: ``(CE + c1) · (c2 + (c3 − sign · β)_+)``; ``sign`` is ``sgn(log α* − β0)``.

    ``logits`` may be logits or log-probabilities (cross-entropy is the same for both).
    """
    ce = F.cross_entropy(logits, y, reduction="none")
    return (ce + c1) * (c2 + F.relu(c3 - sign * beta))
