"""Adversarial attacks: PGD (l_inf, l_2) on any classifier, and the attacks of section 4.2 / 6.3 on the mixture.

* :func:`pgd` — projected gradient descent on the cross-entropy loss (untargeted or targeted), random start,
  restarts; the model may return logits or log-probabilities (``log_softmax`` is the same for both).
* :func:`composite_pgd` — eq. 6: the attack on the mixture at a *fixed* trade-off α_t, the data the policy is
  trained on (section 6.3 uses α_t ∈ :data:`PAPER_ALPHAS`).
* :func:`adaptive_pgd` — attacks the deployed model itself, gradients flowing through the policy β(x) (eq. 7)
  and through R (eq. 5 / eq. 10), the adaptive attack of section 5.1.
* :func:`surrogate_pgd` — gradients through the mixture's differentiable surrogate (output maps relaxed),
  success judged on the deployed mixture: the attack on steep maps that would mask the gradient.
* :func:`autoattack` — AutoAttack through the optional ``pyautoattack`` package (``robustmix[attacks]``).

Attacks never change weights, ``requires_grad`` flags or train/eval modes, and accumulate no weight
gradients (gradients are taken with respect to the input only). They run the model in whatever mode it is
in: put models with BatchNorm or Dropout in ``eval()`` first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils.checks import check_choice
from ._utils.optional import require
from .smoothing import AdaptiveSmoothing

__all__ = [
    "PAPER_ALPHAS", "pgd", "composite_pgd", "adaptive_pgd", "surrogate_pgd", "autoattack", "autoattack_parts",
    "margin",
]

#: The fixed trade-offs α_t the paper attacks the mixture at (section 6.3).
PAPER_ALPHAS: tuple[float, ...] = (0.0, 0.316, 1.46, 6.81, 31.6, 147.0, 681.0, 3162.0, math.inf)

_NORMS = ("linf", "l2")
_LOSSES = ("ce", "margin")

#: AutoAttack versions :func:`autoattack` accepts.
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "apgd", "square")


def pgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    data_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    loss: str = "ce",
    judge: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Projected gradient descent within ``||δ|| <= eps`` (l_inf or l_2) and the data range.

    Untargeted: ascends ``CE(model(x + δ), y)``; targeted: descends ``CE(model(x + δ), y)`` with ``y`` the
    target labels. ``loss="margin"`` uses the margin ``max_{j≠y} f_j - f_y`` of the model's output instead
    (the Carlini-Wagner loss: it does not saturate where the softmax does), so the best point kept for an
    example that survives is the one of smallest margin. l_inf steps follow the gradient sign, l_2 steps the normalised gradient; the default step
    size is ``2.5 * eps / steps``. The random start is uniform in the eps ball (l_2: uniform in volume).

    Per example the result is the best point visited over all steps and restarts: one that succeeds
    (misclassified, or classified as the target), else the one with the highest objective. Restarts after
    the first only attack examples not yet broken, so more restarts are never weaker than fewer with the
    same ``generator``.

    Args:
        model: any callable mapping ``[B, ...]`` to logits or log-probabilities ``[B, c]``.
        judge: the model whose predictions decide success and the best point (default ``model``): attack a
            differentiable surrogate with ``model`` and judge on the deployed one (masked gradients).
        x: clean inputs ``[B, ...]`` inside ``data_range``; y: labels ``[B]`` (target labels if ``targeted``).
        generator: source of the random starts (reproducible attacks).

    Returns the adversarial inputs, detached, same shape and dtype as ``x``.
    """
    check_choice("norm", norm, _NORMS)
    check_choice("loss", loss, _LOSSES)
    steps, restarts, step = _check_pgd_args(x, y, eps, steps, step_size, random_start, restarts, data_range)
    lo, hi = float(data_range[0]), float(data_range[1])
    with torch.inference_mode(False), torch.enable_grad():
        x0, y = x.detach().clone(), y.detach().clone()
        best_x = x0.clone()
        best_succ = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        best_obj = torch.full((len(x0),), -math.inf, device=x0.device)
        for r in range(restarts):
            idx = torch.arange(len(x0), device=x0.device) if r == 0 else (~best_succ).nonzero().flatten()
            if len(idx) == 0:
                break
            run = _Run(model, x0[idx], y[idx], eps, norm, targeted, lo, hi, loss, judge)
            cand_x, cand_succ, cand_obj = run.attack(steps, step, random_start, generator)
            old_succ, old_obj = best_succ[idx], best_obj[idx]
            better = (cand_succ & ~old_succ) | ((cand_succ == old_succ) & (cand_obj > old_obj))
            sel = idx[better]
            best_x[sel] = cand_x[better]
            best_succ[sel] = cand_succ[better]
            best_obj[sel] = cand_obj[better]
    return best_x


