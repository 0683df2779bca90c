"""Guaranteed bounds on a network's outputs, input gradients and gradient-Lipschitz constants over a ball.

The constants of Theorems 1 and 2 (sections 3.1, 4.1) are suprema/infima over ``B_p(x, ε)`` of
``|f_k|``, ``||∇f_k||_{p*}`` and of the Lipschitz constant of ``∇f_k``. This module bounds them soundly
for a feed-forward chain of

* affine layers — ``Linear``, ``Conv2d``, ``AvgPool2d``, ``Flatten``, ``Identity``, eval-mode ``Dropout``
  and ``BatchNorm`` — merged into one linear map per run of consecutive affine layers (a matrix, or for
  large convolution runs the layers themselves: :mod:`robustmix.certify.operators`);
* elementwise activations — ``Softplus``, ``Tanh``, ``Sigmoid``, ``GELU`` (exact erf form), ``ELU``,
  ``SiLU``, and ``ReLU`` on units that are stable on the ball (the network is then affine there);
* a final ``Softmax`` (or ``output="prob"``: probabilities of the logits).

Method (interval arithmetic in float64). Write ``z_l`` for the pre-activations of layer ``l``, ``J_l`` for
their Jacobian with respect to the input and ``u_l = ∂f_k/∂a_l`` for the gradient of output ``k`` with
respect to the activations ``a_l = σ(z_l)``.

1. Forward: intervals of ``z_l`` from interval arithmetic, intersected with the mean-value bound
   ``z_l(x') ∈ z_l(x) ± ε ||max|J_l| ||_{p*}`` (valid since ``J_l`` at every point of the convex ball lies
   in the interval ``J_l``); the first affine layer is bounded exactly over the l_p ball
   (``W x ± ε ||W_n||_{p*}``). Intervals of ``J_l`` follow ``J_{l+1} = W_{l+1} diag(σ'(z_l)) J_l``.
2. Backward: intervals of ``u_l`` from ``u_l = W_{l+1}^T (σ'(z_{l+1}) ⊙ u_{l+1})``.
3. Hessian: for such a chain ``∇²f_k = Σ_l J_l^T diag(σ''(z_l) ⊙ u_l) J_l`` (+ ``J_L^T ∇²_z p_k J_L`` for a
   softmax output), so at every point of the ball ``|∇²f_k| ≤ H̄_k := Σ_l |J_l|^T diag(|σ''(z_l) ⊙ u_l|)
   |J_l|`` elementwise, with ``|·|`` the largest absolute value of an interval. Hence the Lipschitz constant
   of ``∇f_k`` from ``l_p`` to ``l_{p*}`` (``sup ||∇²f_k||_{p→p*}`` over the convex ball) is at most
   ``Σ_ab H̄_ab`` for l_inf (``||A||_{∞→1} ≤ Σ|A_ab|``) and ``λ_max(H̄)`` for l_2 (``|v^T A u| ≤ |v|^T H̄ |u|``).
   ELU's σ'' jumps at 0; σ' is still Lipschitz and, along any segment, ``d/dt σ'(z(t)) = s(t) z'(t)`` a.e.
   with ``s(t)`` in the hull of the one-sided σ'' values, which the interval contains, so the bound holds.

With linear propagation (``method="linear"``) the pre-activation intervals are also intersected with
forward linear bounds, the logits with a backward CROWN pass (:mod:`robustmix.certify.linear`), and, for
logit outputs of small networks (``MAX_GRADIENT_FORM_ENTRIES``), the gradient intervals with linear bounds
of the gradient itself (:mod:`robustmix.certify.gradient`), which also give lines of its norm
(:meth:`BallBounds.grad_norm_lines`).

Ranges of σ, σ', σ'' over an interval are exact up to rounding: they are taken at the endpoints and at the
interior critical points (roots of the next derivative, analytic or found once by bisection to 1e-15).
Every result is finally widened by a relative ``1e-9`` (and absolute ``1e-12``) to absorb float64 rounding.
The bounds are about the real-valued function the layers define; float32 evaluation error of the deployed
model is not part of them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .._utils.checks import check_choice
from .._utils.norms import Norm, dual_norm
from .gradient import ActivationRecord, GradientForms, GradientGraph, centre_record
from .linear import (
    LinearForm,
    Region,
    Relaxation,
    backward,
    ball_max,
    ball_min,
    fit_off_identity,
    grid,
    reach,
    relax,
    relax_slope,
    softplus_jump,
)
from .operators import apply, operators
from .regions import BoxInBall

__all__ = [
    "BallBounds", "BoundMethod", "CompiledNetwork", "compile_network", "activation_ranges", "activation_slope", "slope_lines",
    "SUPPORTED_LAYERS",
]

_F64 = torch.float64
#: ``"linear"``: intervals intersected with linear bound propagation; ``"interval"``: intervals only.
BoundMethod = Literal["linear", "interval"]
_REL, _ABS = 1e-9, 1e-12
#: Largest dense matrix (entries) an affine run may become; bigger models need the RS certificates.
MAX_DENSE_ENTRIES = 2**25
#: Forward linear bounds of the input gradients carry a ``[d]`` row per unit and output: they are computed
#: when the widest layer needs at most this many entries per example (small networks; the demo CNN needs
#: 5x more and would be about 5x slower). Without them the lines of the gradient's norm still come from
#: the backward pass, on interval ranges of ``u`` with McCormick's planes picked at the centre (looser).
#: Raise it to trade time for tighter Theorem 2 certificates on bigger networks.
MAX_GRADIENT_FORM_ENTRIES = 2**18

_AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)
_ACTS = (nn.Softplus, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.ReLU)
SUPPORTED_LAYERS = tuple(t.__name__ for t in (*_AFFINE, *_ACTS, nn.Softmax, nn.Sequential))


# -- scalar activations: values of σ, σ', σ'' and their ranges over intervals ---------------------------
def _phi(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _Phi(z: Tensor) -> Tensor:
    return torch.special.ndtr(z)


def _roots(fn: Callable[[Tensor], Tensor], lo: float = -40.0, hi: float = 40.0, step: float = 1e-3) -> list[float]:
    """Sign changes of ``fn`` on a grid over [lo, hi], refined by bisection to ~1e-15."""
    z = torch.arange(lo, hi, step, dtype=_F64)
    v = fn(z)
    idx = ((v[:-1] > 0) != (v[1:] > 0)).nonzero().flatten().tolist()
    roots = []
    for i in idx:
        a, b = z[i].clone(), z[i + 1].clone()
        fa = fn(a)
        for _ in range(80):
            m = (a + b) / 2
            fm = fn(m)
            if (fm > 0) == (fa > 0):
                a, fa = m, fm
            else:
                b = m
        roots.append(float((a + b) / 2))
    return roots


@dataclass(frozen=True)
class _Smooth:
    """A C² activation: derivatives ``d[0..2]`` and interior critical points of each."""

    d: tuple[Callable[[Tensor], Tensor], ...]
    crit: tuple[tuple[float, ...], ...]


def _silu_parts() -> _Smooth:
    s = torch.sigmoid

    def d0(z: Tensor) -> Tensor:
        return z * s(z)

    def d1(z: Tensor) -> Tensor:
        return s(z) * (1 + z * (1 - s(z)))

    def d2(z: Tensor) -> Tensor:
        q = s(z) * (1 - s(z))
        return q * (2 + z * (1 - 2 * s(z)))

    def d3(z: Tensor) -> Tensor:
        q = s(z) * (1 - s(z))
        return q * ((1 - 2 * s(z)) * (3 + z * (1 - 2 * s(z))) - 2 * z * q)

    return _Smooth((d0, d1, d2), (tuple(_roots(d1)), tuple(_roots(d2)), tuple(_roots(d3))))


def _gelu_parts() -> _Smooth:
    def d0(z: Tensor) -> Tensor:
        return z * _Phi(z)

    def d1(z: Tensor) -> Tensor:
        return _Phi(z) + z * _phi(z)

    def d2(z: Tensor) -> Tensor:
        return _phi(z) * (2 - z * z)

    r2 = math.sqrt(2.0)
    return _Smooth((d0, d1, d2), (tuple(_roots(d1)), (-r2, r2), (-2.0, 0.0, 2.0)))


def _tanh_parts() -> _Smooth:
    c = math.atanh(1 / math.sqrt(3.0))
    return _Smooth(
        (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, lambda z: -2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2)),
        ((), (0.0,), (-c, c)),
    )


def _sigmoid_parts() -> _Smooth:
    c = math.log(2 + math.sqrt(3.0))
    s = torch.sigmoid
    return _Smooth(
        (s, lambda z: s(z) * (1 - s(z)), lambda z: s(z) * (1 - s(z)) * (1 - 2 * s(z))),
        ((), (0.0,), (-c, c)),
    )


def _softplus_parts(beta: float) -> _Smooth:
    s = torch.sigmoid
    return _Smooth(
        (
            lambda z: torch.nn.functional.softplus(z * beta) / beta,
            lambda z: s(beta * z),
            lambda z: beta * s(beta * z) * (1 - s(beta * z)),
        ),
        ((), (), (0.0,)),
    )


_CACHE: dict[str, _Smooth] = {}


def _smooth(name: str) -> _Smooth:
    if name not in _CACHE:
        _CACHE[name] = {"silu": _silu_parts, "gelu": _gelu_parts, "tanh": _tanh_parts, "sigmoid": _sigmoid_parts}[name]()
    return _CACHE[name]


def _range(fn: Callable[[Tensor], Tensor], crit: tuple[float, ...], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """min/max of ``fn`` over [lo, hi]: endpoints and critical points clamped into the interval."""
    vals = [fn(lo), fn(hi)] + [fn(torch.clamp(torch.full_like(lo, c), lo, hi)) for c in crit]
    stack = torch.stack(vals)
    return stack.min(0).values, stack.max(0).values


def _elu(a: float) -> Callable[[Tensor], Tensor]:
    return lambda z: torch.where(z > 0, z, a * torch.expm1(z.clamp(max=0)))


def _elu_slope(a: float) -> Callable[[Tensor], Tensor]:
    return lambda z: torch.where(z > 0, torch.ones_like(z), a * torch.exp(z.clamp(max=0)))


def activation_slope(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """σ' of an elementwise activation, as a function (ReLU: 0 at the kink, as autograd has it)."""
    if isinstance(layer, nn.ReLU):
        return lambda z: (z > 0).to(z.dtype)
    if isinstance(layer, nn.ELU):
        return _elu_slope(float(layer.alpha))
    if isinstance(layer, nn.Softplus):
        return _softplus_parts(float(layer.beta)).d[1]
    if isinstance(layer, nn.GELU):
        return _smooth("gelu").d[1]
    return _smooth({nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}[type(layer)]).d[1]


