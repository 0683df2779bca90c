"""Linear bound propagation (CROWN-style) through a chain of dense affine maps and elementwise activations.

Every activation ``σ`` on a unit whose pre-activation is known to lie in ``[l, u]`` gets two lines,
``s_lo z + b_lo ≤ σ(z) ≤ s_hi z + b_hi`` on ``[l, u]``:

* ReLU: exact on stable units; on unstable ones the upper chord and the lower line of slope 0 or 1
  (whichever leaves the smaller area), as in CROWN.
* A C¹ activation: the chord ``χ`` through ``(l, σ(l))`` and ``(u, σ(u))``, shifted by the interpolation
  error. With ``e = σ - χ`` (so ``e(l) = e(u) = 0``), ``e(z) = -(z - l)(u - z) σ''(ξ) / 2`` for some ``ξ`` in
  ``[l, u]`` (Peano's form, valid when σ' is absolutely continuous: ELU with α = 1 included), and
  ``(z - l)(u - z) / 2 ≤ (u - l)² / 8``, hence ``χ - (u-l)²/8 · max(σ''⁺) ≤ σ ≤ χ + (u-l)²/8 · max((-σ'')⁺)``.
  On a convex stretch the chord is the exact upper line, on a concave one the exact lower line.
* Units where σ' jumps (ELU with α ≠ 1 across 0) and tiny intervals: the constant lines ``min σ``, ``max σ``.

Two uses (section 4.1's constants need intervals of every pre-activation, the certificate needs the
outputs): *forward* linear bounds ``A_lo x' + c_lo ≤ z_l(x') ≤ A_hi x' + c_hi`` (matrices ``[n_l, d]``,
cheap when the input is small) tighten the interval of each pre-activation; a *backward* pass from rows
``C`` of the output (``C z``: a class, a margin, a weighted combination) gives ``A x' + c`` bounds of ``C z``
whose minimum over the ball is exact for the line. Both are sound for the real-valued network; rounding is
absorbed by the caller's final widening.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.norms import Norm, dual_norm

__all__ = ["Relaxation", "relax", "LinearForm", "apply", "ball_min", "ball_max", "backward"]

#: Below this interval width a unit gets the constant lines (the chord's slope is not accurate there).
_TINY = 1e-9


@dataclass(frozen=True)
class Relaxation:
    """Lines below and above ``σ`` on each unit's interval: ``s_lo z + b_lo ≤ σ(z) ≤ s_hi z + b_hi``."""

    s_lo: Tensor
    b_lo: Tensor
    s_hi: Tensor
    b_hi: Tensor


def relax(
    layer: nn.Module, lo: Tensor, hi: Tensor, values: tuple[Tensor, Tensor], d2: tuple[Tensor, Tensor], kink: Tensor
) -> Relaxation:
    """The lines of the module docstring for ``layer`` on ``[lo, hi]``; ``values`` and ``d2`` are the ranges of
    σ and σ'' there, ``kink`` the units where σ' is discontinuous (from ``activation_ranges``)."""
    zero = torch.zeros_like(lo)
    width = hi - lo
    if isinstance(layer, nn.ReLU):
        active, inactive = lo >= 0, hi <= 0
        chord = torch.where(width > 0, hi.clamp(min=0) / width.clamp(min=_TINY), zero)
        s_hi = torch.where(active, 1.0, torch.where(inactive, 0.0, chord))
        b_hi = torch.where(active | inactive, zero, -chord * lo)
        s_lo = torch.where(active, 1.0, torch.where(inactive, 0.0, (hi > -lo).to(lo.dtype)))
        return Relaxation(s_lo, zero, s_hi, b_hi)
    f_lo, f_hi = layer(lo), layer(hi)
    slope = (f_hi - f_lo) / width.clamp(min=_TINY)
    offset = f_lo - slope * lo
    spread = width * width / 8
    b_lo = offset - spread * d2[1].clamp(min=0)
    b_hi = offset + spread * (-d2[0]).clamp(min=0)
    flat = kink | (width < _TINY)
    return Relaxation(
        torch.where(flat, zero, slope),
        torch.where(flat, values[0], b_lo),
        torch.where(flat, zero, slope),
        torch.where(flat, values[1], b_hi),
    )