class _Run:
    """One PGD run from one starting point, remembering per example the best iterate."""

    def __init__(
        self, model: Callable[[Tensor], Tensor], x0: Tensor, y: Tensor, eps: float, norm: str,
        targeted: bool, lo: float, hi: float, loss: str = "ce", judge: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.model, self.x0, self.y, self.eps, self.norm = model, x0, y, eps, norm
        self.targeted, self.lo, self.hi, self.loss, self.judge = targeted, lo, hi, loss, judge
        self.labels_checked = False

    def attack(
        self, steps: int, step: float, random_start: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        x_adv = self._project(self.x0 + self._random_delta(generator)) if random_start else self.x0.clone()
        best_x = x_adv.clone()
        best_succ = torch.zeros(len(x_adv), dtype=torch.bool, device=x_adv.device)
        best_obj = torch.full((len(x_adv),), -math.inf, device=x_adv.device)
        for t in range(steps + 1):
            last = t == steps
            x_in = x_adv if last else x_adv.detach().requires_grad_(True)
            with torch.set_grad_enabled(not last):
                obj, succ = self._objective(x_in)
            better = (succ & ~best_succ) | ((succ == best_succ) & (obj.detach() > best_obj))
            best_x[better] = x_adv[better]
            best_succ[better] = succ[better]
            best_obj[better] = obj.detach()[better]
            if last:
                break
            (grad,) = torch.autograd.grad(obj.sum(), x_in)
            x_adv = self._project(x_adv + step * self._direction(grad))
        return best_x, best_succ, best_obj

    def _objective(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(x)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the model returned {shape} for a batch of {x.shape[0]}; expected [batch, classes]")
        if torch.is_grad_enabled() and not out.requires_grad:
            raise ValueError(
                "the model's output does not depend on its input through autograd, so PGD has no gradient "
                "to follow; attack a differentiable model (e.g. the mixture, not a K-NN oracle alone)"
            )
        if not self.labels_checked:
            if len(self.y) and int(self.y.max()) >= out.shape[1]:
                raise ValueError(f"labels go up to {int(self.y.max())} but the model predicts {out.shape[1]} classes")
            self.labels_checked = True
        objective = _loss(out.float(), self.y, self.loss)
        if self.judge is None:
            pred = out.argmax(dim=1)
        else:
            with torch.no_grad():
                pred = self.judge(x.detach()).argmax(dim=1)
        if self.targeted:
            return -objective, pred == self.y
        return objective, pred != self.y

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / norms.view(-1, *([1] * (grad.dim() - 1)))

    def _random_delta(self, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else self.x0.device
        shape = self.x0.shape
        if self.norm == "linf":
            u = torch.rand(shape, generator=generator, device=device, dtype=self.x0.dtype)
            return ((2 * u - 1) * self.eps).to(self.x0.device)
        d = self.x0[0].numel()
        direction = torch.randn(shape, generator=generator, device=device, dtype=self.x0.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (len(shape) - 1)))
        radius = self.eps * torch.rand(shape[0], generator=generator, device=device, dtype=self.x0.dtype) ** (1 / d)
        return (direction * radius.view(-1, *([1] * (len(shape) - 1)))).to(self.x0.device)

    def _project(self, x_adv: Tensor) -> Tensor:
        """Into the eps ball around x0, then into the data range (which only shrinks δ: x0 is inside it)."""
        delta = x_adv.detach() - self.x0
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1)
            factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-30), torch.ones_like(norms))
            delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
        return (self.x0 + delta).clamp(self.lo, self.hi)


def margin(out: Tensor, y: Tensor) -> Tensor:
    """Per-example margin ``f_y - max_{j≠y} f_j`` of outputs ``[B, c]`` (positive where ``y`` leads)."""
    true = out.gather(1, y[:, None]).squeeze(1)
    return true - out.scatter(1, y[:, None], -math.inf).amax(dim=1)