def slope_lines(layer: nn.Module, lo: Tensor, hi: Tensor, slopes: tuple[Tensor, Tensor], kink: Tensor) -> Relaxation:
    """Lines below and above σ' on each unit's ``[lo, hi]`` (:func:`robustmix.certify.linear.relax_slope`),
    with σ'' bounded cell by cell; ``slopes``, ``kink``: the range of σ' and the kinks from
    :func:`activation_ranges` (constant lines where σ' jumps)."""

    def curved(lo: Tensor, hi: Tensor, s_lo: Tensor, s_hi: Tensor, kink: Tensor) -> Relaxation:
        z = grid(lo, hi)
        _, _, cell_d2, cell_kink = activation_ranges(layer, z[..., :-1], z[..., 1:])
        flat = kink | cell_kink.any(-1) | (hi - lo < 1e-9)
        return relax_slope(activation_slope(layer), z, cell_d2, (s_lo, s_hi), flat, softplus_jump(layer, order=1))

    return fit_off_identity(layer, lo, (0.0, 1.0, 0.0, 1.0), curved, lo, hi, *slopes, kink)


Ranges = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor], Tensor]


def activation_ranges(layer: nn.Module, lo: Tensor, hi: Tensor) -> Ranges:
    """Intervals of σ, σ' and σ'' over ``[lo, hi]`` (elementwise) and a mask of units where σ is not C¹.

    The mask marks ReLU units (and ELU units with ``alpha != 1``) whose interval contains the kink at 0:
    there the gradient is discontinuous and the theorems' constants do not exist.
    """
    kink = torch.zeros_like(lo, dtype=torch.bool)
    if isinstance(layer, nn.ReLU):
        kink = (lo <= 0) & (hi >= 0) & ~((lo == 0) & (hi == 0))
        on = (lo > 0).to(_F64)
        zero = torch.zeros_like(lo)
        d1 = (torch.where(kink, zero, on), torch.where(kink, torch.ones_like(lo), on))
        return (lo.clamp(min=0), hi.clamp(min=0)), d1, (zero, zero), kink
    if isinstance(layer, nn.ELU):
        a = float(layer.alpha)
        if not a > 0:
            raise NotImplementedError(f"ELU with alpha={a} is not monotone; only alpha > 0 is supported")

        elu, d1f = _elu(a), _elu_slope(a)
        if a != 1.0:
            kink = (lo <= 0) & (hi > 0)
        d1 = (torch.minimum(d1f(lo), d1f(hi)), torch.maximum(d1f(lo), d1f(hi)))
        if a != 1.0:
            d1 = (torch.where(kink, torch.minimum(d1[0], torch.full_like(lo, a)), d1[0]),
                  torch.where(kink, torch.maximum(d1[1], torch.full_like(lo, a)), d1[1]))
        left_lo, left_hi = a * torch.exp(lo.clamp(max=0)), a * torch.exp(hi.clamp(max=0))
        d2_lo = torch.where(hi <= 0, left_lo, torch.zeros_like(lo))
        d2_hi = torch.where(lo > 0, torch.zeros_like(lo), left_hi)
        return (elu(lo), elu(hi)), d1, (d2_lo, d2_hi), kink
    if isinstance(layer, nn.Softplus):
        parts = _softplus_parts(float(layer.beta))
    elif isinstance(layer, nn.GELU):
        if layer.approximate != "none":
            raise NotImplementedError("GELU(approximate='tanh') is not supported; use the exact GELU()")
        parts = _smooth("gelu")
    else:
        parts = _smooth({nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}[type(layer)])
    d0 = _range(parts.d[0], tuple(parts.crit[0]), lo, hi)
    d1 = _range(parts.d[1], tuple(parts.crit[1]), lo, hi)
    d2 = _range(parts.d[2], tuple(parts.crit[2]), lo, hi)
    # torch's Softplus is z itself above its threshold: steps in value and up to slope 1 there (0 otherwise)
    jump, slope_jump = softplus_jump(layer), softplus_jump(layer, order=1)
    return (d0[0] - jump, d0[1] + jump), (d1[0], d1[1] + slope_jump), d2, kink


