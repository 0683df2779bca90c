"""Certified robust radii of the mixture: Theorem 1 (K-NN oracle, eq. 3-4) and Theorem 2 (robust network).

**What is certified.** ``certified_radius(model, x, i, j)`` returns ``r`` such that for every ``δ`` with
``||δ||_p ≤ r`` class ``j`` does not score strictly above class ``i`` (more precisely: the sign of
``out_i - out_j`` at ``x`` is kept, strictly for ``||δ||_p < r``), for the real-valued function the
model's layers define, under the theorem's assumptions. Supported configurations of
:class:`~robustmix.smoothing.AdaptiveSmoothing`:

* ``mode="jacobian"``, fixed ``0 < α < ∞``, differentiable ``h``: Theorem 2 with the code's
  ``R_k = ||∇g_k||_{p*} / (||∇h_k||_{p*} + eps_c)``: every ``m^h`` / ``M^h`` of the paper becomes
  ``m^h + eps_c`` / ``M^h + eps_c`` (the proof in appendix B.2 goes through unchanged with ``||∇h|| + eps_c``
  in place of ``||∇h||``, and no ``m^h > 0`` assumption is then needed).
* ``mode="jacobian"``, fixed ``0 < α < ∞``, ``h`` a uniform-vote :class:`~robustmix.knn.KNNClassifier`:
  Theorem 1, with h's constancy on the ball checked geometrically (:func:`knn_constant_on_ball`).
* ``mode="none"`` (fixed convex mix), ``α = 0`` (g alone) and ``α = ∞`` (h alone): a Lipschitz bound of the
  margin ``out_i - out_j`` over the ball.
* ``space="logit"`` and ``space="prob"`` (then g, h are the softmax probabilities, as the code mixes them;
  jacobian mode's renormalisation does not change the i-vs-j order).

Refused with a ``ValueError``: ``mode="argmax"`` (eq. 10 switches R between classes discontinuously),
a policy (α depends on x and no bound on its variation is available) unless ``method="empirical"``,
per-sample α tensors with more than one entry, logit scales other than 1 in gradient modes, and
randomized-smoothing ``h`` (use :mod:`robustmix.certify.randomized`, whose guarantee is probabilistic).

**Checked proofs.** Theorem 1 (appendix B.1): Lemmas 4-6 hold as stated when ``L_k`` satisfies eq. 3,
``|h_k| ≤ 1`` and h is constant on the ball; we use ``L_k = Λ_k / (1 + α m_k)`` where ``Λ_k`` bounds the
Lipschitz constant of ``∇g_k`` (l_p to l_p*) on the ball and ``m_k = inf ||∇g_k||_{p*}``: the numerator of
eq. 3 is at most ``Λ_k ||x' - x - δ||_p ≤ Λ_k ε``. Theorem 2 (appendix B.2): the stated ``C^(1)``, ``C^(2)``
follow from the proof (whose last display drops a denominator factor, which only loosens it); ``L^h``,
``L^g`` are only needed relative to the centre, and ``Λ`` bounds them.

**Search.** The constants depend on ε, so the radius is the largest ε (found to the precision of ``steps``
halvings, steered by the secant of the margin bounds where they are available: ``_search``) at which the
theorem's condition holds with constants bounded over ``B_p(x, ε)`` by
:mod:`robustmix.certify.bounds`, or (``propagation="linear"``, the default) at which linear bounds on the
mixture's margin itself stay positive with h's weight anywhere in the range the bounds on R allow
(``_margin_check``); with ``split_budget``, also at which that check passes on every box of a cover of
the ball (:mod:`robustmix.certify.splitting`). Only ε values whose condition was verified are ever returned.

**Empirical mode** (``method="empirical"``): constants estimated by sampling the ball, for models the bound
propagation cannot handle. Results carry ``certified=False`` and a warning in their repr: they are *not*
certificates.
"""

from __future__ import annotations

import copy
import math
import operator
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._utils.checks import check_choice
from .._utils.norms import dual_norm, primal_norm
from ..knn import KNNClassifier
from .bounds import BallBounds, BoundMethod, CompiledNetwork, _up, compile_network
from .randomized import RandomizedSmoothing
from .splitting import corner_rows, interval_lower, split_margin_check
from .theorems import (
    Theorem1Constants,
    Theorem2Constants,
    knn_constant_on_ball,
    theorem1_radius,
    theorem2_radius,
    weight_on_h,
)

__all__ = [
    "CertMethod",
    "CertResult",
    "CertifyReport",
    "CertifiableMixin",
    "certified_radius",
    "certified_radii",
    "certify",
]

#: How the theorems' constants are obtained: sound bound propagation, or sampling (not a certificate).
CertMethod = Literal["bounds", "empirical"]
_F64 = torch.float64


class CertifiableMixin:
    """Gives the mixture :meth:`certified_radius`; certificates accept instances of this class.

    :class:`~robustmix.smoothing.AdaptiveSmoothing` inherits it, so this layer never imports the mixture: it
    reads the mixture's ``g``, ``h``, ``alpha``, ``policy``, ``mode``, ``norm``, ``space``, ``eps_c`` and
    ``logit_scales`` and calls it.
    """

    def certified_radius(self, x: Tensor, i: int, j: int | Sequence[int] | None = None, **options: Any) -> CertResult:
        """The radius within which class ``i`` stays strictly above ``j`` (every other class when ``j`` is
        None) around ``x``; see :func:`robustmix.certify.certified_radius` (same options)."""
        return certified_radius(self, x, i, j, **options)  # type: ignore[arg-type]


