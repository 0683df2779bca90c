"""Linear bound propagation (CROWN-style) through a chain of dense affine maps and elementwise activations.

Every activation ``σ`` on a unit whose pre-activation is known to lie in ``[l, u]`` gets two lines,
``s_lo z + b_lo ≤ σ(z) ≤ s_hi z + b_hi`` on ``[l, u]``:

* ReLU: exact on stable units; on unstable ones the upper chord and the lower line of slope 0 or 1
  (whichever leaves the smaller area), as in CROWN.
* A C¹ activation: lines of a slope ``s`` chosen per unit, with offsets from ``K + 1`` grid points
  ``z_k`` of ``[l, u]`` (spacing ``h = (u - l) / K``). On each grid cell ``φ = σ - s z`` differs from its
  chord by ``-(z - z_k)(z_{k+1} - z) σ''(ξ) / 2`` for some ``ξ`` in the cell (Peano's form, valid when σ' is
  absolutely continuous: ELU with α = 1 included), at most ``h²/8 · max σ''`` in size, hence
  ``min_k φ(z_k) - h²/8 · max(σ''⁺) ≤ φ ≤ max_k φ(z_k) + h²/8 · max((-σ'')⁺)`` on ``[l, u]``: sound for
  every slope. The slope is picked among the chord, the secants of the cells and the secants from either
  end to each grid point (these approach CROWN's tangents through an end point) as the one whose line
  lies closest to σ on the grid, separately for the lower and the upper line. On a convex stretch the
  chord is the exact upper line, on a concave one the exact lower line.
* Units where σ' jumps (ELU with α ≠ 1 across 0) and tiny intervals: the constant lines ``min σ``, ``max σ``.

Two uses (section 4.1's constants need intervals of every pre-activation, the certificate needs the
outputs): *forward* linear bounds ``A_lo x' + c_lo ≤ z_l(x') ≤ A_hi x' + c_hi`` (matrices ``[n_l, d]``,
cheap when the input is small) tighten the interval of each pre-activation; a *backward* pass from rows
``C`` of the output (``C z``: a class, a margin, a weighted combination) gives ``A x' + c`` bounds of ``C z``
whose minimum over the ball is exact for the line. Both are sound for the real-valued network; rounding is
absorbed by the caller's final widening.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.norms import Norm, dual_norm
from .operators import Operator, apply
from .regions import BoxInBall

__all__ = [
    "Relaxation", "relax", "relax_slope", "fit_off_identity", "grid", "fit_lines", "softplus_jump", "LinearForm", "product", "scaled_line", "reach",
    "ball_min", "ball_max", "backward", "Region",
]

#: Below this interval width a unit gets the constant lines (the chord's slope is not accurate there).
_TINY = 1e-9
#: Grid cells per unit for the lines of smooth activations: the offsets' error term shrinks as 1 / K².
_GRID = 8
_STEPS = torch.arange(_GRID + 1, dtype=torch.float64)
#: Where bounds hold: a ball of radius ``eps`` (a float or ``[B, 1]``) in the norm given beside it, a box of
#: half-widths ``[B, d]`` (with ``"linf"``), or a box cut to an l_2 ball (:class:`~.regions.BoxInBall`).
Region = Tensor | float | BoxInBall


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

    def smooth(lo: Tensor, hi: Tensor, v0: Tensor, v1: Tensor, d2_lo: Tensor, d2_hi: Tensor, kink: Tensor) -> Relaxation:
        z = grid(lo, hi)
        spread = (((hi - lo).clamp(min=_TINY) / _GRID) ** 2 / 8)[..., None]
        jump = softplus_jump(layer)  # torch's Softplus is z itself above its threshold: a step of this size

        def phi_range(slopes: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
            # Peano: φ lies within h²/8 · max σ'' of its chords on every cell
            return (
                phi.min(-1).values - spread * d2_hi.clamp(min=0)[..., None] - jump,
                phi.max(-1).values + spread * (-d2_lo).clamp(min=0)[..., None] + jump,
            )

        return fit_lines(z, layer(z), phi_range, kink | (hi - lo < _TINY), (v0, v1))

    return fit_off_identity(layer, lo, (1.0, 0.0, 1.0, 0.0), smooth, lo, hi, *values, *d2, kink)


def identity_units(layer: nn.Module, lo: Tensor) -> Tensor:
    """The units on whose interval (lower end ``lo``) the activation and its slope are those of the identity:
    ELU's with ``l ≥ 0``, or ``l > 0`` where ``α ≠ 1`` (torch's ELU has slope α at 0 itself)."""
    if not isinstance(layer, nn.ELU):
        return torch.zeros_like(lo, dtype=torch.bool)
    return lo >= 0 if float(layer.alpha) == 1.0 else lo > 0


def fit_off_identity(
    layer: nn.Module, lo: Tensor, exact: tuple[float, float, float, float], fit: Callable[..., Relaxation],
    *per_unit: Tensor,
) -> Relaxation:
    """``fit(*per_unit)`` on the units where ``layer`` is not the identity (:func:`identity_units`), and the
    exact lines ``exact`` ``(s_lo, b_lo, s_hi, b_hi)`` on the others (``z`` itself for σ, the constant 1 for
    σ'), which skips the grid fit on about half of an ELU network's units. ``per_unit``: tensors shaped
    like ``lo``, passed to ``fit`` restricted to those units."""
    straight = identity_units(layer, lo)
    if not bool(straight.any()):
        return fit(*per_unit)
    curved = ~straight
    part = fit(*(t[curved] for t in per_unit))
    return Relaxation(*(
        torch.full_like(lo, value).masked_scatter(curved, line)
        for value, line in zip(exact, (part.s_lo, part.b_lo, part.s_hi, part.b_hi), strict=True)
    ))


def relax_slope(
    slope: Callable[[Tensor], Tensor], z: Tensor, cell_d2: tuple[Tensor, Tensor], slopes: tuple[Tensor, Tensor],
    flat: Tensor, jump: float = 0.0,
) -> Relaxation:
    """Lines below and above ``σ'`` (the *slope* of an activation, a factor of the input gradient) on each
    unit's interval, from its values on the grid ``z`` (:func:`grid`) and the range ``[a, b]`` of σ'' on each
    grid cell ``cell_d2`` ``[..., K]``. With ``φ = σ' - s z``, ``φ' ∈ [a - s, b - s]`` on a cell ``[z_k, z_k + h]``:
    for ``s`` in ``[a, b]``, ``φ(z_k + t)`` lies below both ``φ(z_k) + (b - s) t`` and
    ``φ(z_k + h) + (s - a)(h - t)``, and the combination of the two with weights ``(s - a, b - s) / (b - a)``
    has no ``t`` term, so ``φ ≤ max(φ(z_k), φ(z_k + h)) + h (s - a)(b - s) / (b - a)`` on the cell (and the
    same below); for ``s`` outside ``[a, b]`` φ is monotone on the cell and the term is 0. This needs σ' only
    Lipschitz (ELU with α = 1 included). ``slopes``: the range of σ' (the constant lines where ``flat``); ``jump``: a
    step of σ' to absorb (torch's Softplus)."""
    width = z[..., 1:] - z[..., :-1]

    def phi_range(s: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
        below = (cell_d2[0][..., None, :] - s[..., None]).clamp(max=0)  # [..., S, K]
        above = (cell_d2[1][..., None, :] - s[..., None]).clamp(min=0)
        # (s - a)(b - s) / (b - a) as min · (max / spread), max / spread in [1/2, 1]: no division by a
        # clamped spread, which would shrink the term on cells where σ'' barely varies (saturated units)
        spread = above - below
        ratio = torch.maximum(-below, above) / torch.where(spread > 0, spread, 1.0)
        err = width[..., None, :] * torch.minimum(-below, above) * ratio
        ends_lo = torch.minimum(phi[..., :-1], phi[..., 1:])
        ends_hi = torch.maximum(phi[..., :-1], phi[..., 1:])
        return (ends_lo - err).min(-1).values - jump, (ends_hi + err).max(-1).values + jump

    return fit_lines(z, slope(z), phi_range, flat, slopes)


def grid(lo: Tensor, hi: Tensor) -> Tensor:
    """``K + 1`` evenly spaced points of each unit's ``[lo, hi]`` ``[..., K + 1]``, ends exact (units narrower
    than 1e-9 overshoot ``hi``: they get constant lines)."""
    step = (hi - lo).clamp(min=_TINY) / _GRID
    z = lo[..., None] + step[..., None] * _STEPS.to(lo)
    z[..., -1] = torch.maximum(hi, lo)
    return z


def fit_lines(
    z: Tensor, f: Tensor, phi_range: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], flat: Tensor,
    constants: tuple[Tensor, Tensor],
) -> Relaxation:
    """The lower and the upper line of a function with values ``f`` on the grid ``z`` ``[..., K + 1]``, each of
    the slope among the candidates (:func:`_candidate_slopes`) whose line lies closest to it on the grid;
    ``phi_range(slopes, phi)`` gives sound bounds ``[..., S]`` of ``φ = f - s z`` over the whole interval for
    each slope ``s`` (``phi`` its grid values ``[..., S, K + 1]``). Units in ``flat`` (and any with a
    non-finite line) get the constant lines ``constants``, the function's range."""
    # any finite slope gives valid lines; where grid points coincide in floating point (|l| much larger
    # than the width) a secant is 0/0, and that candidate becomes slope 0
    slopes = torch.nan_to_num(_candidate_slopes(z, f), nan=0.0, posinf=0.0, neginf=0.0)  # [..., S]
    phi = f[..., None, :] - slopes[..., :, None] * z[..., None, :]  # [..., S, K + 1]
    b_lo, b_hi = phi_range(slopes, phi)
    mean = phi.mean(-1)
    # the line closest to f on the grid; gaps are compared on a grid of 1e-9 of f's range, so that
    # rounding-level differences in [l, u] (a batch against one example) do not flip the choice
    unit = 1e-9 * (f.amax(-1) - f.amin(-1)).clamp(min=_TINY)[..., None]
    pick_lo = torch.round((mean - b_lo) / unit).argmin(-1, keepdim=True)
    pick_hi = torch.round((b_hi - mean) / unit).argmin(-1, keepdim=True)
    gap_lo = (mean - b_lo).gather(-1, pick_lo)[..., 0]
    gap_hi = (b_hi - mean).gather(-1, pick_hi)[..., 0]
    s_lo, s_hi = slopes.gather(-1, pick_lo)[..., 0], slopes.gather(-1, pick_hi)[..., 0]
    b_lo, b_hi = b_lo.gather(-1, pick_lo)[..., 0], b_hi.gather(-1, pick_hi)[..., 0]
    # the constant lines (the range) where they lie closer on the grid: on intervals far wider than σ's
    # curvature allows, the error terms dwarf the range, and such lines would only carry huge offsets
    f_mean = f.mean(-1)
    flat_lo = flat | ~(torch.isfinite(s_lo) & torch.isfinite(b_lo)) | ~(gap_lo < f_mean - constants[0])
    flat_hi = flat | ~(torch.isfinite(s_hi) & torch.isfinite(b_hi)) | ~(gap_hi < constants[1] - f_mean)
    zero = torch.zeros_like(s_lo)
    return Relaxation(
        torch.where(flat_lo, zero, s_lo),
        torch.where(flat_lo, constants[0], b_lo),
        torch.where(flat_hi, zero, s_hi),
        torch.where(flat_hi, constants[1], b_hi),
    )