# -- interval helpers ------------------------------------------------------------------------------------
def _imul(alo: Tensor, ahi: Tensor, blo: Tensor, bhi: Tensor) -> tuple[Tensor, Tensor]:
    p = torch.stack([alo * blo, alo * bhi, ahi * blo, ahi * bhi])
    return p.min(0).values, p.max(0).values


def _matmul_exact(W: Tensor, lo: Tensor, hi: Tensor, W_abs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``W`` (dense or sparse) applied to each example of an interval batch ``X`` ``[B, n]`` or ``[B, n, k]``
    (center-radius form)."""
    c, r = (lo + hi) / 2, (hi - lo) / 2
    cc, rr = apply(W, c), apply(W.abs() if W_abs is None else W_abs, r)
    return cc - rr, cc + rr


def _abs_max(lo: Tensor, hi: Tensor) -> Tensor:
    return torch.maximum(lo.abs(), hi.abs())


def _widen(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    return _down(lo), _up(hi)


def _down(v: Tensor) -> Tensor:
    return v - _REL * v.abs() - _ABS


def _up(v: Tensor) -> Tensor:
    return v + _REL * v.abs() + _ABS


# -- the compiled network ----------------------------------------------------------------------------------
@dataclass
class _Affine:
    """A run of affine layers: ``z = W a + b``, with the four operators the propagation multiplies by (``W``,
    ``|W|`` and their transposes; :func:`robustmix.certify.operators.operators`)."""

    W: Tensor
    b: Tensor
    run: list[nn.Module] = field(repr=False)
    in_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self.op, self.op_abs, self.opT, self.opT_abs = operators(self.W, self.run, self.in_shape)


@dataclass
class BallBounds:
    """Bounds over ``B_p(x, ε)`` for each requested output ``f_k`` (rows in the order of ``classes``).

    ``value``: intervals of ``f_k``; ``grad``: elementwise intervals of ``∇f_k`` ``[K, d]``;
    ``hess``: nonnegative ``H̄_k`` ``[K, d, d]`` with ``|∇²f_k| ≤ H̄_k`` everywhere on the ball;
    ``smooth``: False when a ReLU/ELU kink lies inside the ball (gradient bounds then mean nothing).
    From :meth:`CompiledNetwork.batch_bounds` every field has a leading batch dim (``eps`` and ``smooth``
    are then tensors ``[B]``); :meth:`example` gives one example's bounds.
    """

    norm: Norm
    eps: float | Tensor | BoxInBall
    value_lo: Tensor
    value_hi: Tensor
    grad_lo: Tensor
    grad_hi: Tensor
    hess: Tensor
    smooth: bool | Tensor
    center: Tensor | None = field(default=None, repr=False)
    stages: list | None = field(default=None, repr=False)
    relaxations: list[Relaxation] | None = field(default=None, repr=False)
    #: the relaxed gradient computation and the gradient at the centre ``[B, K, d]`` (small logit networks)
    gradients: tuple[GradientGraph, Tensor] | None = field(default=None, repr=False)
    _norm_ranges: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def example(self, k: int) -> BallBounds:
        """Example ``k`` of batched bounds; its linear relaxation keeps a batch of one."""
        assert isinstance(self.eps, Tensor) and isinstance(self.smooth, Tensor)
        relaxations = None
        if self.relaxations is not None:
            relaxations = [Relaxation(*(t[k : k + 1] for t in (r.s_lo, r.b_lo, r.s_hi, r.b_hi))) for r in self.relaxations]
        return BallBounds(
            self.norm, float(self.eps[k]), self.value_lo[k], self.value_hi[k], self.grad_lo[k], self.grad_hi[k],
            self.hess[k], bool(self.smooth[k]), None if self.center is None else self.center[k : k + 1],
            self.stages, relaxations,
            None if self.gradients is None else (self.gradients[0].example(k), self.gradients[1][k : k + 1]),
        )

    def logit_form(self, C: Tensor) -> LinearForm:
        """Linear bounds ``A x' + c`` of ``C z`` on one example's ball, ``z`` the network's logits and ``C``
        ``[K, c]`` (CROWN's backward pass through the lines this ball gave every activation)."""
        if self.stages is None or self.relaxations is None:
            raise ValueError("these bounds carry no linear relaxation (propagation='interval')")
        return backward(C.to(_F64)[None], self.stages, self.relaxations).example(0)

    def ball_lower(self, form: LinearForm) -> Tensor:
        """The smallest value of one example's ``form`` lower lines over its ball (widened for rounding)."""
        assert self.center is not None
        return _down(ball_min(form.A_lo, form.c_lo, self.center[0], float(self.eps), self.norm))

    def abs_value_max(self) -> Tensor:
        """``K = sup |f_k|``."""
        return _up(_abs_max(self.value_lo, self.value_hi))

    def grad_norm_max(self, norm: Norm | None = None) -> Tensor:
        """``M = sup ||∇f_k||_{p*}``, p the ball's norm unless ``norm`` names another one: from the gradient's
        intervals and, where the bounds carry linear bounds of the gradient, from those over the whole ball
        (:meth:`grad_norm_lines`), whichever is smaller."""
        M = _up(dual_norm(_abs_max(self.grad_lo, self.grad_hi), norm or self.norm, batch_dims=None))
        if self.gradients is None:
            return M
        return torch.minimum(M, _up(self._linear_norm_range(norm or self.norm)[1]))

    def grad_norm_min(self, norm: Norm | None = None) -> Tensor:
        """``m = inf ||∇f_k||_{p*}`` (0 when the gradient box contains 0), p as in :meth:`grad_norm_max`."""
        gap = torch.where(self.grad_lo > 0, self.grad_lo, torch.where(self.grad_hi < 0, -self.grad_hi, 0.0))
        m = (dual_norm(gap, norm or self.norm, batch_dims=None) * (1 - _REL)).clamp(min=0)
        if self.gradients is None:
            return m
        return torch.maximum(m, _down(self._linear_norm_range(norm or self.norm)[0]).clamp(min=0))

    def _linear_norm_range(self, norm: Norm) -> tuple[Tensor, Tensor]:
        """Bounds of ``||∇f_k||_{p*}`` over the ball: the extremes of :meth:`grad_norm_lines` there (computed
        once per norm)."""
        if norm not in self._norm_ranges:
            (A_lo, c_lo), (A_hi, c_hi) = self.grad_norm_lines(norm)
            x0, e = self.region()
            shape = self.grad_lo.shape[:-1]
            low = ball_min(A_lo, c_lo, x0, e, self.norm).clamp(min=0)
            self._norm_ranges[norm] = low.reshape(shape), ball_max(A_hi, c_hi, x0, e, self.norm).reshape(shape)
        return self._norm_ranges[norm]

    def grad_norm_lines(self, norm: Norm | None = None) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Lines ``a_lo·x' + c_lo ≤ ||∇f_k(x')||_{p*} ≤ a_hi·x' + c_hi`` on the whole ball (``a`` ``[B, K, d]``,
        ``c`` ``[B, K]``; a batch of one for :meth:`example`), from lines of linear functionals of the gradient
        (:meth:`robustmix.certify.gradient.GradientGraph.lower`):

        * below, ``||g||_{p*} ≥ s·g`` for any ``s`` with ``||s||_p ≤ 1``, with ``s`` the sign (l_1) or the
          direction (l_2) of the gradient at the centre;
        * above, with ``g_a ∈ [l_a, u_a]`` on the ball: ``|g_a| ≤`` the chord of ``|·|`` on ``[l_a, u_a]`` (l_1);
          for l_2, ``g_a² ≤ (l_a + u_a) g_a - l_a u_a`` (the chord of the square) bounds ``||g||²`` by a line
          ``Q``, and ``√Q ≤ √q + (Q - q) / (2√q)`` with ``q`` the largest value of ``Q`` on the ball.

        The lines hold up to float64 rounding; :meth:`grad_norm_min` and :meth:`grad_norm_max` widen their
        extremes.
        """
        if self.gradients is None:
            raise ValueError("these bounds carry no linear bounds of the gradient (interval propagation, softmax, or too wide)")
        graph, at_centre = self.gradients
        norm = norm or self.norm
        check_choice("norm", norm, ("linf", "l2"))
        x0, e = self.region()
        lo, hi = self.grad_lo.reshape(at_centre.shape), self.grad_hi.reshape(at_centre.shape)
        if norm == "linf":
            s = at_centre.sign()
            cross = (lo < 0) & (hi > 0)
            width = (hi - lo).clamp(min=1e-300)
            k = torch.where(cross, (hi + lo) / width, torch.where(lo >= 0, 1.0, -1.0))
            extra = torch.where(cross, -2 * hi * lo / width, 0.0).sum(-1)
        else:
            s = at_centre / at_centre.norm(dim=-1, keepdim=True).clamp(min=1e-300)
            k, extra = lo + hi, -(lo * hi).sum(-1)
        A, c = graph.lower(torch.stack([s, -k], -2))  # [B, K, 2, d]: s·g from below, k·g from above
        below, (A_hi, c_hi) = (A[..., 0, :], c[..., 0]), (-A[..., 1, :], -c[..., 1] + extra)
        if norm == "linf":
            return below, (A_hi, c_hi)
        root = ball_max(A_hi, c_hi, x0, e, self.norm).clamp(min=1e-300).sqrt()
        return below, (A_hi / (2 * root[..., None]), root / 2 + c_hi / (2 * root))

    def region(self) -> tuple[Tensor, Region]:
        """The centre ``[B, d]`` and the radius (a float, ``[B, 1]``, box half-widths ``[B, d]``, or a
        :class:`~robustmix.certify.regions.BoxInBall`) of the ball."""
        assert self.center is not None
        eps = self.eps
        return self.center, eps if not isinstance(eps, Tensor) else (eps[:, None] if eps.dim() == 1 else eps)

    def grad_lipschitz(self) -> Tensor:
        """``Λ ≥ sup ||∇²f_k||_{p→p*}``: Lipschitz constant of ``∇f_k`` on the ball (l_p to its dual)."""
        if self.norm == "linf":
            return _up(self.hess.sum((-2, -1)))
        sym = (self.hess + self.hess.transpose(-2, -1)) / 2
        return _up(torch.linalg.eigvalsh(sym)[..., -1].clamp(min=0))


class CompiledNetwork:
    """A module turned into alternating dense affine maps and elementwise activations (float64).

    Build with :func:`compile_network`; :meth:`bounds` computes :class:`BallBounds` over a ball.
    """

    def __init__(self, stages: list[_Affine | nn.Module], softmax: bool, in_shape: tuple[int, ...]) -> None:
        self.stages = stages
        self.softmax = softmax
        self.in_shape = in_shape
        self.d = math.prod(in_shape)
        self.widest = max(st.W.shape[0] for st in stages if isinstance(st, _Affine))

    def __call__(self, x: Tensor) -> Tensor:
        """Plain float64 evaluation ``[B, ...] -> [B, c]`` (used for margins at x and by tests)."""
        a = x.reshape(x.shape[0], -1).to(_F64)
        for st in self.stages:
            a = a @ st.W.T + st.b if isinstance(st, _Affine) else st(a)
        return a.softmax(-1) if self.softmax else a

    def bounds(
        self,
        x: Tensor,
        eps: float,
        norm: Norm,
        classes: list[int] | None = None,
        functionals: Tensor | None = None,
        method: BoundMethod = "linear",
    ) -> BallBounds:
        """Sound bounds on outputs ``classes`` (default all), their gradients and Hessians over ``B_p(x, eps)``.

        ``method="linear"`` (default) intersects the intervals with linear bound propagation
        (:mod:`robustmix.certify.linear`: forward linear bounds of every pre-activation, a backward pass
        for the logits), always at least as tight; ``"interval"`` uses interval and mean-value bounds only.

        ``functionals`` ``[K, c]`` (logit outputs only) bounds ``f = C z`` instead, e.g. a row ``e_i - e_j`` for
        the margin of two logits.
        """
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be finite and >= 0, got {eps}")
        x0 = x.reshape(-1).to(_F64)
        if x0.numel() != self.d:
            raise ValueError(f"x has {x0.numel()} entries but the network expects shape {self.in_shape}")
        eps_t = torch.tensor([float(eps)], dtype=_F64)
        return self.batch_bounds(x0[None], eps_t, norm, classes, functionals, method).example(0)

    def batch_bounds(
        self,
        xs: Tensor,
        eps: Tensor | BoxInBall,
        norm: Norm,
        classes: list[int] | None = None,
        functionals: Tensor | None = None,
        method: BoundMethod = "linear",
    ) -> BallBounds:
        """:meth:`bounds` for a batch ``xs`` ``[B, ...]``, each example with its own radius ``eps`` ``[B]``, in
        one pass (every tensor of the result gains a leading batch dim; :meth:`BallBounds.example` picks one).

        With ``norm="linf"``, ``eps`` may also be ``[B, d]``: per-coordinate half-widths of a box around each
        example (input splitting, :mod:`robustmix.certify.splitting`); with ``norm="l2"``, a
        :class:`~robustmix.certify.regions.BoxInBall`: such boxes cut to an l_2 ball. The Hessian-based
        fields then hold over that region, and :meth:`BallBounds.example` is not available.
        """
        check_choice("norm", norm, ("linf", "l2"))
        check_choice("method", method, ("linear", "interval"))
        linear = method == "linear"
        x0 = xs.reshape(xs.shape[0], -1).to(_F64)
        if isinstance(eps, BoxInBall):
            if norm != "l2" or eps.halves.shape != x0.shape or x0.shape[1] != self.d:
                raise ValueError(f"a BoxInBall needs norm='l2' and [B, {self.d}] boxes; got {tuple(eps.halves.shape)}, {norm}")
            e = eps
        else:
            eps = torch.as_tensor(eps, dtype=_F64)
            box = eps.dim() == 2
            if box and (norm != "linf" or eps.shape != x0.shape):
                raise ValueError(f"box half-widths must be [B, {self.d}] with norm='linf'; got {tuple(eps.shape)}, {norm}")
            eps = eps if box else eps.reshape(-1)
            if x0.shape[1] != self.d or eps.shape[0] != x0.shape[0]:
                raise ValueError(
                    f"xs must be [B, {self.in_shape}] with one radius per example; got {tuple(xs.shape)} and {eps.shape[0]} radii"
                )
            if not bool((torch.isfinite(eps) & (eps >= 0)).all()):
                raise ValueError(f"eps must be finite and >= 0, got {eps.tolist()}")
            e = eps if box else eps[:, None]
        n_batch = x0.shape[0]
        outputs = self.stages[-1].W.shape[0]
        rows = (outputs if classes is None else len(classes)) if functionals is None else functionals.shape[0]
        # linear bounds of gradient functionals for logit outputs (an affine network's gradient is a constant,
        # exact already); the forward bounds of every u, which pick the planes and tighten the intervals,
        # where they are affordable
        gradient_graph = linear and not self.softmax and len(self.stages) > 1
        gradient_forms = gradient_graph and rows * self.d * self.widest <= MAX_GRADIENT_FORM_ENTRIES
        first = self.stages[0]
        assert isinstance(first, _Affine)
        zc = x0 @ first.W.T + first.b
        zlo, zhi = ball_min(first.W, first.b, x0, e, norm), ball_max(first.W, first.b, x0, e, norm)
        Jlo = Jhi = first.W.expand(n_batch, *first.W.shape)
        z_at_x = zc
        # per activation: the intervals of σ' and σ'', the J interval of its input, its lines (σ, σ' and, with
        # forward gradient bounds, σ''s bounds in the input) and its pre-activation at the centre
        saved = []
        relaxations: list[Relaxation] = []
        lin = LinearForm.exact(Jlo, first.b.expand(n_batch, -1))  # forward linear bounds of the current layer
        smooth = torch.ones(n_batch, dtype=torch.bool)
        for st in self.stages[1:]:
            if isinstance(st, _Affine):
                alo, ahi = _matmul_exact(st.op, zlo, zhi, st.op_abs)
                alo, ahi = alo + st.b, ahi + st.b
                Jlo, Jhi = _matmul_exact(st.op, Jlo, Jhi, st.op_abs)
                z_at_x = apply(st.op, z_at_x) + st.b
                mv = reach(_abs_max(Jlo, Jhi), e, norm)
                zlo, zhi = torch.maximum(alo, z_at_x - mv), torch.minimum(ahi, z_at_x + mv)
                if linear:
                    lin = lin.through_affine(st.op, st.op_abs, st.b)
                    llo, lhi = lin.concretize(x0, e, norm)
                    zlo, zhi = torch.maximum(zlo, llo), torch.minimum(zhi, lhi)
            else:
                (v0, v1), d1, d2, kink = activation_ranges(st, zlo, zhi)
                smooth = smooth & ~kink.any(-1)
                slope = None
                if linear:
                    relaxations.append(relax(st, zlo, zhi, (v0, v1), d2, kink))
                    if gradient_graph:
                        lines = slope_lines(st, zlo, zhi, d1, kink)
                        slope = (relaxations[-1], lines, lin.through_activation(lines) if gradient_forms else None)
                    lin = lin.through_activation(relaxations[-1])
                saved.append((d1, d2, (Jlo, Jhi), slope, z_at_x))
                Jlo, Jhi = _imul(d1[0][..., None], d1[1][..., None], Jlo, Jhi)
                z_at_x = st(z_at_x)
                zlo, zhi = v0, v1
        c = zlo.shape[1]
        # the logits once more, by a backward linear pass from each logit (CROWN): the tightest of the three
        if linear:
            eye = torch.eye(c, dtype=_F64).expand(n_batch, c, c)
            flo, fhi = backward(eye, self.stages, relaxations).concretize(x0, e, norm)
            zlo, zhi = torch.maximum(zlo, flo), torch.minimum(zhi, fhi)
        if functionals is not None and (self.softmax or functionals.shape[-1] != c):
            raise ValueError(f"functionals must be [K, {c}] and need logit outputs")
        classes = list(range(c)) if classes is None else list(classes)
        K = len(classes) if functionals is None else functionals.shape[0]
        idx = torch.tensor(classes)
        hess = torch.zeros(n_batch, K, self.d, self.d, dtype=_F64)
        if self.softmax:
            vlo, vhi, ulo, uhi, B = _softmax_terms(zlo, zhi, idx)
            Ja = _abs_max(Jlo, Jhi)
            hess += Ja.transpose(-1, -2)[:, None] @ B @ Ja[:, None]
            glo, ghi = _imatvec(Jlo, Jhi, ulo, uhi)
        elif functionals is not None:
            C = functionals.to(_F64)
            vlo, vhi = _matmul_exact(C, zlo, zhi)
            if linear:
                clo, chi = backward(C.expand(n_batch, *C.shape), self.stages, relaxations).concretize(x0, e, norm)
                vlo, vhi = torch.maximum(vlo, clo), torch.minimum(vhi, chi)
            ulo = uhi = C.expand(n_batch, *C.shape)
            glo, ghi = _matmul_exact(C, Jlo, Jhi)
        else:
            vlo, vhi = zlo[:, idx], zhi[:, idx]
            ulo = uhi = torch.eye(c, dtype=_F64)[idx].expand(n_batch, K, c)
            glo, ghi = Jlo[:, idx], Jhi[:, idx]
        # backward pass: u = ∂f_k/∂(current activations), for K outputs at once; with linear propagation
        # also linear bounds of u (for logit outputs, whose top u is constant), which tighten its intervals
        # (and the gradient at the centre, for the lines of its norm)
        grads = GradientForms(x0, e, norm, ulo, self.stages) if gradient_forms else None
        records: list[ActivationRecord] = []  # without forward bounds: the planes picked at the centre
        at_centre = ulo
        for st in reversed(self.stages):
            if isinstance(st, _Affine):
                ulo, uhi = _matmul_exact(st.opT, ulo.transpose(1, 2), uhi.transpose(1, 2), st.opT_abs)
                ulo, uhi = ulo.transpose(1, 2), uhi.transpose(1, 2)
                if gradient_graph:
                    at_centre = apply(st.opT, at_centre.transpose(1, 2)).transpose(1, 2)
                if grads is not None:
                    ulo, uhi = grads.through_affine(st, ulo, uhi)
            else:
                d1, d2, (Jl, Jh), slope, z_x = saved.pop()
                slo, shi = _imul(d2[0][:, None], d2[1][:, None], ulo, uhi)
                Ja = _abs_max(Jl, Jh)
                hess += (Ja.transpose(-1, -2)[:, None] * _abs_max(slo, shi)[:, :, None, :]) @ Ja[:, None]
                before = ulo, uhi
                ulo, uhi = _imul(d1[0][:, None], d1[1][:, None], ulo, uhi)
                if not gradient_graph:
                    continue
                s_at_centre = activation_slope(st)(z_x)
                if grads is not None:
                    ulo, uhi = grads.through_slope(*slope, d1, before, ulo, uhi)
                else:
                    records.append(centre_record(slope[0], slope[1], d1, before, s_at_centre, at_centre))
                at_centre = at_centre * s_at_centre[:, None]
        glo, ghi = torch.maximum(glo, ulo), torch.minimum(ghi, uhi)
        graph = None
        if grads is not None:
            graph = grads.graph()
            glo, ghi = _component_bounds(graph, glo, ghi, x0, e, norm)
        elif gradient_graph:
            graph = GradientGraph(self.stages, records[::-1])
        vlo, vhi = _widen(vlo, vhi)
        glo, ghi = _widen(glo, ghi)
        if not linear:
            return BallBounds(norm, eps, vlo, vhi, glo, ghi, hess, smooth)
        return BallBounds(
            norm, eps, vlo, vhi, glo, ghi, hess, smooth, x0, self.stages, relaxations,
            None if graph is None else (graph, at_centre),
        )


def _component_bounds(
    graph: GradientGraph, glo: Tensor, ghi: Tensor, x0: Tensor, e: Tensor, norm: Norm
) -> tuple[Tensor, Tensor]:
    """The gradient intervals ``[B, K, d]`` intersected with each component's bounds by the backward pass."""
    B, K, d = glo.shape
    eye = torch.eye(d, dtype=_F64)
    A, c = graph.lower(torch.cat([eye, -eye])[None, None].expand(B, K, 2 * d, d).contiguous())
    low = ball_min(A.reshape(B, K * 2 * d, d), c.reshape(B, -1), x0, e, norm).reshape(B, K, 2 * d)
    return torch.maximum(glo, low[..., :d]), torch.minimum(ghi, -low[..., d:])