def _loss(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """Per-example loss the untargeted attack ascends: cross-entropy, or minus the margin."""
    if loss == "ce":
        return F.cross_entropy(out, y, reduction="none")
    return -margin(out, y)


def _check_pgd_args(
    x: Tensor, y: Tensor, eps: float, steps: int, step_size: float | None, random_start: bool, restarts: int,
    data_range: tuple[float, float],
) -> tuple[int, int, float]:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 2:
        raise ValueError(f"x must be batched [B, ...], got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.dtype != torch.long:
        raise ValueError(
            f"y must be int64 labels of shape [{x.shape[0]}], got "
            f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
            f"{'' if not isinstance(y, Tensor) else ' ' + str(y.dtype)}"
        )
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move them to one device")
    if len(y) and int(y.min()) < 0:
        raise ValueError("labels must be >= 0")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True: without a random start every restart is the same")
    lo, hi = data_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be finite (low, high) with low < high, got {data_range!r}")
    if len(x) and (float(x.min()) < lo or float(x.max()) > hi):
        raise ValueError(
            f"x spans [{float(x.min()):.4g}, {float(x.max()):.4g}], outside data_range {data_range}; "
            "pass the range the inputs live in"
        )
    step = 2.5 * eps / steps if step_size is None and steps > 0 else (step_size or 0.0)
    if not (math.isfinite(step) and step >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}")
    return int(steps), int(restarts), float(step)


def _check_mixture(model: object) -> None:
    if not isinstance(model, AdaptiveSmoothing):
        raise ValueError(
            f"this attack targets an AdaptiveSmoothing mixture, got {type(model).__name__}; use pgd() for "
            "a single model"
        )


def composite_pgd(model: AdaptiveSmoothing, x: Tensor, y: Tensor, alpha_t: float, **pgd_kwargs: object) -> Tensor:
    """PGD on the mixture at a fixed trade-off α_t (eq. 6), whatever α or policy the model itself uses.

    Attacks ``model.forward_details(x, alpha=alpha_t).output``; gradients flow through R unless the model
    has ``detach_R=True``. α_t = 0 is the attack on g and α_t = inf the attack on h. ``pgd_kwargs`` go to
    :func:`pgd`.
    """
    _check_mixture(model)
    if not (isinstance(alpha_t, (int, float)) and alpha_t >= 0):
        raise ValueError(f"alpha_t must be a number >= 0 (math.inf for h alone), got {alpha_t!r}")
    alpha = float(alpha_t)
    return pgd(lambda z: model.forward_details(z, alpha=alpha).output, x, y, **pgd_kwargs)  # type: ignore[arg-type]


def adaptive_pgd(model: AdaptiveSmoothing, x: Tensor, y: Tensor, **pgd_kwargs: object) -> Tensor:
    """PGD on the deployed mixture ``model(x)`` itself (section 5.1): gradients flow through the policy β(x)
    (eq. 7) and through R. ``pgd_kwargs`` go to :func:`pgd`."""
    _check_mixture(model)
    return pgd(model, x, y, **pgd_kwargs)  # type: ignore[arg-type]


def surrogate_pgd(
    model: AdaptiveSmoothing, x: Tensor, y: Tensor, alpha_t: float | None = None, **pgd_kwargs: object
) -> Tensor:
    """PGD whose gradients come from the mixture's differentiable surrogate (:meth:`AdaptiveSmoothing.surrogate`:
    output maps relaxed, hard maxima smoothed) and whose success is judged on the deployed ``model`` itself.

    The attack against gradient masking by steep output maps (MixedNUTS' adaptive attack). ``alpha_t``: the
    surrogate's trade-off for the gradient (default: the deployed α or policy). The margin loss is the
    default (``loss="ce"`` in ``pgd_kwargs`` for cross-entropy). ``pgd_kwargs`` go to :func:`pgd`.
    """
    _check_mixture(model)
    twin = model.surrogate()
    if alpha_t is None:
        gradient_model: Callable[[Tensor], Tensor] = twin
    else:
        if not (isinstance(alpha_t, (int, float)) and alpha_t >= 0):
            raise ValueError(f"alpha_t must be a number >= 0 (math.inf for h alone), got {alpha_t!r}")
        alpha = float(alpha_t)
        gradient_model = lambda z: twin.forward_details(z, alpha=alpha).output  # noqa: E731
    kwargs = {"loss": "margin", **pgd_kwargs}
    return pgd(gradient_model, x, y, judge=model, **kwargs)  # type: ignore[arg-type]


@contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Freeze parameters and restore train/eval modes and ``requires_grad`` flags afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.train(training)


#: The parts of each AutoAttack version (pyautoattack's names), before the class-count rules below.
_AUTOATTACK_PARTS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "apgd": ("apgd-ce", "apgd-t"),
    "square": ("square",),
}
#: The fewest classes each part is defined for: the DLR loss reads the third-largest logit, its targeted form
#: the fourth; a targeted attack needs a class other than the true one.
_MIN_CLASSES = {"apgd-ce": 2, "square": 2, "fab": 2, "fab-t": 2, "apgd-dlr": 3, "apgd-t": 4}
_MAX_TARGETS = 9


def autoattack_parts(version: str, num_classes: int) -> tuple[list[str], list[str]]:
    """``(run, skipped)``: the AutoAttack parts of ``version`` that are defined for ``num_classes`` classes,
    and those left out (the DLR loss needs at least 3 classes, targeted DLR (APGD-T) at least 4)."""
    check_choice("version", version, AUTOATTACK_VERSIONS)
    parts = _AUTOATTACK_PARTS[version]
    run = [p for p in parts if num_classes >= _MIN_CLASSES[p]]
    return run, [p for p in parts if p not in run]


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    device: torch.device | str | None = None,
    seed: int = 0,
    batch_size: int = 250,
) -> Tensor:
    """AutoAttack (Croce & Hein, 2020) through the authors' ``pyautoattack`` package.

    Inputs must lie in [0, 1] (AutoAttack's fixed data range). Works on any module returning logits or
    log-probabilities, an :class:`AdaptiveSmoothing` mixture included (it attacks ``model(x)``).
    ``version``: ``"standard"``, ``"plus"``, ``"rand"``, or ``"apgd"`` (APGD-CE then APGD-T over 9 target
    classes: the gradient attacks of the standard version without FAB-T and the gradient-free Square attack,
    several times cheaper on a mixture, and weaker) or ``"square"`` (the gradient-free Square attack alone,
    immune to masked gradients); ``seed`` makes the run reproducible. Only the parts
    defined for the model's class count run (:func:`autoattack_parts`), and targeted parts attack at most
    ``c - 1`` target classes. Inputs that are not ``[B, C, H, W]`` images are attacked as ``1 x 1 x d``
    images (Square's patches are then runs of features). The package's own diagnostics (its ``auto-attack`` logger) are silenced during
    the call. Needs ``pip install 'robustmix[attacks]'``.
    """
    check_choice("norm", norm, _NORMS)
    check_choice("version", version, AUTOATTACK_VERSIONS)
    _check_pgd_args(x, y, eps, 1, None, True, 1, (0.0, 1.0))
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    AutoAttack = require("pyautoattack", "attacks", "autoattack()").AutoAttack
    if len(x) == 0:
        return x.detach().clone()
    dev = torch.device(device) if device is not None else x.device
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _untouched(model), torch.inference_mode(False):
            with torch.no_grad():
                num_classes = int(model(x[:1].to(dev)).shape[1])
            if len(y) and int(y.max()) >= num_classes:
                raise ValueError(f"labels go up to {int(y.max())} but the model predicts {num_classes} classes")
            parts, _ = autoattack_parts(version, num_classes)
            shape = x.shape[1:]
            # Square samples square patches of [C, H, W] images; other inputs are attacked as 1 x 1 x d images.
            attacked: Callable[[Tensor], Tensor] = model if len(shape) == 3 else (
                lambda z: model(z.reshape(-1, *shape))
            )
            adversary = AutoAttack(
                attacked, norm={"linf": "Linf", "l2": "L2"}[norm], eps=float(eps), device=dev, seed=seed,
                **(dict(version="custom", attacks=parts) if version in ("apgd", "square") else dict(version=version)),
            )
            adversary.attacks_to_run = parts
            targets = min(_MAX_TARGETS, num_classes - 1)
            adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, targets)
            adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, targets)
            x_in = x.detach().clone().to(dev)
            x_adv, _ = adversary.run_standard_evaluation(
                x_in if len(shape) == 3 else x_in.reshape(len(x_in), 1, 1, -1), y.detach().clone().to(dev),
                batch_size=int(batch_size),
            )
            x_adv = x_adv.reshape(x.shape)
    finally:
        logger.setLevel(level)
    return x_adv.detach().to(x.device, x.dtype)