def softplus_jump(layer: nn.Module, order: int = 0) -> float:
    """How far torch's ``Softplus`` (``z`` itself where ``βz`` exceeds its threshold ``t``) steps at the
    threshold from the smooth ``log(1 + e^{βz})/β``: ``log1p(e^{-t})/β`` in value (2e-9 by default) and, with
    ``order=1``, ``1 / (1 + e^t)`` in slope; 0 for every other activation."""
    if not isinstance(layer, nn.Softplus):
        return 0.0
    t = float(layer.threshold)
    return math.log1p(math.exp(-t)) / float(layer.beta) if order == 0 else 1 / (1 + math.exp(t))


def _candidate_slopes(z: Tensor, f: Tensor) -> Tensor:
    """Slopes to try on each unit's grid ``z`` ``[..., K + 1]`` with values ``f``: the chord, every cell's
    secant, and the secants from each end of the interval to every interior grid point."""
    cells = (f[..., 1:] - f[..., :-1]) / (z[..., 1:] - z[..., :-1])
    from_lo = (f[..., 1:-1] - f[..., :1]) / (z[..., 1:-1] - z[..., :1])
    to_hi = (f[..., -1:] - f[..., 1:-1]) / (z[..., -1:] - z[..., 1:-1])
    chord = (f[..., -1:] - f[..., :1]) / (z[..., -1:] - z[..., :1])
    return torch.cat([chord, cells, from_lo, to_hi], -1)


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

    def through_affine(self, W: Operator, W_abs: Operator, b: Tensor | float) -> LinearForm:
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

    def concretize(self, x0: Tensor, eps: Region, norm: Norm) -> tuple[Tensor, Tensor]:
        """The interval of each row over ``B_p(x0, eps)`` (``eps`` ``[B, 1]`` for a batch): exact for the lines."""
        return ball_min(self.A_lo, self.c_lo, x0, eps, norm), ball_max(self.A_hi, self.c_hi, x0, eps, norm)

    def example(self, k: int) -> LinearForm:
        return LinearForm(self.A_lo[k], self.c_lo[k], self.A_hi[k], self.c_hi[k])

    def __add__(self, other: LinearForm) -> LinearForm:
        return LinearForm(self.A_lo + other.A_lo, self.c_lo + other.c_lo, self.A_hi + other.A_hi, self.c_hi + other.c_hi)