# -- results ----------------------------------------------------------------------------------------------
@dataclass
class CertResult:
    """A radius and how it was obtained.

    ``radius``: for every ``δ`` with ``||δ||_p ≤ radius``, class ``i`` stays strictly above class ``j`` (every
    ``j`` in ``others``). It is 0 with ``certified=False`` when ``i`` is not strictly above them at ``x``
    itself; ``leader`` then names the strongest rival (``leader == i`` whenever ``i`` leads). ``margin`` is
    ``min_j (f_i - f_j)`` at ``x`` for the mixed quantity f (logits; in ``prob`` space the mixed
    probabilities, before jacobian mode's renormalisation): positive exactly when ``i`` leads. ``certified`` is True only for
    sound bounds on a leading class; empirical estimates have ``certified=False`` and are not certificates.
    """

    radius: float
    norm: str
    certified: bool
    method: str
    margin: float
    i: int
    others: tuple[int, ...]
    leader: int
    constants: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def __repr__(self) -> str:
        head = (
            f"CertResult(radius={self.radius:.6g}, norm={self.norm!r}, certified={self.certified}, "
            f"method={self.method!r}, margin={self.margin:.6g}, i={self.i}, others={self.others}, "
            f"leader={self.leader}"
        )
        if self.note:
            head += f", note={self.note!r}"
        if not self.certified and self.margin > 0:
            head += ", WARNING='empirical estimate, NOT a certificate'"
        return head + ")"


# -- per-model statistics over a ball ---------------------------------------------------------------------
@dataclass
class _Stats:
    K: Tensor  # sup |f_k|
    m: Tensor  # inf ||∇f_k||
    M: Tensor  # sup ||∇f_k||
    L: Tensor  # Lipschitz of ∇f_k
    bounds: BallBounds | None = None  # the sound bounds they came from (None for sampled estimates)


class _Model:
    """One of g, h seen as f = logits or probabilities, with its value/gradient at x and ball statistics."""

    def __init__(
        self,
        module: nn.Module,
        x: Tensor,
        norm: str,
        prob: bool,
        method: CertMethod,
        n_samples: int,
        seed: int,
        propagation: BoundMethod = "linear",
    ):
        self.norm, self.prob, self.method, self.propagation = norm, prob, method, propagation
        self.x = x.detach().to(_F64)
        self.n_samples, self.seed = n_samples, seed
        if method == "bounds":
            self.net = _compiled(module, tuple(x.shape[1:]), "prob" if prob else "logit")
            self.fn = self.net
        else:
            self.net = None
            mod = copy.deepcopy(module).to(_F64)
            self.fn = (lambda z: mod(z).softmax(-1)) if prob else mod
        self.value_x, grads = self._values_grads(self.x)
        self.grad_x = grads[0]
        self.grad_norm_x = dual_norm(grads[0], norm, batch_dims=None)

    def _values_grads(self, pts: Tensor) -> tuple[Tensor, Tensor]:
        out, grads = _outputs_and_gradients(self.fn, pts)
        return out[0] if pts.shape[0] == 1 else out, grads

    def stats(self, eps: float) -> _Stats | None:
        if self.net is not None:
            return self.stats_from(self.net.bounds(self.x, eps, self.norm, method=self.propagation))  # type: ignore[arg-type]
        return self._sampled_stats(eps)

    def stats_from(self, b: BallBounds) -> _Stats | None:
        """The constants from one example's sound bounds (None where a kink lies in the ball)."""
        eps = float(b.eps)
        if not b.smooth:
            return None
        lip = b.grad_lipschitz()
        m, M = b.grad_norm_min(), b.grad_norm_max()
        if self.propagation == "linear":
            # ∇f moves by at most Λ·ε from its value at x (Λ: the gradient's Lipschitz bound on the ball)
            reach = _up(lip * eps)
            m = torch.maximum(m, (self.grad_norm_x - reach) * (1 - 1e-9)).clamp(min=0)
            M = torch.minimum(M, _up(self.grad_norm_x + reach))
        K = b.abs_value_max()
        bounds = (K, m, M, lip, b.value_lo, b.value_hi)
        if not all(bool(torch.isfinite(t).all()) for t in bounds):
            return None  # a bound that is not a number certifies nothing (fail closed)
        return _Stats(K, m, M, lip, b)

    def _sampled_stats(self, eps: float) -> _Stats:
        pts = _sample_ball(self.x, eps, self.norm, self.n_samples, self.seed)
        vals, grads = self._values_grads(pts)
        norms = dual_norm(grads, self.norm, batch_dims=None)
        dist = primal_norm(pts.flatten(1) - self.x.flatten(1), self.norm)
        ratio = dual_norm(grads - self.grad_x[None], self.norm, batch_dims=None) / dist[:, None].clamp_min(1e-30)
        lip = torch.where(dist[:, None] > 1e-12, ratio, torch.zeros_like(ratio)).max(0).values
        return _Stats(vals.abs().max(0).values, norms.min(0).values, norms.max(0).values, lip)

    def pair_grad_max(self, eps: float, i: int, j: int) -> float | None:
        """``sup ||∇(f_i - f_j)||_{p*}`` over the ball (a bound, or an estimate in empirical mode)."""
        if self.net is not None:
            if self.prob:
                st = self.stats(eps)
                return None if st is None else float(st.M[i] + st.M[j])
            C = torch.zeros(1, self.value_x.shape[0], dtype=_F64)
            C[0, i], C[0, j] = 1.0, -1.0
            b = self.net.bounds(self.x, eps, self.norm, functionals=C, method=self.propagation)  # type: ignore[arg-type]
            value = float(b.grad_norm_max()[0])
            return value if b.smooth and math.isfinite(value) else None
        pts = _sample_ball(self.x, eps, self.norm, self.n_samples, self.seed)
        _, grads = self._values_grads(pts)
        return float(dual_norm(grads[:, i] - grads[:, j], self.norm, batch_dims=None).max())


