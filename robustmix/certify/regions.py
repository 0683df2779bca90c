"""Input regions other than an l_p ball: an l_inf box cut to an l_2 ball, for l_2 input splitting.

Input splitting (:mod:`robustmix.certify.splitting`) covers an l_2 ball ``B_2(x, r)`` with l_inf boxes. In
d dimensions the box that holds the ball reaches ``√d`` times farther than the ball along its diagonals,
so bounds over whole boxes are looser than the unsplit ball's until the boxes are small. Bounds over
``box ∩ ball`` are never looser than either: every minimum of a linear form the propagation takes
(:func:`robustmix.certify.linear.ball_min`) is then taken over the intersection, by Lagrangian duality:

    min over δ ∈ [-h, h], ||δ - o||_2 ≤ r of a·δ  ≥  L(λ) = min over δ ∈ [-h, h] of a·δ + λ (||δ - o||² - r²)

for every ``λ ≥ 0`` (``o``: the ball's centre seen from the box's). The inner minimum splits by
coordinate, with ``δ_k = clip(o_k - a_k / (2λ), -h_k, h_k)``, so each ``L(λ)`` is a sound lower bound in
closed form; ``L`` is concave with ``L'(λ) = ||δ(λ) - o||² - r²``, whose root is found exactly (the
distance is piecewise quadratic in ``1/λ``). ``λ = 0`` gives the box's bound and ``λ = ||a|| / (2r)`` the
ball's when the box does not clip, so the maximum is at least as tight as both, and equals the true
minimum (strong duality). Float64 rounding is absorbed by the caller's final widening, as for every
other bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BoxInBall"]


@dataclass(frozen=True)
class BoxInBall:
    """The points ``x0 + δ`` with ``|δ| ≤ halves`` (a box around the centre ``x0`` bounds are taken at) and
    ``||δ - offset||_2 ≤ radius``: an l_2 ball around ``x0 + offset``. ``halves``, ``offset`` ``[B, d]``,
    ``radius`` ``[B]``, one region per example of a batch."""

    halves: Tensor
    offset: Tensor
    radius: Tensor

    def __post_init__(self) -> None:
        B, d = self.halves.shape
        if self.offset.shape != (B, d) or self.radius.shape != (B,):
            raise ValueError(
                f"BoxInBall needs halves and offset [B, d] and radius [B]; got {tuple(self.halves.shape)}, "
                f"{tuple(self.offset.shape)}, {tuple(self.radius.shape)}"
            )
        if not bool((self.halves >= 0).all() & (self.radius >= 0).all()):
            raise ValueError("BoxInBall needs half-widths and radii >= 0")

    def repeat_interleave(self, k: int, dim: int = 0) -> BoxInBall:
        """Each region ``k`` times in a row (as :meth:`torch.Tensor.repeat_interleave` does for a batch)."""
        return BoxInBall(*(t.repeat_interleave(k, dim) for t in (self.halves, self.offset, self.radius)))

    def lowest(self, A: Tensor) -> Tensor:
        """A lower bound of ``min A δ`` over the region, row by row (``A`` ``[n, d]`` or ``[B, n, d]``; the
        result ``[B, n]``): the dual value ``L(λ)`` of the module docstring at its maximiser. Rows where the
        box's bound or the ball's is already exact (the box's farthest corner lies in the ball, or the
        ball's minimiser in the box) skip the dual."""
        h, o, r = self.halves[:, None, :], self.offset[:, None, :], self.radius[:, None]
        A = A.expand(h.shape[0], *A.shape[-2:]) if A.dim() == 2 else A
        norm = A.norm(dim=-1)
        box, ball = -(A.abs() * h).sum(-1), (A * o).sum(-1) - r * norm
        best = torch.maximum(box, ball)
        box_in_ball = ((o.abs() + h) ** 2).sum(-1) <= r**2
        ball_in_box = ((o - A * (r / norm.clamp(min=1e-300))[..., None]).abs() <= h).all(-1)
        rest = ~(box_in_ball | ball_in_box)
        if bool(rest.any()):
            At, ht, ot = A[rest], h.expand_as(A)[rest], o.expand_as(A)[rest]
            r2 = (r**2).expand_as(rest)[rest]
            dual = _dual(At, ht, ot, r2, 1 / (2 * _best_step(At, ht, ot, r2)))[0]
            best = best.masked_scatter(rest, torch.maximum(best[rest], dual))
        return best

    def reach(self, A: Tensor) -> Tensor:
        """An upper bound of ``max |A δ|`` over the region, row by row: the box's ``|A| h``, or with
        ``|δ| ≤ |o| + |δ - o|``, ``|A| |o| + r ||A_row||_2``, whichever is smaller."""
        A = A.expand(self.halves.shape[0], *A.shape[-2:]) if A.dim() == 2 else A
        Aa = A.abs()
        box = (Aa * self.halves[:, None, :]).sum(-1)
        shifted = (Aa * self.offset.abs()[:, None, :]).sum(-1) + self.radius[:, None] * A.norm(dim=-1)
        return torch.minimum(box, shifted)


def _dual(A: Tensor, h: Tensor, o: Tensor, r2: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """``L(λ)`` and ``L'(λ)`` (module docstring) for rows ``A`` ``[..., d]`` and ``λ``, ``r2`` ``[...]``."""
    delta = _clip(o - A / (2 * lam[..., None]), h)
    slope = ((delta - o) ** 2).sum(-1) - r2
    return (A * delta).sum(-1) + lam * slope, slope


def _best_step(A: Tensor, h: Tensor, o: Tensor, r2: Tensor) -> Tensor:
    """``μ = 1 / (2λ)`` at the maximiser of ``L`` (rows ``A``, ``h``, ``o`` ``[..., d]``, ``r2`` ``[...]``): the
    root of ``D(μ) = ||δ - o||² = r²`` with ``δ = clip(o - μ a, -h, h)``.

    Coordinate ``k`` is free (inside its bounds) for ``μ`` between ``p_k = (o_k - s_k h_k) / a_k`` and
    ``q_k = (o_k + s_k h_k) / a_k`` (``s = sign a``), and adds ``a_k² μ²`` to ``D`` there; before, it adds
    its distance to the box ``(|o_k| - h_k)⁺²``, after, ``(o_k + s_k h_k)²`` (continuous at both ends). So
    ``D = C + S μ²`` between consecutive breakpoints, with ``C`` and ``S`` running sums over the sorted
    breakpoints (those at ``μ ≤ 0`` folded into the start), ``D`` grows with ``μ``, and the root is exact
    on the segment where ``D`` reaches ``r²``.
    """
    d = A.shape[-1]
    sh = torch.where(A < 0, -h, h)
    moving = torch.cat([A != 0] * 2, -1)
    ends = torch.cat([o - sh, o + sh], -1)  # where each coordinate enters its bounds, and leaves them
    at = torch.where(moving, ends / torch.where(moving, torch.cat([A] * 2, -1), 1.0), torch.inf)
    enter, leave = at[..., :d], at[..., d:]
    a2, before, after = A**2, (o.abs() - h).clamp(min=0) ** 2, ends[..., d:] ** 2
    # the state just after μ = 0; only breakpoints at μ > 0 change it
    C0 = torch.where(enter > 0, before, 0.0).sum(-1) + torch.where(leave <= 0, after, 0.0).sum(-1)
    S0 = torch.where((enter <= 0) & (leave > 0), a2, 0.0).sum(-1)
    ahead = at > 0
    at, order = torch.sort(torch.where(ahead, at, torch.inf), -1)
    dC = torch.where(ahead, torch.cat([-before, after], -1), 0.0).gather(-1, order)
    dS = torch.where(ahead, torch.cat([a2, -a2], -1), 0.0).gather(-1, order)
    C = torch.cat([C0[..., None], C0[..., None] + dC.cumsum(-1)], -1)  # C_j, S_j hold on [at_j, at_{j+1})
    S = torch.cat([S0[..., None], S0[..., None] + dS.cumsum(-1)], -1)
    at = torch.cat([torch.zeros_like(at[..., :1]), at], -1)  # at_0 = 0
    reached = torch.where(torch.isfinite(at), C + S * at**2, torch.inf) <= r2[..., None]  # D at each breakpoint
    j = (reached.sum(-1, keepdim=True) - 1).clamp(min=0)
    Cj, Sj, start = C.gather(-1, j)[..., 0], S.gather(-1, j)[..., 0], at.gather(-1, j)[..., 0]
    end = torch.cat([at[..., 1:], torch.full_like(at[..., :1], torch.inf)], -1).gather(-1, j)[..., 0]
    root = ((r2 - Cj).clamp(min=0) / Sj.clamp(min=1e-300)).sqrt()
    return torch.minimum(torch.maximum(root, start), end).clamp(min=1e-300, max=1e300)


def _clip(v: Tensor, h: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(v, -h), h)