def product(
    S: LinearForm, s_range: tuple[Tensor, Tensor], V: LinearForm, v_range: tuple[Tensor, Tensor],
    x0: Tensor, eps: Region, norm: Norm,
) -> tuple[LinearForm, tuple[Tensor, Tensor]]:
    """Linear bounds of the elementwise product ``s ⊙ v`` of two linearly bounded quantities whose values lie
    in the intervals ``s_range``, ``v_range`` on the ball (forms ``[N, n, d]``, intervals ``[N, n]``).

    McCormick's planes: ``s v ≥ s_lo v + v_lo s - s_lo v_lo`` and ``≥ s_hi v + v_hi s - s_hi v_hi`` (from
    ``(s - s_lo)(v - v_lo) ≥ 0`` and ``(s_hi - s)(v_hi - v) ≥ 0``), the upper ones alike; each unit keeps the
    plane whose bound over the ball is tighter (returned too: True where the plane through ``(s_lo, v_lo)``,
    resp. ``(s_hi, v_lo)``, is used). Exact where either factor is a constant.
    """

    def plane(a: Tensor, b: Tensor, upper: bool) -> tuple[Tensor, Tensor]:  # a v + b s - a b
        A_v, c_v = scaled_line(V, a, upper)
        A_s, c_s = scaled_line(S, b, upper)
        return A_v + A_s, c_v + c_s - a * b

    (s_lo, s_hi), (v_lo, v_hi) = s_range, v_range
    lo1, lo2 = plane(s_lo, v_lo, False), plane(s_hi, v_hi, False)
    hi1, hi2 = plane(s_hi, v_lo, True), plane(s_lo, v_hi, True)
    first_lo = _at_least(ball_min(*lo1, x0, eps, norm), ball_min(*lo2, x0, eps, norm))
    first_hi = _at_least(-ball_max(*hi1, x0, eps, norm), -ball_max(*hi2, x0, eps, norm))
    form = LinearForm(
        torch.where(first_lo[..., None], lo1[0], lo2[0]), torch.where(first_lo, lo1[1], lo2[1]),
        torch.where(first_hi[..., None], hi1[0], hi2[0]), torch.where(first_hi, hi1[1], hi2[1]),
    )
    return form, (first_lo, first_hi)