_COMPILED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[Tensor], CompiledNetwork]] = (
    weakref.WeakKeyDictionary()
)


def _compiled(module: nn.Module, shape: tuple[int, ...], output: str) -> CompiledNetwork:
    """``compile_network`` once per module, input shape and output while its weights are unchanged.

    Each hit compares a saved copy of every parameter and buffer with the module's current values
    (``torch.equal``), so weights changed in any way (an optimiser step, ``load_state_dict``, ``.data``)
    are always compiled afresh.
    """
    key = (shape, output, tuple(m.training for m in module.modules()))
    state = [t.detach() for t in (*module.parameters(), *module.buffers())]
    cached = _COMPILED.get(module)
    if cached is not None and cached[0] == key and len(cached[1]) == len(state):
        if all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(cached[1], state, strict=True)):
            return cached[2]
    net = compile_network(module, shape, output)  # type: ignore[arg-type]
    _COMPILED[module] = (key, [t.clone() for t in state], net)
    return net


def _sample_ball(x: Tensor, eps: float, norm: str, n: int, seed: int) -> Tensor:
    """``n`` points of ``B_p(x, eps)``: half uniform inside, half on the boundary (vertices for l_inf)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, *x.shape[1:])
    d = x[0].numel()
    if norm == "linf":
        inner = (torch.rand(shape, generator=gen, dtype=_F64) * 2 - 1) * eps
        outer = torch.where(torch.rand(shape, generator=gen, dtype=_F64) < 0.5, -eps, eps)
    else:
        u = torch.randn(shape, generator=gen, dtype=_F64)
        u = u / u.flatten(1).norm(dim=1).view(-1, *[1] * (len(shape) - 1))
        r = torch.rand(n, generator=gen, dtype=_F64) ** (1.0 / d)
        inner, outer = u * eps * r.view(-1, *[1] * (len(shape) - 1)), u * eps
    half = n // 2
    return x + torch.cat([inner[: n - half], outer[:half]])


# -- the certificate ----------------------------------------------------------------------------------------
def _fixed_alpha(model: CertifiableMixin, method: CertMethod, x: Tensor) -> float:
    if model.policy is not None:
        if method != "empirical":
            raise ValueError(
                "a policy makes α depend on x and its variation over the ball is not bounded, so no certificate "
                "exists; fix α (model.alpha) to certify, or use method='empirical' (α at x, not a certificate)"
            )
        return float(model.forward_details(x).alpha[0])
    a = model.alpha
    if isinstance(a, Tensor):
        if a.numel() != 1:
            raise ValueError("certify one input at a time with a scalar α; got a per-sample α tensor")
        a = float(a.reshape(()))
    return float(a)  # type: ignore[arg-type]


def certified_radius(
    model: CertifiableMixin,
    x: Tensor,
    i: int,
    j: int | Sequence[int] | None = None,
    method: CertMethod = "bounds",
    steps: int = 12,
    n_samples: int = 256,
    seed: int = 0,
    propagation: BoundMethod = "linear",
    split_budget: int = 0,
) -> CertResult:
    """The radius within which class ``i`` stays strictly above class ``j`` (above every other class when
    ``j`` is None), on ``B_p(x, ε)`` with p = ``model.norm``, as proved by Theorem 1 or 2 (or a Lipschitz
    bound, see the module docstring); 0 with ``certified=False`` when ``i`` is not above them at ``x``.

    Args:
        model: an :class:`CertifiableMixin` (configurations listed in the module docstring).
        x: one example, ``[1, ...]`` or unbatched ``[...]``; a batch of several goes to :func:`certified_radii`.
        i, j: classes; ``j`` may be a list, or ``None`` for all other classes (the argmax certificate).
        method: ``"bounds"`` (sound, default) or ``"empirical"`` (sampled constants, ``certified=False``).
        steps: the radius is found to within ``end / 2**steps`` (the precision of that many halvings of the
            search range ``[0, end]``); n_samples, seed: sampling of the empirical mode.
        propagation: ``"linear"`` (default): the theorems' constants from interval and linear bound
            propagation, and an ε is also accepted when linear bounds on the mixture's margin itself stay
            positive over the ball (see ``_margin_check``); ``"interval"``: interval bounds and the
            theorems' conditions only (looser, the previous behaviour).
        split_budget: Theorem 2 with linear propagation only: where the margin check fails on the whole
            ball, cover the ball with up to this many l_inf boxes, cutting those that fail in two
            (:mod:`robustmix.certify.splitting`; pays for inputs of a few dimensions). 0 (default): no
            splitting.

    The result's ``margin`` is positive exactly when i leads at x, and ``leader`` names the class that leads
    among i and its rivals (see :class:`CertResult`).
    """
    _check_options(model, x, method, steps, propagation, split_budget)
    x, c = _single_example(model, x.detach())
    problem = _problem(
        model, x, operator.index(i), _rivals(operator.index(i), j, c), method, steps, n_samples, seed, propagation,
        split_budget,
    )
    return _drive([problem])[0]


def _check_options(
    model: CertifiableMixin, x: Tensor, method: str, steps: int, propagation: str, split_budget: int
) -> None:
    check_choice("method", method, ("bounds", "empirical"))
    check_choice("propagation", propagation, ("linear", "interval"))
    if not isinstance(model, CertifiableMixin):
        raise ValueError(f"model must be an AdaptiveSmoothing mixture, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError("x must be a finite floating-point tensor")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(split_budget) != split_budget or split_budget < 0:
        raise ValueError(f"split_budget must be an integer >= 0, got {split_budget!r}")


#: One example's certificate as a generator: it yields the radius ε at which it needs the constants of g
#: and h, receives ``(g's _Stats | None, h's _Stats | None)`` and finally returns its :class:`CertResult`.
_Problem = Generator[float, tuple["_Stats | None", "_Stats | None"], CertResult]


def _problem(
    model: CertifiableMixin, x: Tensor, i: int, others: tuple[int, ...], method: CertMethod, steps: int,
    n_samples: int, seed: int, propagation: BoundMethod, split_budget: int = 0,
) -> tuple[_Problem, _Model, _Model | None]:
    """The certificate of one example ``x`` ``[1, ...]``: its generator and the models it asks constants of."""
    if isinstance(model.h, RandomizedSmoothing):
        raise ValueError("h is a RandomizedSmoothing model: use robustmix.certify.certify_mixture (a probabilistic certificate)")
    if model.mode == "argmax":
        raise ValueError(
            "mode='argmax' (eq. 10) is not certified: R switches between classes discontinuously; "
            "certify a mode='jacobian' or mode='none' model"
        )
    if getattr(model, "g_map", None) is not None or getattr(model, "h_map", None) is not None:
        raise ValueError(
            "output maps (g_map / h_map) are not covered by Theorems 1-2 or the Lipschitz bound: certify the "
            "mixture without maps"
        )
    alpha = _fixed_alpha(model, method, x)
    if model.mode != "none" and model.logit_scales != (1.0, 1.0):
        raise ValueError("logit_scales other than (1, 1) are only certified with mode='none'")
    prob = model.space == "prob"
    knn = not model.h_differentiable
    if knn and not isinstance(model.h, KNNClassifier):
        raise ValueError("a non-differentiable h is only certified when it is a KNNClassifier (Theorem 1)")
    g = _Model(_scaled(model.g, model.logit_scales[0]), x, model.norm, prob, method, n_samples, seed, propagation)
    if knn:
        return _certify_knn(model, g, x, i, others, alpha, prob, method, steps), g, None
    h = _Model(_scaled(model.h, model.logit_scales[1]), x, model.norm, prob, method, n_samples, seed + 1, propagation)
    if model.mode == "none" or alpha == 0 or math.isinf(alpha):
        # fixed convex mix with weight α/(1+α) on h (mode none), or g alone (α = 0) / h alone (α = ∞)
        w = 1.0 if math.isinf(alpha) else (alpha / (1 + alpha) if model.mode == "none" else 0.0)
        # with no weight on h (α = 0) its bounds are never asked for
        return _certify_lipschitz(model, g, h, i, others, w, method, steps), g, (h if w > 0 else None)
    return _certify_theorem2(model, g, h, i, others, alpha, method, steps, split_budget), g, h


#: Examples whose bounds are propagated together (memory grows with it: the Hessian terms of a CNN take
#: about 10 MB per example).
_BOUND_CHUNK = 16


def _drive(problems: list[tuple[_Problem, _Model, _Model | None]]) -> list[CertResult]:
    """Run many certificates in lockstep: each round, every unfinished example asks for its next ε and the
    bounds of all of them are propagated in one batched pass per network (per-example bisection, in parallel)."""
    results: list[CertResult | None] = [None] * len(problems)
    pending: dict[int, float] = {}

    def advance(k: int, reply: tuple[_Stats | None, _Stats | None] | None) -> None:
        try:
            pending[k] = problems[k][0].send(reply)  # type: ignore[arg-type]
        except StopIteration as done:
            results[k] = done.value
            pending.pop(k, None)

    for k in range(len(problems)):
        advance(k, None)
    while pending:
        ks = list(pending)
        eps = [pending[k] for k in ks]
        g_stats = _stats_of([problems[k][1] for k in ks], eps)
        h_models = [problems[k][2] for k in ks]
        h_stats = [None] * len(ks) if any(m is None for m in h_models) else _stats_of(h_models, eps)  # type: ignore[arg-type]
        for k, sg, sh in zip(ks, g_stats, h_stats, strict=True):
            advance(k, (sg, sh))
    return results  # type: ignore[return-value]


def _stats_of(models: list[_Model], eps: list[float]) -> list[_Stats | None]:
    """Each model's constants over its own ball; sound bounds of one network are propagated as a batch."""
    out: list[_Stats | None] = [None] * len(models)
    groups: dict[int, list[int]] = {}
    for n, m in enumerate(models):
        if m.net is None:
            out[n] = m.stats(eps[n])
        else:
            groups.setdefault(id(m.net), []).append(n)
    for members in groups.values():
        for start in range(0, len(members), _BOUND_CHUNK):
            chunk = members[start : start + _BOUND_CHUNK]
            first = models[chunk[0]]
            assert first.net is not None
            xs = torch.cat([models[n].x for n in chunk])
            radii = torch.tensor([eps[n] for n in chunk], dtype=_F64)
            batch = first.net.batch_bounds(xs, radii, first.norm, method=first.propagation)  # type: ignore[arg-type]
            for t, n in enumerate(chunk):
                out[n] = models[n].stats_from(batch.example(t))
    return out


