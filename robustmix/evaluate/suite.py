"""The attack suite: which attacks a worst-case robust accuracy is taken over (PGD at every α_t of eq. 6, the
adaptive attack of section 5.1, AutoAttack), and what its table footer says about it."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.checks import check_choice
from ..attacks import (
    AUTOATTACK_VERSIONS,
    PAPER_ALPHAS,
    adaptive_pgd,
    autoattack,
    autoattack_parts,
    composite_pgd,
    pgd,
    surrogate_pgd,
)
from ..smoothing import AdaptiveSmoothing

__all__ = ["Attack", "AttackSuite"]

#: An attack as the suite runs it: (inputs, labels, generator) -> adversarial inputs.
Attack = Callable[[Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class AttackSuite:
    """The attacks a robust accuracy is the per-example worst case over.

    Args:
        eps: attack radius; norm: ``"linf"`` or ``"l2"``.
        steps, restarts, step_size, random_start: PGD settings (default step ``2.5 * eps / steps``).
        alphas: the fixed α_t the mixture is attacked at (eq. 6; default the paper's, section 6.3).
        adaptive: also attack the mixture itself, through its policy (section 5.1).
        surrogate: for mixtures with output maps, also PGD with the margin loss through the mixture's
            differentiable surrogate (maps relaxed; :func:`~robustmix.attacks.surrogate_pgd`) at the
            deployed α and at every α_t, judged on the deployed mixture.
        autoattack: run AutoAttack as well; ``None`` (default) runs it when ``pyautoattack`` is installed.
        autoattack_version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"apgd"`` (see :func:`autoattack`).
        square: with AutoAttack on, also run the gradient-free Square attack when the version lacks it.
        batch_size: examples per attacked batch; data_range: the valid input range.
        seed: seeds the random starts (and AutoAttack), so a run is reproducible.
    """

    eps: float
    norm: str = "linf"
    steps: int = 20
    restarts: int = 3
    step_size: float | None = None
    random_start: bool = True
    alphas: tuple[float, ...] = PAPER_ALPHAS
    adaptive: bool = True
    surrogate: bool = True
    autoattack: bool | None = None
    autoattack_version: str = "standard"
    square: bool = True
    batch_size: int = 256
    data_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, ("linf", "l2"))
        check_choice("autoattack_version", self.autoattack_version, AUTOATTACK_VERSIONS)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")
        for name in ("steps", "restarts", "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True: without a random start every restart is the same")
        alphas = tuple(float(a) for a in self.alphas)
        if any(math.isnan(a) or a < 0 for a in alphas):
            raise ValueError(f"alphas must be >= 0 (math.inf for h alone), got {self.alphas!r}")
        object.__setattr__(self, "alphas", alphas)
        if self.use_autoattack and tuple(self.data_range) != (0.0, 1.0):
            raise ValueError("AutoAttack assumes inputs in [0, 1]; use data_range=(0, 1) or autoattack=False")

    @property
    def use_autoattack(self) -> bool:
        """Whether AutoAttack is part of the suite (``autoattack=None`` resolves to "if installed")."""
        if self.autoattack is None:
            return importlib.util.find_spec("pyautoattack") is not None
        return self.autoattack

    def _pgd_kwargs(self) -> dict:
        return dict(
            eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
            restarts=self.restarts, random_start=self.random_start, data_range=self.data_range,
        )

    def attacks_for(self, model: nn.Module) -> list[tuple[str, Attack]]:
        """The named attacks run against ``model``, in order."""
        kw = self._pgd_kwargs()
        attacks: list[tuple[str, Attack]] = []
        if isinstance(model, AdaptiveSmoothing):
            # The attack on the deployed model itself goes first: it usually breaks the most examples, and
            # every later attack only runs on the survivors (the AND over attacks does not depend on order).
            # With a fixed α that the grid below holds, the adaptive attack is the same attack as PGD at α_t = α.
            fixed = model.policy is None and not isinstance(model.alpha, torch.Tensor)
            if self.adaptive and not (fixed and float(model.alpha) in self.alphas):
                attacks.append(("adaptive PGD", lambda x, y, gen: adaptive_pgd(model, x, y, generator=gen, **kw)))
            for a in self.alphas:
                attacks.append((f"PGD at α_t={a:g}", _composite(model, a, kw)))
            if self.surrogate and model.has_maps:
                for a in (None, *self.alphas):
                    where = "deployed" if a is None else f"α_t={a:g}"
                    attacks.append((f"surrogate PGD (margin) at {where}", _surrogate(model, a, kw)))
        else:
            attacks.append(("PGD", lambda x, y, gen: pgd(model, x, y, generator=gen, **kw)))
        for version in self._autoattack_versions():
            name = "AutoAttack" if version != "square" else "Square"
            attacks.append((name, _autoattack(model, version, self)))
        return attacks

    def _autoattack_versions(self) -> list[str]:
        if not self.use_autoattack:
            return []
        versions = [self.autoattack_version]
        if self.square and "square" not in autoattack_parts(self.autoattack_version, 2)[0]:
            versions.append("square")
        return versions

    def describe(self, num_classes: int | None = None) -> str:
        """One line saying what the robust numbers are the worst case over; with ``num_classes``, which
        AutoAttack parts are defined for that many classes (the others are left out and named)."""
        norm = "l_inf" if self.norm == "linf" else "l_2"
        pgd_name = f"PGD-{self.steps}" + (f" x{self.restarts} restarts" if self.restarts > 1 else "")
        alphas = ", ".join(f"{a:g}" for a in self.alphas)
        parts = [f"{pgd_name} (mixtures: at α_t ∈ {{{alphas}}}"
                 + (", and adaptive: the deployed model itself, through its policy" if self.adaptive else "")
                 + ("; with output maps also margin-loss PGD through the maps' surrogate at the deployed α "
                    "and every α_t)" if self.surrogate else ")")]
        if not self.use_autoattack:
            parts.append("no AutoAttack")
        elif num_classes is None:
            parts.append(f"AutoAttack ({self.autoattack_version})")
        else:
            run, skipped = autoattack_parts(self.autoattack_version, num_classes)
            text = f"AutoAttack ({self.autoattack_version}: {', '.join(p.upper() for p in run)}"
            if skipped:
                text += f"; {', '.join(p.upper() for p in skipped)} left out: not defined for {num_classes} classes"
            parts.append(text + ")")
        if "square" in self._autoattack_versions():
            parts.append("Square (gradient-free)")
        return f"{norm} eps={self.eps:g}: " + "; ".join(parts)


def _composite(model: AdaptiveSmoothing, alpha_t: float, kw: dict) -> Attack:
    return lambda x, y, gen: composite_pgd(model, x, y, alpha_t, generator=gen, **kw)


def _surrogate(model: AdaptiveSmoothing, alpha_t: float | None, kw: dict) -> Attack:
    return lambda x, y, gen: surrogate_pgd(model, x, y, alpha_t, generator=gen, **kw)


def _autoattack(model: nn.Module, version: str, suite: AttackSuite) -> Attack:
    return lambda x, y, gen: autoattack(
        model, x, y, suite.eps, suite.norm, version, seed=suite.seed, batch_size=suite.batch_size
    )