def _imatvec(Jlo: Tensor, Jhi: Tensor, ulo: Tensor, uhi: Tensor) -> tuple[Tensor, Tensor]:
    """Intervals of ``u_k^T J`` for interval ``J`` ``[B, c, d]`` and interval rows ``u`` ``[B, K, c]``."""
    a, b = Jlo[:, None], Jhi[:, None]
    p, q = ulo[..., None], uhi[..., None]
    prods = torch.stack([p * a, p * b, q * a, q * b])
    return prods.min(0).values.sum(-2), prods.max(0).values.sum(-2)


def _softmax_terms(zlo: Tensor, zhi: Tensor, idx: Tensor) -> tuple[Tensor, ...]:
    """Softmax over logit intervals ``[B, c]``: intervals of p_k, of ∂p_k/∂z ``[B, K, c]``, and
    ``B_k ≥ |∇²_z p_k|`` ``[B, K, c, c]``.

    ``p_k`` increases in ``z_k`` and decreases in ``z_j``, so its extremes are at opposite corners.
    ``∂p_k/∂z = p_k (e_k - p)`` and ``∇²_z p_k = p_k [(e_k - p)(e_k - p)^T - diag(p) + p p^T]``.
    """
    c = zlo.shape[-1]
    eye = torch.eye(c, dtype=_F64)
    diag = eye.bool()
    lo_mat = torch.where(diag, zlo[:, None, :], zhi[:, None, :])  # row k: z_k low, others high
    hi_mat = torch.where(diag, zhi[:, None, :], zlo[:, None, :])
    plo = lo_mat.softmax(-1).diagonal(dim1=-2, dim2=-1)
    phi = hi_mat.softmax(-1).diagonal(dim1=-2, dim2=-1)
    # ∂p_k/∂z_j: k == j: p_k(1 - p_k) (range of t(1-t) on [plo, phi]); k != j: -p_k p_j
    mid = torch.clamp(torch.full_like(plo, 0.5), plo, phi)
    t = torch.stack([plo * (1 - plo), phi * (1 - phi), mid * (1 - mid)])
    diag_lo, diag_hi = t.min(0).values, t.max(0).values
    off_lo, off_hi = -phi[:, :, None] * phi[:, None, :], -plo[:, :, None] * plo[:, None, :]
    ulo = torch.where(diag, diag_lo[:, :, None].expand(-1, c, c), off_lo)
    uhi = torch.where(diag, diag_hi[:, :, None].expand(-1, c, c), off_hi)
    dev = torch.maximum((eye - plo[:, None, :]).abs(), (eye - phi[:, None, :]).abs())  # |δ_ka - p_a| max
    outer = (phi[:, :, None] * phi[:, None, :])[:, None]
    B = phi[:, :, None, None] * (dev[..., :, None] * dev[..., None, :] + torch.diag_embed(phi)[:, None] + outer)
    return plo[:, idx], phi[:, idx], ulo[:, idx], uhi[:, idx], B[:, idx]


