"""Training-free calibration of the nonlinear mixture (the MixedNUTS form).

:func:`calibrate` picks the robust map ``M(z) = s·sign(u)·|u|^p``, ``u = clamp(LN_k(z) + c)``
(:class:`~robustmix.nn.maps.NonlinearMap`) and the weight ``w`` on h of

    P(x) = (1 - w)·softmax(map_g(g(x))) + w·softmax(M(h(x)))

from a small calibration set, with one attack on h and no training:

1. a minimum-margin attack (PGD on the margin loss) on h; keep h's logits on the attacked examples that h
   still gets right (set A) and on the clean examples h gets wrong (set W);
2. for each ``(s, p, c)`` of a grid, the margins ``P_y - max_{j≠y} P_j`` of the mapped probabilities on A;
   the cut-off ``m`` below which only ``1 - target`` of them lie; the score is the number of W examples that
   g gets right and whose mapped wrong margin ``max_j P_j - P_y`` is below ``m`` (the ones g can fix);
3. ``w = 1 / (1 + m·(1 - SLACK))``: with g fully fooled (a one-hot vector on a wrong class), the mixture stays right on
   an A example exactly when ``w·margin > 1 - w``, so every A example with margin above ``m`` stays right,
   with room for rounding.

The prediction assumes the attack found h's worst case and g is fully fooled; the evaluation suite
(:class:`~robustmix.evaluate.AttackSuite`, surrogate and gradient-free attacks included) measures the truth.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._utils.checks import check_data
from .attacks import margin, pgd
from .errors import InputError
from .nn.maps import HardMax, NonlinearMap
from .smoothing import AdaptiveSmoothing

__all__ = ["Calibration", "calibrate", "calibrate_mixture", "DEFAULT_GRID", "SLACK"]

#: Relative safety margin of the weight: the mixture's threshold is ``cut-off·(1 - SLACK)``.
SLACK = 1e-3

#: The (s, p, c) grid searched by default.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "s": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "p": (1.0, 2.0, 3.0, 4.0),
    "c": (-2.0, -1.5, -1.0, -0.5, 0.0),
}


@dataclass
class Calibration:
    """What :func:`calibrate` chose and predicted.

    ``h_map``: the chosen robust map; ``weight``: ``w``, the weight on h (``alpha = w / (1 - w)`` for
    :class:`AdaptiveSmoothing` with ``mode="none"``); ``cutoff``: the margin ``m`` above which an attacked
    example stays right (``w = 1/(1 + m·(1 - SLACK))``);
    ``predicted_clean``: the calibrated mixture's clean accuracy on the calibration set;
    ``predicted_robust``: the fraction of the calibration set that stays right when h faces the calibration
    attack and g is fully fooled; ``h_robust``: the fraction h itself kept under that attack; ``search``:
    one record per grid point (``s``, ``p``, ``c``, ``cutoff``, ``fixable``), plot-able; ``x_attacked``:
    the calibration inputs after the attack on h (the evidence the prediction rests on).
    """

    h_map: NonlinearMap
    weight: float
    cutoff: float
    target: float
    predicted_clean: float
    predicted_robust: float
    h_robust: float
    n: int
    search: list[dict[str, float]] = field(default_factory=list)
    x_attacked: Tensor | None = field(default=None, repr=False)

    @property
    def alpha(self) -> float:
        """α with ``mixing_weight(α, R=1) = w``."""
        return math.inf if self.weight >= 1 else self.weight / (1 - self.weight)

    def mixture(self, g: nn.Module, h: nn.Module, g_map: nn.Module | None = None, **options: Any) -> AdaptiveSmoothing:
        """The calibrated mixture ``AdaptiveSmoothing(g, h, alpha, mode="none", space="prob", g_map, h_map)``;
        ``g_map`` defaults to :class:`HardMax` (the map the calibration assumed)."""
        return AdaptiveSmoothing(
            g, h, alpha=self.alpha, mode="none", space="prob", g_map=HardMax() if g_map is None else g_map,
            h_map=self.h_map, **options,
        )

    def apply(self, model: AdaptiveSmoothing) -> AdaptiveSmoothing:
        """Set the calibrated maps (h's map; g's a :class:`HardMax` unless it already has one) and, for a
        fixed-α mixture, α on ``model``, which must mix probabilities with R = 1; returns ``model``."""
        if not isinstance(model, AdaptiveSmoothing) or model.mode != "none" or model.space != "prob":
            raise InputError("a calibration applies to an AdaptiveSmoothing with mode='none' and space='prob'")
        model.h_map = self.h_map
        if model.g_map is None:
            model.g_map = HardMax()
        if model.policy is None:
            model.alpha = self.alpha
        return model


def _cutoff(margins: Tensor, target: float) -> float:
    """The largest margin ``m`` such that at least ``target`` of ``margins`` lie strictly above it."""
    ordered = margins.sort().values
    drop = int(math.floor((1 - target) * len(ordered) + 1e-9))
    if drop == 0:
        return max(0.0, float(ordered[0]) * (1 - 1e-6)) if len(ordered) else 0.0
    return float(ordered[drop - 1])


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def calibrate(
    g: nn.Module,
    h: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    target: float = 0.9,
    grid: dict[str, Sequence[float]] | None = None,
    clamp: str = "gelu",
    k: int | None = None,
    steps: int = 20,
    restarts: int = 1,
    batch_size: int = 256,
    data_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    progress: bool | None = None,
) -> Calibration:
    """Choose the MixedNUTS map of h and the weight on h from ``(x, y)`` (see the module docstring).

    Args:
        g, h: the accurate and the robust model (logits ``[B, c]``, eval mode).
        x, y: the calibration set (a few hundred held-out examples are typical).
        eps, norm: the threat model of the calibration attack on h.
        target: the fraction of h's robust calibration examples that must stay robust, in (0, 1].
        grid: ``{"s": [...], "p": [...], "c": [...]}`` (default :data:`DEFAULT_GRID`); clamp, k: as in
            :class:`NonlinearMap`.
        steps, restarts: the margin-loss PGD on h; seed: its random starts.
        progress: a tqdm bar over the search (``None``: when stderr is a terminal).

    Cost: one attack on h plus a forward pass of g and h; the grid search works on the stored logits.
    """
    check_data(x, y, "the calibration")
    if not 0 < float(target) <= 1:
        raise InputError(f"target must be in (0, 1], got {target!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    grid = {**DEFAULT_GRID, **(grid or {})}
    if set(grid) != {"s", "p", "c"} or not all(len(v) for v in grid.values()):
        raise InputError(f"grid must give non-empty 's', 'p' and 'c' lists, got {sorted(grid)}")
    if not len(y):
        raise InputError("the calibration set is empty")
    g_clean, h_clean = (_predict(m, x, batch_size).double() for m in (g, h))
    if g_clean.shape[1] != h_clean.shape[1]:
        raise InputError(f"g predicts {g_clean.shape[1]} classes but h predicts {h_clean.shape[1]}")
    if int(y.max()) >= h_clean.shape[1]:
        raise InputError(f"labels go up to {int(y.max())} but the models predict {h_clean.shape[1]} classes")
    generator = torch.Generator().manual_seed(seed)
    x_adv = torch.cat([
        pgd(h, x[i:i + batch_size], y[i:i + batch_size], eps, norm, steps=steps, restarts=restarts,
            loss="margin", data_range=data_range, generator=generator)
        for i in range(0, len(x), batch_size)
    ])
    h_adv = _predict(h, x_adv, batch_size).double()
    robust_set = h_adv.argmax(1) == y
    if not robust_set.any():
        raise InputError("h keeps no calibration example under the attack: there is no robustness to keep")
    fixable_set = (h_clean.argmax(1) != y) & (g_clean.argmax(1) == y)
    z_robust, y_robust = h_adv[robust_set], y[robust_set]
    z_fix, y_fix = h_clean[fixable_set], y[fixable_set]

    search: list[dict[str, float]] = []
    best: tuple[int, float, NonlinearMap] | None = None
    points = list(itertools.product(grid["s"], grid["p"], grid["c"]))
    show = sys.stderr.isatty() if progress is None else progress
    for s, p, c in tqdm(points, desc="calibration search", disable=not show, leave=False):
        candidate = NonlinearMap(s, p, c, k=k, clamp=clamp)
        with torch.no_grad():
            cut = _cutoff(margin(candidate(z_robust).softmax(1), y_robust), target)
            fixable = int((-margin(candidate(z_fix).softmax(1), y_fix) < cut).sum()) if len(y_fix) else 0
        search.append({"s": float(s), "p": float(p), "c": float(c), "cutoff": cut, "fixable": fixable})
        # Ties go to the larger cut-off: the same decisions with margins further from float rounding.
        if best is None or fixable > best[0] or (fixable == best[0] and cut > best[1]):
            best = (fixable, cut, candidate)
    assert best is not None
    _, cut, h_map = best
    # The weight puts the threshold a relative SLACK below the cut-off, so every example counted as kept
    # (margin above the cut-off) clears it by more than float32 rounding.
    weight = 1.0 / (1.0 + cut * (1 - SLACK))
    calibration = Calibration(
        h_map=h_map, weight=weight, cutoff=cut, target=float(target), predicted_clean=0.0, predicted_robust=0.0,
        h_robust=float(robust_set.double().mean()), n=len(y), search=search, x_attacked=x_adv,
    )
    mixture = calibration.mixture(g, h, validate=False)
    clean = _predict(mixture, x, batch_size).argmax(1) == y
    with torch.no_grad():
        margins = margin(h_map(z_robust).softmax(1), y_robust)
    kept = int((margins > cut).sum())
    calibration.predicted_clean = float(clean.double().mean())
    calibration.predicted_robust = kept / len(y)
    return calibration


def calibrate_mixture(model: AdaptiveSmoothing, x: Tensor, y: Tensor, eps: float | None = None,
                      **options: Any) -> Calibration:
    """:func:`calibrate` for ``model.g`` and ``model.h`` (norm from the model), applied to ``model``
    (:meth:`Calibration.apply`); returns the calibration."""
    if not isinstance(model, AdaptiveSmoothing):
        raise InputError(f"calibrate_mixture needs an AdaptiveSmoothing, got {type(model).__name__}")
    if eps is None:
        raise InputError("calibrate_mixture needs the threat model's eps")
    calibration = calibrate(model.g, model.h, x, y, eps, norm=model.norm, **options)
    calibration.apply(model)
    return calibration