@dataclass
class LinearForm:
    """``A_lo x' + c_lo ≤ q(x') ≤ A_hi x' + c_hi`` on the ball, per example: ``A`` ``[B, n, d]``, ``c`` ``[B, n]``
    (rows: the bounded quantities; one example's form may drop the batch dim)."""

    A_lo: Tensor
    c_lo: Tensor
    A_hi: Tensor
    c_hi: Tensor

    @classmethod
    def exact(cls, W: Tensor, b: Tensor) -> LinearForm:
        return cls(W, b, W, b)

    def through_affine(self, W: Tensor, W_abs: Tensor, b: Tensor) -> LinearForm:
        """Bounds of ``W q + b`` (forward mode): centre and half-difference, two products each."""
        A_mid, A_rad = (self.A_lo + self.A_hi) / 2, (self.A_hi - self.A_lo) / 2
        c_mid, c_rad = (self.c_lo + self.c_hi) / 2, (self.c_hi - self.c_lo) / 2
        A_c, A_r = apply(W, A_mid), apply(W_abs, A_rad)
        c_c, c_r = apply(W, c_mid) + b, apply(W_abs, c_rad)
        return LinearForm(A_c - A_r, c_c - c_r, A_c + A_r, c_c + c_r)

    def through_activation(self, r: Relaxation) -> LinearForm:
        """Bounds of ``σ(q)`` (forward mode), one unit per row."""
        lo_pos, hi_pos = r.s_lo >= 0, r.s_hi >= 0
        A_lo = r.s_lo[..., None] * torch.where(lo_pos[..., None], self.A_lo, self.A_hi)
        c_lo = r.s_lo * torch.where(lo_pos, self.c_lo, self.c_hi) + r.b_lo
        A_hi = r.s_hi[..., None] * torch.where(hi_pos[..., None], self.A_hi, self.A_lo)
        c_hi = r.s_hi * torch.where(hi_pos, self.c_hi, self.c_lo) + r.b_hi
        return LinearForm(A_lo, c_lo, A_hi, c_hi)

    def concretize(self, x0: Tensor, eps: Tensor | float, norm: Norm) -> tuple[Tensor, Tensor]:
        """The interval of each row over ``B_p(x0, eps)`` (``eps`` ``[B, 1]`` for a batch): exact for the lines."""
        return ball_min(self.A_lo, self.c_lo, x0, eps, norm), ball_max(self.A_hi, self.c_hi, x0, eps, norm)

    def example(self, k: int) -> LinearForm:
        return LinearForm(self.A_lo[k], self.c_lo[k], self.A_hi[k], self.c_hi[k])

    def __add__(self, other: LinearForm) -> LinearForm:
        return LinearForm(self.A_lo + other.A_lo, self.c_lo + other.c_lo, self.A_hi + other.A_hi, self.c_hi + other.c_hi)


def apply(op: Tensor, X: Tensor) -> Tensor:
    """``op`` (``[m, n]``, dense or sparse) applied to each example of ``X``: ``[B, n] -> [B, m]`` or
    ``[B, n, k] -> [B, m, k]``, as one matrix product over the whole batch."""
    if X.dim() == 2:
        return (op @ X.T).T
    B, n, k = X.shape
    return (op @ X.transpose(0, 1).reshape(n, B * k)).reshape(-1, B, k).transpose(0, 1)


def ball_min(A: Tensor, c: Tensor, x0: Tensor, eps: Tensor | float, norm: Norm) -> Tensor:
    """``min over ||x' - x0||_p ≤ eps`` of ``A x' + c``, row by row: ``A x0 + c - eps ||A_row||_{p*}``."""
    return (A @ x0[..., None])[..., 0] + c - eps * dual_norm(A, norm, batch_dims=None)


def ball_max(A: Tensor, c: Tensor, x0: Tensor, eps: Tensor | float, norm: Norm) -> Tensor:
    """``max over the ball`` of ``A x' + c``, row by row."""
    return (A @ x0[..., None])[..., 0] + c + eps * dual_norm(A, norm, batch_dims=None)


def backward(C: Tensor, stages: list, relaxations: list[Relaxation]) -> LinearForm:
    """Linear bounds of ``C z_L`` in terms of the input, by one backward pass (CROWN), for a batch.

    ``C`` ``[B, K, c]``; ``stages``: the network's affine maps (objects with ``opT``, the transposed matrix,
    and ``b``) and activations in order, starting and ending with an affine map; ``relaxations``: one per
    activation, in order, each ``[B, n]``.
    """
    lam_lo, lam_hi = C, C
    c_lo = torch.zeros(C.shape[:-1], dtype=C.dtype)
    c_hi = torch.zeros(C.shape[:-1], dtype=C.dtype)
    pending = list(relaxations)
    for st in reversed(stages):
        if hasattr(st, "opT"):
            c_lo, c_hi = c_lo + lam_lo @ st.b, c_hi + lam_hi @ st.b
            lam_lo = apply(st.opT, lam_lo.transpose(1, 2)).transpose(1, 2)
            lam_hi = apply(st.opT, lam_hi.transpose(1, 2)).transpose(1, 2)
            continue
        r = pending.pop()
        s_lo, s_hi, b_lo, b_hi = (t[:, None, :] for t in (r.s_lo, r.s_hi, r.b_lo, r.b_hi))
        pos_lo, neg_lo = lam_lo.clamp(min=0), lam_lo.clamp(max=0)
        pos_hi, neg_hi = lam_hi.clamp(min=0), lam_hi.clamp(max=0)
        c_lo = c_lo + (pos_lo * b_lo + neg_lo * b_hi).sum(-1)
        c_hi = c_hi + (pos_hi * b_hi + neg_hi * b_lo).sum(-1)
        lam_lo = pos_lo * s_lo + neg_lo * s_hi
        lam_hi = pos_hi * s_hi + neg_hi * s_lo
    return LinearForm(lam_lo, c_lo, lam_hi, c_hi)