def _output_classes(model: CertifiableMixin, x: Tensor) -> int | None:
    """The class count if ``model`` accepts ``x`` as a batch (one output row per leading entry), else None."""
    try:
        with torch.no_grad():
            out = model(x)
    except (ValueError, RuntimeError):
        return None
    return int(out.shape[1]) if out.dim() == 2 and out.shape[0] == x.shape[0] else None


def _single_example(model: CertifiableMixin, x: Tensor) -> tuple[Tensor, int]:
    """``x`` as a batch of one example and the class count; a batch of several is refused clearly."""
    if x.dim() >= 2:
        c = _output_classes(model, x)
        if c is not None:
            if x.shape[0] != 1:
                raise ValueError(
                    f"certified_radius certifies one example, but x is a batch of {x.shape[0]} "
                    f"(shape {tuple(x.shape)}); pass x[k : k + 1], or use certified_radii(model, x, i) for one "
                    "result per example"
                )
            return x, c
    c = _output_classes(model, x[None])
    if c is None:
        raise ValueError(
            f"the model accepts x (shape {tuple(x.shape)}) neither as a batch [1, ...] nor as one unbatched "
            "example; pass one example of the shape the models expect"
        )
    return x[None], c


def _rivals(i: int, j: int | Sequence[int] | None, c: int) -> tuple[int, ...]:
    others = tuple(k for k in range(c) if k != i) if j is None else tuple([j] if isinstance(j, int) else j)
    if not (0 <= i < c) or any(not 0 <= k < c or k == i for k in others) or not others:
        raise ValueError(f"classes must be distinct and in [0, {c}); got i={i}, j={j}")
    return others


