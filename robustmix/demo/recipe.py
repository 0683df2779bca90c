"""The demo's recipe: the paper's Table 1 in miniature, on scikit-learn digits (offline, CPU, minutes).

g is a standard CNN, h a PGD-adversarially-trained CNN (l_inf, ε = 0.3: where g's robustness collapses and
adversarial training costs clean accuracy, docs/design.md "The demo"), and the adaptive mixture's policy
(Fig. 1) is trained with eq. 9 (:class:`~robustmix.training.PolicyTrainer`). :func:`run_demo` returns clean
and per-example worst-case robust accuracy over the whole attack suite for g, h, the adaptive mixture and
fixed-α mixtures; ``robustmix demo`` prints them and plots the α sweep with the adaptive point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attacks import PAPER_ALPHAS
from ..distributed import DistContext
from ..evaluate import AttackSuite, EvalReport, Score, alpha_sweep, evaluate_models
from ..nn.layers import Tempered
from ..nn.policies import PolicyNet
from ..smoothing import AdaptiveSmoothing
from ..training import PolicyTrainer
from .data import Split
from .models import DEMO_EPS, get_demo_models_on_every_rank

__all__ = [
    "DEMO_MIX",
    "POLICY_CONFIG",
    "TRAIN_CONFIG",
    "SWEEP_ALPHAS",
    "EVAL_ALPHAS",
    "DemoResult",
    "build_demo_mixture",
    "demo_trainer",
    "demo_steps",
    "run_demo",
    "verdict",
]

#: How the demo mixes: softmax probabilities with R = 1 and tempered logits (the authors' later release;
#: docs/design.md lists these as measured levers).
DEMO_MIX: dict[str, Any] = {"mode": "none", "space": "prob"}
G_SCALE, H_SCALE = 0.5, 4.0
#: Fig. 1 head on the first and third conv blocks of both models; β restricted to [0, 4] (α in [1, 55]),
#: the range near h where the fixed-α sweep trades clean for robust accuracy.
POLICY_CONFIG: dict[str, Any] = {
    "g_layers": ["model.act1", "model.act3"],
    "h_layers": ["model.act1", "model.act3"],
    "width": 32,
    "depth": 2,
    "hidden": 64,
    "output_bn": True,
    "beta_range": [0.0, 4.0],
}
#: Training attacks: PGD-10 at these α_t (three drawn per batch) plus the adaptive attack, with the radius
#: randomised per batch in [0.5, 1.2] x eps (randomised, stronger attacks: a measured lever).
TRAIN_CONFIG: dict[str, Any] = {
    "alphas": (0.0, 0.3, 1.0, 3.0, 10.0, math.inf),
    "beta0": 0.5,
    "attack_steps": 10,
    "adaptive_steps": 10,
    "alphas_per_batch": 3,
    "eps_scale_range": (0.5, 1.2),
    "batch_size": 64,
    "lr": 1e-3,
}
#: The fixed trade-offs of the α sweep (the curve the adaptive point is compared with).
SWEEP_ALPHAS = (0.0, 0.3, 1.0, 3.0, 10.0, math.inf)
#: The α_t the evaluation attacks every mixture at: the paper's grid and the sweep's own values.
EVAL_ALPHAS = tuple(sorted(set(PAPER_ALPHAS) | set(SWEEP_ALPHAS)))


def build_demo_mixture(g: torch.nn.Module, h: torch.nn.Module, seed: int = 0) -> AdaptiveSmoothing:
    """The demo's adaptive mixture of tempered ``g`` and ``h`` with a fresh :class:`PolicyNet` (seeded)."""
    g_t, h_t = Tempered(g, G_SCALE).eval(), Tempered(h, H_SCALE).eval()
    torch.manual_seed(seed)
    policy = PolicyNet(g_t, h_t, **POLICY_CONFIG)
    return AdaptiveSmoothing(g_t, h_t, policy=policy, **DEMO_MIX)