# -- building -----------------------------------------------------------------------------------------------
def _flatten_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in _flatten_modules(child)]
    return [model]


def _check_layer(m: nn.Module) -> None:
    if isinstance(m, nn.Softplus) and float(m.threshold) != 20.0:
        raise NotImplementedError(
            f"Softplus(threshold={m.threshold}) switches to z with a step of {softplus_jump(m):.3g}; only the "
            "default threshold 20 (a step of about 2e-9, accounted for) is supported"
        )
    if isinstance(m, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)) and m.training:
        raise ValueError(f"{type(m).__name__} is in training mode; call .eval() before certifying")
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not m.track_running_stats:
        raise NotImplementedError(f"{type(m).__name__} without running statistics is not affine; cannot bound it")
    if not isinstance(m, (*_AFFINE, *_ACTS, nn.Softmax)):
        raise NotImplementedError(
            f"layer {type(m).__name__} is not supported by the bound propagation; supported: {', '.join(SUPPORTED_LAYERS)}"
        )


def _dense(run: list[nn.Module], shape: tuple[int, ...]) -> tuple[_Affine, tuple[int, ...]]:
    """The dense matrix of a run of affine layers on inputs of ``shape`` (columns = images of basis vectors)."""
    seq = copy.deepcopy(nn.Sequential(*run)).double()  # never convert the caller's modules
    d = math.prod(shape)
    with torch.no_grad():
        b = seq(torch.zeros(1, *shape, dtype=_F64))
        out_shape = tuple(b.shape[1:])
        if d * b[0].numel() > MAX_DENSE_ENTRIES:
            raise ValueError(
                f"an affine block maps {d} to {b[0].numel()} values: too large for dense bound propagation "
                f"(limit {MAX_DENSE_ENTRIES} entries); use robustmix.certify.certify_mixture certificates for large models"
            )
        cols = [seq(e.reshape(-1, *shape)) for e in torch.eye(d, dtype=_F64).split(256)]
        W = (torch.cat(cols).reshape(d, -1) - b.reshape(1, -1)).T.contiguous()
    return _Affine(W, b.reshape(-1), run, shape), out_shape