def certified_radii(
    model: CertifiableMixin,
    x: Tensor,
    i: int | Sequence[int] | Tensor,
    j: int | Sequence[int] | None = None,
    **options: object,
) -> list[CertResult]:
    """:func:`certified_radius` for every example of a batch ``x`` ``[B, ...]``: one result per example, equal
    to certifying each alone, but with the per-example bisections on ε run in lockstep and the bounds of
    each round propagated for the whole batch at once (:class:`CompiledNetwork.batch_bounds`).

    ``i``: one class for all examples, or one per example (e.g. the labels ``[B]``); ``j`` and ``options``
    as in :func:`certified_radius`.
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"certified_radii expects a batch [B, ...], got {getattr(x, 'shape', type(x).__name__)}")
    classes = [int(k) for k in (i.tolist() if isinstance(i, Tensor) else i)] if not isinstance(i, int) else [i] * len(x)
    if len(classes) != len(x):
        raise ValueError(f"i has {len(classes)} entries but the batch has {len(x)} examples")
    method = options.pop("method", "bounds")
    steps = options.pop("steps", 12)
    n_samples, seed = options.pop("n_samples", 256), options.pop("seed", 0)
    propagation = options.pop("propagation", "linear")
    split_budget = options.pop("split_budget", 0)
    if options:
        raise TypeError(f"certified_radii got unexpected options {sorted(options)}")
    _check_options(model, x, method, steps, propagation, split_budget)  # type: ignore[arg-type]
    x = x.detach()
    c = _output_classes(model, x[:1])
    if c is None:
        raise ValueError(f"the model does not accept x[:1] (shape {tuple(x[:1].shape)}) as a batch of one example")
    problems = [
        _problem(  # type: ignore[arg-type]
            model, x[k : k + 1], classes[k], _rivals(classes[k], j, c), method, steps, n_samples, seed, propagation,
            split_budget,
        )
        for k in range(len(x))
    ]
    return _drive(problems)


def _scaled(module: nn.Module, s: float) -> nn.Module:
    if s == 1.0:
        return module
    return _Scale(module, s)


class _Scale(nn.Sequential):
    """``module`` followed by multiplication with a fixed factor (as an affine layer the bounds accept)."""

    def __init__(self, module: nn.Module, s: float) -> None:
        super().__init__(module, _ScaleLayer(s))


class _ScaleLayer(nn.Identity):
    """Multiplication by a constant; an ``Identity`` subclass so the bound propagation treats it as affine."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: Tensor) -> Tensor:
        return x * self.s


#: What a check of one ε says: the constants or bounds that verified it (a dict), or that it failed, with the
#: lower bound it found for the margin where it has one (a float, ≤ 0), else None.
_Outcome = dict[str, float] | float | None


def _search(
    check, hi: float, steps: int, margin: float, scored: bool = True, grow: bool = False
) -> Generator[float, Any, tuple[float, dict[str, float]]]:
    """Largest verified ε in [0, hi] (beyond ``hi`` too with ``grow``: ``hi`` is then only a guess);
    ``check(eps)`` is a generator (see :func:`_drive`) that returns an :data:`_Outcome`. Returns (ε, constants).

    With ``grow``, where ``hi`` verifies it is doubled until it does not (at most ``steps`` times). The bracket
    ``[lo, hi]`` (``lo`` verified, ``hi`` not) is then narrowed to a width of at most ``hi / 2**steps``
    (the precision of ``steps`` halvings). The margin bound the checks report shrinks smoothly with ε, so
    for the first ``steps`` tries the next ε is where the secant through the last two margin bounds
    (``margin``: the margin at ``x``, the bound at ε = 0) crosses 0, kept strictly inside the bracket; the
    midpoint where fewer than two bounds are known, and for every later try (at most ``2 * steps`` in all,
    so the precision is always reached). The secant reaches it in about half the tries of halving alone
    (each try: one bound pass per network). ``scored=False``: halving only (for checks the margin bound does
    not decide).
    """
    if not (hi > 0 and math.isfinite(hi)):
        return 0.0, {}
    lo, best = 0.0, {}
    known = [(0.0, margin)] if scored else []
    outcome = yield from check(hi)
    for _ in range(steps if grow else 0):  # the end verified: the radius may lie further out
        if not isinstance(outcome, dict):
            break
        lo, best, hi = hi, outcome, 2 * hi
        known.append((lo, _score(outcome)))
        outcome = yield from check(hi)
    if isinstance(outcome, dict):
        return hi, outcome
    tol = hi / 2**steps
    known = [(e, f) for e, f in [*known, (hi, _score(outcome))] if scored and f is not None]
    for tries in range(2 * steps):
        if hi - lo <= tol:
            break
        mid = (lo + hi) / 2
        if tries < steps and len(known) >= 2 and known[-1][1] != known[-2][1]:
            (a, fa), (b, fb) = known[-2], known[-1]
            # on a grid of tol / 64: bounds that differ by rounding (a batch against one example) then
            # almost always pick the same ε
            root = round((b - fb * (b - a) / (fb - fa)) / (tol / 64)) * (tol / 64)
            if lo < root < hi:
                mid = min(max(root, lo + tol / 2), hi - tol / 2)
        outcome = yield from check(mid)
        if isinstance(outcome, dict):
            lo, best = mid, outcome
        else:
            hi = mid
        score = _score(outcome) if scored else None
        if score is not None:
            known.append((mid, score))
    return lo, best