def demo_trainer(
    model: AdaptiveSmoothing,
    split: Split,
    quick: bool,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    progress: bool = True,
    ctx: DistContext | None = None,
    batch_size: int | None = None,
) -> PolicyTrainer:
    """The demo's :class:`PolicyTrainer` (eq. 9) on the training split.

    Under ``torchrun`` (``ctx`` with several ranks) each rank trains on its shard with an equal part of the
    recipe's batch, so the global batch is the same for any number of processes (the policy's BatchNorm
    layers see per-rank batch statistics, as in any DDP run without SyncBatchNorm). ``batch_size``: another
    global batch than the recipe's.
    """
    ctx = ctx or DistContext()
    config = dict(TRAIN_CONFIG)
    if batch_size is not None:  # the global batch
        config["batch_size"] = batch_size
    if config["batch_size"] % ctx.world_size:
        raise ValueError(
            f"the global batch of {config['batch_size']} does not split evenly over {ctx.world_size} "
            "processes; use a number of processes that divides it"
        )
    config["batch_size"] //= ctx.world_size
    return PolicyTrainer(
        model,
        split.x_train,
        split.y_train,
        eps=DEMO_EPS,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress and ctx.is_main,
        rank=ctx.rank,
        world_size=ctx.world_size,
        **config,
    )


def demo_steps(trainer: PolicyTrainer, quick: bool) -> int:
    """Policy training steps of the demo: a few for ``--quick``, several epochs otherwise."""
    return 2 if quick else 8 * trainer.batches_per_epoch


@dataclass
class DemoResult:
    """What the demo measured: g, h, the adaptive mixture and the fixed-α sweep, under one suite."""

    g: Score
    h: Score
    adaptive: Score
    sweep: list[Score]
    suite: AttackSuite

    @property
    def report(self) -> EvalReport:
        """Every row, in the table's order."""
        return EvalReport([self.g, self.h, self.adaptive, *self.sweep], self.suite)


def run_demo(
    quick: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    autoattack: bool | None = None,
    ctx: DistContext | None = None,
) -> tuple[DemoResult, AdaptiveSmoothing]:
    """Train g, h and the policy on digits and evaluate everything; returns the scores and the mixture.

    ``autoattack``: add AutoAttack to the suite (``None``: when ``pyautoattack`` is installed). Under
    torchrun (``ctx`` with several ranks) training and evaluation are split over the processes and every
    rank gets the same result.
    """
    ctx = ctx or DistContext()
    torch.manual_seed(seed)
    g, h, split = get_demo_models_on_every_rank(ctx, quick=quick, seed=seed, cache_dir=cache_dir, progress=progress)
    model = build_demo_mixture(g, h, seed=seed)
    trainer = demo_trainer(model, split, quick=quick, seed=seed, progress=progress, ctx=ctx)
    trainer.fit(steps=demo_steps(trainer, quick))
    model.eval()

    n_eval = 40 if quick else len(split.y_test)
    x, y = split.x_test[:n_eval], split.y_test[:n_eval]
    suite = AttackSuite(eps=DEMO_EPS, steps=20, restarts=3, alphas=EVAL_ALPHAS, adaptive=True, seed=seed,
                        autoattack=autoattack)
    dist = ctx.distributed
    base = evaluate_models({"g (standard CNN)": model.g, "h (PGD-trained CNN)": model.h}, x, y, suite, progress,
                           distributed=dist)
    adaptive = evaluate_models({"adaptive mixture (policy)": model}, x, y, suite, progress, distributed=dist).scores[0]
    sweep_alphas = (0.0, 1.0, math.inf) if quick else SWEEP_ALPHAS
    sweep = alpha_sweep(model, x, y, suite, alphas=sweep_alphas, progress=progress, distributed=dist)
    return DemoResult(base.scores[0], base.scores[1], adaptive, sweep, suite), model


def verdict(g: Any, h: Any, adaptive: Any, sweep: list[Any]) -> str:
    """The paper's claim checked on the numbers above: clean within 2 points of g, robust within 3 of h,
    and the policy's point not dominated by any fixed-α mixture."""
    clean_gap, robust_gap = 100 * (g.clean - adaptive.clean), 100 * (h.robust - adaptive.robust)
    dominated_by = [
        p.name
        for p in sweep
        if p.clean >= adaptive.clean
        and p.robust >= adaptive.robust
        and (p.clean, p.robust) != (adaptive.clean, adaptive.robust)
    ]
    lines = [
        f"adaptive vs g: clean gap {clean_gap:+.1f} points (goal <= 2); "
        f"adaptive vs h: robust gap {robust_gap:+.1f} points (goal <= 3)",
        "the policy beats every fixed α on the sweep (no fixed-α mixture is at least as good on both)"
        if not dominated_by
        else "the policy does NOT beat the fixed-α curve: dominated by " + ", ".join(dominated_by),
    ]
    return "\n".join(lines)
