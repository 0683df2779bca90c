"""Linear bounds of a compiled network's input gradients over a ball (the constants of Theorem 2, section 4.1).

For the chain ``z_1 = W_0 x + b_0``, ``a_l = σ(z_l)``, ``z_{l+1} = W_l a_l + b_l`` and output rows ``C`` (a
class, a margin), the input gradient is ``g = W_0^T p_1`` with ``p_l = σ'(z_l) ⊙ u_l``,
``u_l = W_l^T p_{l+1}`` and ``u_{L-1} = W_{L-1}^T C^T`` constant. Each ``σ'(z_l)`` gets lines in ``z_l`` on its
interval (:func:`robustmix.certify.linear.relax_slope`) and each product ``σ'(z_l) ⊙ u_l`` McCormick's planes
(:func:`robustmix.certify.linear.product`). Two passes use them:

* forward (:class:`GradientForms`, during the backward pass of the intervals, on small networks): linear
  bounds of every ``u_l`` in the input, whose extremes over the ball tighten the intervals of ``u_l`` (the
  planes need them) and pick each unit's planes; on wider networks the intervals stay those of interval
  arithmetic and the planes are picked at the centre (:func:`centre_record`);
* backward (:meth:`GradientGraph.lower`), for linear functionals ``λ·g`` of the gradient (its components, the
  lines of its norm): one sweep along the gradient path (``l = 1 .. L-1``) turns ``λ`` into coefficients on
  every ``σ'(z_l)``; their lines turn those into coefficients on ``z_l``, which a CROWN sweep along the value
  path (``l = L-1 .. 1``, through the lines of each ``σ``) takes to the input. Every relaxation is picked by
  the sign of its own coefficient and the affine maps are exact, so this is tighter than adding up the
  forward bounds. The result is a line ``A x' + c ≤ λ·g(x')`` valid on the whole ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils.norms import Norm
from .linear import LinearForm, Relaxation, product
from .operators import apply

__all__ = ["GradientForms", "GradientGraph", "ActivationRecord", "centre_record"]

_F64 = torch.float64


@dataclass(frozen=True)
class ActivationRecord:
    """What the backward pass needs of one activation: the lines of σ and of σ' ``[B, n]``, the ranges of σ'
    ``[B, n]`` and of the incoming ``u`` ``[B, K, n]``, and which McCormick planes each unit uses
    (``planes_at_u_lo``, below and above, ``[B, K, n]``: True for the plane through ``(s_lo, u_lo)`` resp.
    ``(s_hi, u_lo)``, False for the one through ``(s_hi, u_hi)`` resp. ``(s_lo, u_hi)``)."""

    value: Relaxation
    slope: Relaxation
    s_range: tuple[Tensor, Tensor]
    u_range: tuple[Tensor, Tensor]
    planes_at_u_lo: tuple[Tensor, Tensor]

    def example(self, k: int) -> ActivationRecord:
        def one(t: Tensor) -> Tensor:
            return t[k : k + 1]

        def lines(r: Relaxation) -> Relaxation:
            return Relaxation(*(one(t) for t in (r.s_lo, r.b_lo, r.s_hi, r.b_hi)))

        return ActivationRecord(
            lines(self.value), lines(self.slope), (one(self.s_range[0]), one(self.s_range[1])),
            (one(self.u_range[0]), one(self.u_range[1])), (one(self.planes_at_u_lo[0]), one(self.planes_at_u_lo[1])),
        )


@dataclass(frozen=True)
class GradientGraph:
    """The relaxed gradient computation of ``K`` outputs for ``B`` examples: the network's affine stages and one
    :class:`ActivationRecord` per activation, in forward order."""

    stages: list
    acts: list[ActivationRecord]

    def example(self, k: int) -> GradientGraph:
        return GradientGraph(self.stages, [a.example(k) for a in self.acts])

    def lower(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        """Lines ``A x' + c ≤ λ·∇f_k(x')`` on the ball for functionals ``lam`` ``[B, K, F, d]`` (``F`` per output):
        ``A`` ``[B, K, F, d]``, ``c`` ``[B, K, F]``, valid up to float64 rounding (widen what is concluded from
        them). Upper lines: ``-lower(-lam)``."""
        B, K, F, d = lam.shape

        def rows(t: Tensor) -> Tensor:  # [B, n] or [B, K, n] -> one row per functional [B K F, n]
            t = t[:, None] if t.dim() == 2 else t
            return t[:, :, None].expand(B, K, F, t.shape[-1]).reshape(B * K * F, -1)

        const = torch.zeros(B * K * F, dtype=_F64)
        mu = apply(self.stages[0].op, lam.reshape(-1, d))  # the coefficients on p_1
        on_z = []
        for i, act in enumerate(self.acts):  # the gradient path, l = 1 .. L-1
            s_lo, s_hi = rows(act.s_range[0]), rows(act.s_range[1])
            u_lo, u_hi = rows(act.u_range[0]), rows(act.u_range[1])
            below, above = rows(act.planes_at_u_lo[0]), rows(act.planes_at_u_lo[1])
            pos = mu >= 0  # μ p ≥ μ (plane below) where μ ≥ 0, μ (plane above) where μ < 0
            a = torch.where(pos, torch.where(below, s_lo, s_hi), torch.where(above, s_hi, s_lo))
            b = torch.where(pos, torch.where(below, u_lo, u_hi), torch.where(above, u_lo, u_hi))
            nu, beta = mu * a, mu * b  # plane a u + b s - a b: coefficients on u_l and on σ'(z_l)
            const = const - (mu * a * b).sum(-1)
            slope, offset = _line_for(act.slope, beta >= 0, rows)
            on_z.append(beta * slope)
            const = const + (beta * offset).sum(-1)
            if i == len(self.acts) - 1:
                const = const + (nu * u_lo).sum(-1)  # the top u is constant
            else:
                mu = apply(self.stages[2 * i + 2].op, nu)  # u_l = W_l^T p_{l+1}
        alpha = torch.zeros_like(on_z[-1])  # the coefficients on a_l, from the layers above
        for i in reversed(range(len(self.acts))):  # the value path, l = L-1 .. 1
            slope, offset = _line_for(self.acts[i].value, alpha >= 0, rows)
            zeta = on_z[i] + alpha * slope
            const = const + (alpha * offset).sum(-1)
            affine = self.stages[2 * i]  # z_l = W a + b
            const = const + zeta @ affine.b
            alpha = apply(affine.opT, zeta)
        return alpha.reshape(B, K, F, d), const.reshape(B, K, F)


def _line_for(r: Relaxation, lower: Tensor, rows) -> tuple[Tensor, Tensor]:
    """Slope and offset of the lower line where ``lower``, else of the upper one."""
    return (torch.where(lower, rows(r.s_lo), rows(r.s_hi)), torch.where(lower, rows(r.b_lo), rows(r.b_hi)))


def centre_record(
    value: Relaxation, slope: Relaxation, s_range: tuple[Tensor, Tensor], u_range: tuple[Tensor, Tensor],
    s_at_centre: Tensor, u_at_centre: Tensor,
) -> ActivationRecord:
    """An activation's record without forward bounds of ``u``: each unit's McCormick planes are the ones
    closer to ``σ'(z) u`` at the centre of the ball (``s_at_centre`` ``[B, n]``, ``u_at_centre`` ``[B, K, n]``):
    below, ``(s - s_lo)(u - u_lo)`` against ``(s_hi - s)(u_hi - u)``; above, ``(s_hi - s)(u - u_lo)`` against
    ``(s - s_lo)(u_hi - u)``."""
    s0, u0 = s_at_centre[:, None], u_at_centre
    s_lo, s_hi = s_range[0][:, None], s_range[1][:, None]
    u_lo, u_hi = u_range
    below = (s0 - s_lo) * (u0 - u_lo) <= (s_hi - s0) * (u_hi - u0)
    above = (s_hi - s0) * (u0 - u_lo) <= (s0 - s_lo) * (u_hi - u0)
    return ActivationRecord(value, slope, s_range, u_range, (below, above))


class GradientForms:
    """Forward linear bounds ``A x' + c`` of ``u = ∂f_k/∂(activations)`` through the backward pass, for ``B``
    examples and ``K`` outputs at once: ``u`` starts as the constant rows of the outputs, goes back through
    the transposed affine maps exactly, and through each activation as the product of σ'(z), bounded by its
    lines, with the incoming ``u``. Every step's bounds over the ball tighten the intervals of ``u``; what
    the backward functionals need is recorded on the way (:meth:`graph`)."""

    def __init__(self, x0: Tensor, e: Tensor, norm: Norm, rows: Tensor, stages: list) -> None:
        self.B, self.K, c = rows.shape
        self.x, self.e, self.norm = x0.repeat_interleave(self.K, 0), e.repeat_interleave(self.K, 0), norm
        self.form = LinearForm.exact(torch.zeros(self.B * self.K, c, x0.shape[1], dtype=_F64), rows.reshape(-1, c))
        self.stages = stages
        self.records: list[ActivationRecord] = []

    def through_affine(self, st, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        self.form = self.form.through_affine(st.opT, st.opT_abs, 0.0)
        return self._tighten(lo, hi)

    def through_slope(
        self, value: Relaxation, slope: Relaxation, slope_form: LinearForm, s_range: tuple[Tensor, Tensor],
        u_range: tuple[Tensor, Tensor], lo: Tensor, hi: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``u ← σ'(z) ⊙ u`` at one activation (``slope_form``: σ'(z)'s bounds in the input; ``u_range``: the
        incoming ``u``'s intervals); returns the intervals ``lo``, ``hi`` of the product, tightened."""

        def per_row(t: Tensor) -> Tensor:
            return t.repeat_interleave(self.K, 0)

        S = LinearForm(*(per_row(t) for t in (slope_form.A_lo, slope_form.c_lo, slope_form.A_hi, slope_form.c_hi)))
        flat = (u_range[0].reshape(self.B * self.K, -1), u_range[1].reshape(self.B * self.K, -1))
        self.form, planes = product(S, (per_row(s_range[0]), per_row(s_range[1])), self.form, flat, self.x, self.e, self.norm)
        first = (planes[0].reshape(u_range[0].shape), planes[1].reshape(u_range[0].shape))
        self.records.append(ActivationRecord(value, slope, s_range, u_range, first))
        return self._tighten(lo, hi)

    def _tighten(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        flo, fhi = self.form.concretize(self.x, self.e, self.norm)
        return torch.maximum(lo, flo.reshape(lo.shape)), torch.minimum(hi, fhi.reshape(hi.shape))

    def graph(self) -> GradientGraph:
        return GradientGraph(self.stages, self.records[::-1])