def _score(outcome: _Outcome) -> float | None:
    """The margin bound an outcome reports: the smallest ``margin_lower`` of a verified one, the failed
    check's bound, or None."""
    if isinstance(outcome, dict):
        lows = [v for k, v in outcome.items() if k.startswith("margin_lower")]
        return min(lows) if lows else None
    return outcome if outcome is not None and math.isfinite(outcome) else None


def _result(model, i, others, margins: dict[int, float], radius, method, consts, note) -> CertResult:
    """The result for class ``i`` against ``others`` given the signed margins ``out_i - out_j`` at x."""
    margin = min(margins.values())
    leader = i if margin > 0 else max(others, key=lambda j: (-margins[j], -j))
    if margin <= 0:  # i is not strictly above every rival at x: nothing to certify
        return CertResult(
            radius=0.0, norm=model.norm, certified=False, method=note, margin=float(margin), i=i, others=others,
            leader=leader, note=f"class {i} does not lead at x: class {leader} scores at least as high",
        )
    return CertResult(
        radius=float(radius), norm=model.norm, certified=method == "bounds", method=note, margin=float(margin),
        i=i, others=others, leader=leader, constants=consts,
        note="" if method == "bounds" else "constants estimated by sampling",
    )


def _mixture_at_x(gv: Tensor, hv: Tensor, R: Tensor, alpha: float) -> Tensor:
    w = alpha * R / (1 + alpha * R)
    return (1 - w) * gv + w * hv


def _leads(margins: dict[int, float]) -> bool:
    return min(margins.values()) > 0


def _certify_theorem2(model, g: _Model, h: _Model, i, others, alpha, method, steps, split_budget) -> _Problem:
    eps_c = model.eps_c
    R = g.grad_norm_x / (h.grad_norm_x + eps_c)
    out = _mixture_at_x(g.value_x, h.value_x, R, alpha)
    margins = {j: float(out[i] - out[j]) for j in others}
    if not _leads(margins):
        return _result(model, i, others, margins, 0.0, method, {}, "theorem2")

    def check(eps: float):
        sg, sh = yield eps
        if sg is None or sh is None:
            return None
        consts = {}
        for k in (i, *others):
            consts[f"C_{k}"] = Theorem2Constants(
                float(sg.K[k]), float(sg.m[k]), float(sg.M[k]), float(sg.L[k]),
                float(sh.K[k]), float(sh.m[k]), float(sh.M[k]), float(sh.L[k]), float(R[k]),
            )
        w_lo = weight_on_h(alpha, sg.m / (sh.M + eps_c))
        w_hi = weight_on_h(alpha, sg.M / (sh.m + eps_c))
        prob = model.space == "prob"
        found = _margin_check(sg, sh, None, i, others, w_lo, w_hi, prob=prob)
        if all(eps <= theorem2_radius(consts[f"C_{i}"], consts[f"C_{j}"], alpha, margins[j], eps_c) for j in others):
            verified = {f"{name}[{k}]": getattr(cst, name) for k in (i, *others) for cst in [consts[f"C_{k}"]]
                        for name in ("K_g", "m_g", "M_g", "L_g", "K_h", "m_h", "M_h", "L_h", "R_x")}
            # the margin bounds too where they hold (the search steers by them)
            return {**verified, **found} if isinstance(found, dict) else verified
        if not isinstance(found, dict) and split_budget and sg.bounds is not None and sg.bounds.relaxations is not None:
            found = split_margin_check(
                g.net, h.net, g.x, eps, model.norm, i, others, alpha, eps_c, prob, split_budget  # type: ignore[arg-type]
            )
        return found

    end = _first_order_end(model, g.x, i, others)
    # the margin bounds of linear propagation reach about as far as the first-order distance: a guess of
    # the end, grown where it verifies; else the theorem's radius with the constants at x bounds the search
    grow = method == "bounds" and g.propagation == "linear" and 0 < end < math.inf
    if not grow:
        s0g, s0h = yield 0.0
        end = _wider_end(_upper_from(
            lambda j: theorem2_radius(_t2(s0g, s0h, R, i), _t2(s0g, s0h, R, j), alpha, margins[j], eps_c), others
        ), end)
    # with splitting, a failed outcome's margin bound is the unsplit ball's: not the function the search tries
    r, consts = yield from _search(check, end, steps, min(margins.values()), scored=not split_budget, grow=grow)
    return _result(model, i, others, margins, r, method, consts, "theorem2")