def _at_least(a: Tensor, b: Tensor) -> Tensor:
    """``a >= b``, compared on a grid of 1e-9 of their size: ties (both planes equally tight, as where either
    factor is constant) do not flip with rounding (layers against matrices, a batch against one example)."""
    unit = (1e-9 * torch.maximum(a.abs(), b.abs())).clamp(min=1e-280)
    return torch.round(a / unit) >= torch.round(b / unit)


def scaled_line(form: LinearForm, k: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
    """The lower (or upper) line of ``k ⊙ q`` for a linearly bounded ``q`` and coefficients ``k`` ``[N, n]``."""
    take_lo = (k >= 0) != upper
    A = torch.where(take_lo[..., None], form.A_lo, form.A_hi)
    c = torch.where(take_lo, form.c_lo, form.c_hi)
    return k[..., None] * A, k * c


def reach(A: Tensor, eps: Region, norm: Norm) -> Tensor:
    """``max |A δ|`` row by row over the ball ``||δ||_p ≤ eps``: ``eps ||A_row||_{p*}`` (``eps`` a float or
    ``[B, 1]``); over a box of half-widths ``eps`` ``[B, d]`` (l_inf only, ``d > 1``): ``|A_row| · eps``; an
    upper bound of it over a :class:`~.regions.BoxInBall`."""
    if isinstance(eps, BoxInBall):
        return eps.reach(A)
    if isinstance(eps, Tensor) and eps.dim() == 2 and eps.shape[1] > 1:
        return (A.abs() @ eps[:, :, None])[..., 0] if A.dim() == 3 else eps @ A.abs().T
    return eps * dual_norm(A, norm, batch_dims=None)


def ball_min(A: Tensor, c: Tensor, x0: Tensor, eps: Region, norm: Norm) -> Tensor:
    """``min over ||x' - x0||_p ≤ eps`` of ``A x' + c``, row by row: ``A x0 + c - eps ||A_row||_{p*}``
    (over a box of half-widths ``eps`` ``[B, d]``: see :func:`reach`; a lower bound of it over a
    :class:`~.regions.BoxInBall`, by its dual)."""
    if isinstance(eps, BoxInBall):
        return (A @ x0[..., None])[..., 0] + c + eps.lowest(A)
    return (A @ x0[..., None])[..., 0] + c - reach(A, eps, norm)


def ball_max(A: Tensor, c: Tensor, x0: Tensor, eps: Region, norm: Norm) -> Tensor:
    """``max over the ball`` (or box, or box in a ball) of ``A x' + c``, row by row."""
    if isinstance(eps, BoxInBall):
        return (A @ x0[..., None])[..., 0] + c - eps.lowest(-A)
    return (A @ x0[..., None])[..., 0] + c + reach(A, eps, norm)


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