def compile_network(
    model: nn.Module, input_shape: tuple[int, ...], output: Literal["logit", "prob"] = "logit"
) -> CompiledNetwork:
    """Turn ``model`` (a possibly nested ``nn.Sequential``) into a :class:`CompiledNetwork` in float64.

    ``input_shape``: one sample's shape, e.g. ``(1, 8, 8)``. ``output="prob"`` appends a softmax (the mixed
    quantity in ``space="prob"``). Raises ``NotImplementedError`` naming the first unsupported layer.
    """
    check_choice("output", output, ("logit", "prob"))
    layers = _flatten_modules(model)
    for m in layers:
        _check_layer(m)
    softmax = output == "prob"
    for n, m in enumerate(layers):
        if isinstance(m, nn.Softmax):
            if n != len(layers) - 1 or softmax or m.dim not in (1, -1, None):
                raise NotImplementedError("Softmax is supported once, as the last layer over the class dim")
            softmax = True
    layers = [m for m in layers if not isinstance(m, nn.Softmax)]
    stages: list[_Affine | nn.Module] = []
    shape = tuple(input_shape)
    cur: tuple[int, ...] = shape
    run: list[nn.Module] = []
    for m in [*layers, None]:
        if m is not None and isinstance(m, _AFFINE):
            run.append(m)
            continue
        if run or not stages or not isinstance(stages[-1], _Affine):
            aff, cur = _dense(run or [nn.Identity()], cur)
            stages.append(aff)
            run = []
        if m is not None:
            stages.append(m)  # elementwise: the shape is unchanged
    return CompiledNetwork(stages, softmax, shape)