def _margin_check(
    sg: _Stats, sh: _Stats | None, h_values: Tensor | None, i: int, others, w_lo: Tensor, w_hi: Tensor, prob: bool
) -> _Outcome:
    """Certify ``out_i > out_j`` on the ball from bounds on the mixture itself, with h's weight ``w_k`` known
    only to lie in ``[w_lo_k, w_hi_k]`` (from the bounds on R); ``h_values``: h's outputs when h is constant
    on the ball (the K-NN oracle), else h's bounds ``sh``.

    At each point of the ball ``out_i - out_j = Σ_k ±((1 - w_k) g_k + w_k h_k)`` is affine in ``(w_i, w_j)``,
    so its minimum over the box of weights is at one of the four corners. Each corner's margin is bounded
    below by linear bound propagation through g and h together (logits: one backward pass per network
    for all corners, the two linear forms added before minimising over the ball) or, for probabilities,
    by their intervals. Returns the lower bounds when all are positive, else the smallest of them (a
    float, which steers the search's secant), or None where the bounds are not sound bounds.
    """
    if sg.bounds is None or (sh is not None and sh.bounds is None):
        return None  # sampled estimates: not a bound
    if sg.bounds.relaxations is None:
        return None  # propagation="interval": the theorems' conditions only
    Cg, Ch = corner_rows(w_lo.to(_F64), w_hi.to(_F64), i, others)
    if h_values is not None:
        const = Ch @ h_values.to(_F64)
    if prob:
        low = interval_lower(Cg, sg.bounds)
        if sh is not None:
            low = low + interval_lower(Ch, sh.bounds)
    else:
        form = sg.bounds.logit_form(Cg)
        if sh is not None:
            form = form + sh.bounds.logit_form(Ch)
        low = sg.bounds.ball_lower(form)
    if h_values is not None:
        low = low + const
    per_rival = low.reshape(len(others), 4).min(1).values
    if not bool((per_rival > 0).all()):
        return float(per_rival.min())  # NaN (fails closed) reads as no bound
    return {"via_linear_bounds": 1.0, **{f"margin_lower[{j}]": float(v) for j, v in zip(others, per_rival, strict=True)}}


def _search_end(model: CertifiableMixin, x: Tensor, i: int, others, theorem_end: float) -> float:
    """The upper end of the search: the theorem's radius with constants at x (it cannot certify more) or
    twice the first-order distance to the nearest decision boundary (what the margin bounds can reach),
    whichever is larger. Only a search range: every returned ε is verified."""
    return _wider_end(theorem_end, _first_order_end(model, x, i, others))


def _wider_end(theorem_end: float, first_order_end: float) -> float:
    """The larger of the two ends where they are positive and finite (else the theorem's)."""
    ends = [e for e in (theorem_end, first_order_end) if math.isfinite(e) and e > 0]
    return max(ends) if ends else theorem_end


def _first_order_end(model: CertifiableMixin, x: Tensor, i: int, others) -> float:
    """Twice the first-order distance ``min_j margin_j / ||∇ margin_j||_{p*}`` to the nearest decision
    boundary of the mixture at ``x`` (inf where every margin's gradient is 0)."""
    dtype = next((p.dtype for p in model.g.parameters()), x.dtype)
    rows = [i, *others]
    out, grads = _outputs_and_gradients(model, x.to(dtype), rows)
    margins = out[0, i] - out[0, list(others)]
    norms = dual_norm(grads[0, :1] - grads[0, 1:], model.norm, batch_dims=None)
    dists = [float(m / n) if n > 0 else math.inf for m, n in zip(margins, norms, strict=True)]
    return 2 * min(dists)


#: Inputs one backward pass of :func:`_outputs_and_gradients` may take: ``N`` points repeated once per row,
#: so at most ``max(1, this // N)`` rows per pass (the memory of one pass stays that of ``N`` points or of
#: this many).
_GRADIENT_ROWS_PER_PASS = 16


def _outputs_and_gradients(fn: Callable[[Tensor], Tensor], pts: Tensor, rows: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """``fn``'s outputs ``[N, c]`` at ``pts`` ``[N, ...]`` and the input gradients of the outputs ``rows``
    (default all) ``[N, len(rows), prod(...)]``: each point repeated once per row, the copy for row ``k``
    differentiated for output ``k``, so one backward pass gives several rows (``_GRADIENT_ROWS_PER_PASS``;
    ``fn`` must treat the examples of a batch independently, as a model in eval mode does)."""
    pts = pts.detach()
    N = pts.shape[0]
    with torch.no_grad():
        out = fn(pts)
    rows = list(range(out.shape[1])) if rows is None else list(rows)
    blocks, per_pass = [], max(1, _GRADIENT_ROWS_PER_PASS // N)
    for start in range(0, len(rows), per_pass):
        part = rows[start : start + per_pass]
        copies = pts.repeat_interleave(len(part), 0).requires_grad_(True)
        with torch.enable_grad():
            picked = fn(copies).reshape(N, len(part), -1)[:, torch.arange(len(part)), part]
            (grad,) = torch.autograd.grad(picked.sum(), copies)
        blocks.append(grad.reshape(N, len(part), -1))
    return out.detach(), torch.cat(blocks, 1)


def _t2(sg: _Stats | None, sh: _Stats | None, R: Tensor, k: int) -> Theorem2Constants:
    assert sg is not None and sh is not None
    return Theorem2Constants(
        float(sg.K[k]), float(sg.m[k]), float(sg.M[k]), float(sg.L[k]),
        float(sh.K[k]), float(sh.m[k]), float(sh.M[k]), float(sh.L[k]), float(R[k]),
    )


def _upper_from(radius_of, others) -> float:
    """Radius with constants at ε = 0: an upper end for the search (constants only grow with ε)."""
    return min(radius_of(j) for j in others)


def _certify_knn(model, g: _Model, x, i, others, alpha, prob, method, steps) -> _Problem:
    with torch.no_grad():
        hv = model.h(x.to(model.h.train_x.dtype))[0].to(_F64)
    if prob:
        hv = hv.softmax(-1)
    R = g.grad_norm_x
    out = _mixture_at_x(g.value_x, hv, R, alpha)
    margins = {j: float(out[i] - out[j]) for j in others}
    if not _leads(margins):
        return _result(model, i, others, margins, 0.0, method, {}, "theorem1")
    h_bound = float(hv.abs().max())  # |h_k(x)| <= h_bound enters Lemma 4's term (1 for eq. 2's votes)

    def consts_at(st: _Stats, k: int) -> Theorem1Constants:
        L = float(st.L[k]) / (1 + alpha * float(st.m[k]))
        return Theorem1Constants(float(st.M[k]), L, float(g.value_x[k]), float(g.grad_norm_x[k]))

    def check(eps: float):
        if not knn_constant_on_ball(model.h, x, eps, model.norm):
            return None
        st, _ = yield eps
        if st is None:
            return None
        if all(eps <= theorem1_radius(consts_at(st, i), consts_at(st, j), alpha, margins[j], h_bound) for j in others):
            return {f"{n}[{k}]": getattr(consts_at(st, k), n) for k in (i, *others) for n in ("M", "L")}
        # h is constant on the ball (checked above): its values are known, R_k = ||∇g_k|| lies in [m, M]
        return _margin_check(st, None, hv, i, others, weight_on_h(alpha, st.m), weight_on_h(alpha, st.M), prob)

    s0, _ = yield 0.0
    assert s0 is not None
    hi = _upper_from(lambda j: theorem1_radius(consts_at(s0, i), consts_at(s0, j), alpha, margins[j], h_bound), others)
    r, consts = yield from _search(check, _search_end(model, x, i, others, hi), steps, min(margins.values()))
    return _result(model, i, others, margins, r, method, consts, "theorem1")


def _certify_lipschitz(model, g: _Model, h: _Model, i, others, w, method, steps) -> _Problem:
    """Margin ``(1-w)(g_i-g_j) + w(h_i-h_j)`` changes by at most ``ε((1-w) G_ij + w H_ij)`` on the ball."""
    out = (1 - w) * g.value_x + w * h.value_x
    margins = {j: float(out[i] - out[j]) for j in others}
    if not _leads(margins):
        return _result(model, i, others, margins, 0.0, method, {}, "lipschitz")

    def lip(eps: float, j: int) -> float | None:
        parts = []
        for f, weight in ((g, 1 - w), (h, w)):
            if weight == 0:
                continue
            v = f.pair_grad_max(eps, i, j)
            if v is None:
                return None
            parts.append(weight * v)
        return sum(parts)

    def check(eps: float):
        consts = {}
        for j in others:
            L = lip(eps, j)
            if L is None or not eps * L <= abs(margins[j]):  # fails closed on NaN
                return (yield from margin_check(eps))
            consts[f"lip[{j}]"] = L
        return consts

    def margin_check(eps: float):
        sg, sh = yield eps
        if sg is None or (w > 0 and sh is None):
            return None
        weight = torch.full((len(g.value_x),), w, dtype=_F64)
        return _margin_check(sg, sh, None, i, others, weight, weight, prob=model.space == "prob")

    l0 = [lip(0.0, j) for j in others]
    hi = min((abs(margins[j]) / L if L else math.inf) for j, L in zip(others, l0, strict=True) if L is not None)
    if math.isinf(hi):
        hi = 1e6
    r, consts = yield from _search(check, _search_end(model, g.x, i, others, hi), steps, min(margins.values()))
    return _result(model, i, others, margins, r, method, consts, "lipschitz")


# -- batched ------------------------------------------------------------------------------------------------
@dataclass
class CertifyReport:
    """Certified accuracy at each radius (fraction of samples correctly classified with radius ≥ r)."""

    radii: tuple[float, ...]
    accuracy: tuple[float, ...]
    clean_accuracy: float
    radii_per_sample: list[float]
    certified: bool
    norm: str

    def __str__(self) -> str:
        kind = "certified (sound bounds)" if self.certified else "EMPIRICAL estimate (NOT certified)"
        rows = ", ".join(f"r={r:g}: {a:.1%}" for r, a in zip(self.radii, self.accuracy, strict=True))
        return f"{kind} accuracy, {self.norm}: clean {self.clean_accuracy:.1%}; {rows}"


def certify(
    model: CertifiableMixin,
    data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
    radii: Sequence[float] = (0.0, 0.01, 0.02, 0.05),
    method: CertMethod = "bounds",
    limit: int | None = None,
    progress: bool = True,
    **kwargs: object,
) -> CertifyReport:
    """Certified accuracy of ``model`` at ``radii`` over a loader of ``(x, y)`` batches or a pair of tensors.

    A sample counts at radius r if the mixture classifies it correctly and :func:`certified_radius` (against
    all other classes) returns at least r. ``limit`` caps the number of samples.
    """
    from tqdm.auto import tqdm

    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        batches: Iterable[tuple[Tensor, Tensor]] = [data]  # type: ignore[list-item]
    else:
        batches = data  # type: ignore[assignment]
    per: list[float] = []
    correct = 0
    bar = tqdm(total=limit, disable=not progress, desc="certify")
    for xb, yb in batches:
        if limit is not None:
            xb, yb = xb[: max(limit - len(per), 0)], yb[: max(limit - len(per), 0)]
        if len(xb) == 0:
            break
        with torch.no_grad():
            pred = torch.cat([model(xb[k : k + 1]).argmax(1) for k in range(len(xb))])  # one at a time, as certified
        right = (pred == yb.to(pred.device)).nonzero().flatten().tolist()
        radius_of: dict[int, float] = {}
        if right:
            results = certified_radii(model, xb[right], pred[right], None, method=method, **kwargs)  # type: ignore[arg-type]
            radius_of = {k: r.radius for k, r in zip(right, results, strict=True)}
        per.extend(radius_of.get(k, -1.0) for k in range(len(xb)))
        correct += len(right)
        bar.update(len(xb))
    bar.close()
    n = max(len(per), 1)
    acc = tuple(sum(1 for r in per if r >= rad and r >= 0) / n for rad in radii)
    return CertifyReport(tuple(radii), acc, correct / n, per, method == "bounds", model.norm)
