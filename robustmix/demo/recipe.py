"""The demo's recipe: the paper's Table 1 in miniature, on scikit-learn digits (offline, CPU, minutes).

g is a standard CNN, h a PGD-adversarially-trained CNN (l_inf, ε = 0.3: where g's robustness collapses and
adversarial training costs clean accuracy, docs/design.md "The demo"), and the adaptive mixture's policy
(Fig. 1) is trained with eq. 9 (:class:`~robustmix.training.PolicyTrainer`). The training-free nonlinear
mixture (MixedNUTS form: g's hard max, h's logits through a calibrated layer-norm/GELU/power map) is
calibrated on training images (:func:`~robustmix.calibration.calibrate`). :func:`run_demo` returns clean and
per-example worst-case robust accuracy over the whole attack suite for every row, all rows evaluated
together so that each faces the adversarial inputs found against the others; ``robustmix demo`` prints
them and plots the fixed-α curve with the methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..attacks import PAPER_ALPHAS
from ..calibration import Calibration, calibrate
from ..distributed import DistContext
from ..evaluate import AttackSuite, EvalReport, Score, evaluate_models
from ..evaluate.accuracy import fixed_alpha_mixtures
from ..nn.layers import Tempered
from ..nn.maps import HardMax
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
    "demo_suite",
    "gain_over_curve",
    "CALIBRATION_SIZE",
    "CALIBRATION_TARGET",
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
#: The fixed trade-offs of the α sweep between g (α = 0) and h (α = ∞), the curve the methods must beat.
SWEEP_ALPHAS = (0.3, 1.0, 3.0, 10.0)
#: The nonlinear mixture is calibrated on this many training images, to keep this fraction of h's robust ones.
CALIBRATION_SIZE = 400
CALIBRATION_TARGET = 0.8
#: The α_t the evaluation attacks every mixture at: the paper's grid and the sweep's own values.
EVAL_ALPHAS = tuple(sorted(set(PAPER_ALPHAS) | set(SWEEP_ALPHAS) | {0.0, math.inf}))


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
    return 2 if quick else 6 * trainer.batches_per_epoch


@dataclass
class DemoResult:
    """What the demo measured, every row under one suite with adversarial inputs shared between rows:
    g, h, the fixed-α sweep between them, the learned policy, the calibrated nonlinear mixture and the
    policy with the calibrated output maps."""

    g: Score
    h: Score
    sweep: list[Score]
    adaptive: Score
    nonlinear: Score
    calibration: Calibration
    suite: AttackSuite
    #: ``--full`` only: the trained policy with the calibrated maps put in. The policy was trained for the
    #: tempered softmax mix (α in [1, 55]), not for the maps, so this row shows what combining them
    #: without training gives; training the policy with the maps doubles the demo's training time.
    adaptive_mapped: Score | None = None

    @property
    def methods(self) -> list[Score]:
        """The rows that claim to beat the fixed-α curve."""
        return [self.adaptive, self.nonlinear, *([self.adaptive_mapped] if self.adaptive_mapped else [])]

    @property
    def curve(self) -> list[Score]:
        """The fixed-α curve, from g (α = 0) to h (α = ∞)."""
        return [replace(self.g, alpha=0.0), *self.sweep, replace(self.h, alpha=math.inf)]

    @property
    def report(self) -> EvalReport:
        """Every row, in the table's order."""
        return EvalReport([self.g, self.h, *self.sweep, *self.methods], self.suite, transfer=True)


def demo_suite(seed: int, autoattack: bool | None, full: bool = False) -> AttackSuite:
    """PGD-20 x 3 restarts at every α_t of :data:`EVAL_ALPHAS`, the adaptive attack, margin-loss PGD through
    the maps' surrogate, AutoAttack (the ``apgd`` variant plus Square; ``full``: the standard version),
    all examples in one batch (the attacks do not depend on it)."""
    return AttackSuite(
        eps=DEMO_EPS, steps=20, restarts=3, alphas=EVAL_ALPHAS, adaptive=True, seed=seed, autoattack=autoattack,
        autoattack_version="standard" if full else "apgd", batch_size=1024,
    )


def run_demo(
    quick: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    autoattack: bool | None = None,
    ctx: DistContext | None = None,
    full: bool = False,
) -> tuple[DemoResult, AdaptiveSmoothing]:
    """Train g, h and the policy on digits, calibrate the nonlinear mixture, and evaluate everything
    together; returns the scores and the policy's mixture.

    ``autoattack``: add AutoAttack to the suite (``None``: when ``pyautoattack`` is installed); ``full``:
    standard AutoAttack instead of its ``apgd`` variant + Square, and the policy with the calibrated maps
    as one more row. Under torchrun (``ctx`` with several
    ranks) training is split over the processes and every rank gets the same result.
    """
    ctx = ctx or DistContext()
    torch.manual_seed(seed)
    g, h, split = get_demo_models_on_every_rank(ctx, quick=quick, seed=seed, cache_dir=cache_dir, progress=progress)
    model = build_demo_mixture(g, h, seed=seed)
    trainer = demo_trainer(model, split, quick=quick, seed=seed, progress=progress, ctx=ctx)
    trainer.fit(steps=demo_steps(trainer, quick))
    model.eval()

    n_cal = 100 if quick else CALIBRATION_SIZE
    calibration = calibrate(
        g, h, split.x_train[:n_cal], split.y_train[:n_cal], DEMO_EPS, target=CALIBRATION_TARGET, seed=seed,
        progress=progress and ctx.is_main,
    )
    nonlinear = calibration.mixture(g, h)

    n_eval = 40 if quick else len(split.y_test)
    x, y = split.x_test[:n_eval], split.y_test[:n_eval]
    suite = demo_suite(seed, autoattack, full)
    sweep_alphas = (1.0,) if quick else SWEEP_ALPHAS
    sweep = fixed_alpha_mixtures(model, sweep_alphas)
    rows = {
        "g (standard CNN, α=0)": model.g,
        "h (PGD-trained CNN, α=∞)": model.h,
        **sweep,
        "adaptive mixture (policy)": model,
        "nonlinear mix (calibrated)": nonlinear,
    }
    if full:  # the trained policy with the calibrated maps put in, untrained for them (see DemoResult)
        rows["policy + nonlinear maps"] = AdaptiveSmoothing(
            model.g, model.h, policy=model.policy, **DEMO_MIX, g_map=HardMax(), h_map=calibration.h_map
        )
    alphas = dict(zip(sweep, sweep_alphas, strict=True))
    report = evaluate_models(rows, x, y, suite, progress, distributed=ctx.distributed, alphas=alphas)
    g_s, h_s, *rest = report.scores
    sweep_scores, methods = rest[: len(sweep)], rest[len(sweep):]
    result = DemoResult(g_s, h_s, sweep_scores, *methods[:2], calibration=calibration, suite=suite,
                        adaptive_mapped=methods[2] if full else None)
    return result, model


def gain_over_curve(point: Any, curve: list[Any]) -> float:
    """Points of robust accuracy ``point`` has over the best fixed-α mixture (g and h included) with at least
    its clean accuracy; a point cleaner than every fixed α is compared with the cleanest one."""
    qualifying = [p.robust for p in curve if p.clean >= point.clean]
    best = max(qualifying) if qualifying else max(curve, key=lambda p: p.clean).robust
    return 100 * (point.robust - best)


def verdict(result: DemoResult) -> str:
    """The paper's claim checked per method (clean within 2 points of g, robust within 3 of h) and the
    gain over the fixed-α curve at the method's clean accuracy."""
    lines = []
    curve = result.curve
    for point in result.methods:
        clean_gap, robust_gap = 100 * (result.g.clean - point.clean), 100 * (result.h.robust - point.robust)
        claim = "meets" if clean_gap <= 2 and robust_gap <= 3 else "misses"
        gain = gain_over_curve(point, curve)
        lines.append(
            f"{point.name}: clean gap to g {clean_gap:+.1f} (goal <= 2), robust gap to h {robust_gap:+.1f} "
            f"(goal <= 3): {claim} the paper's claim; {gain:+.1f} points robust over the best fixed α "
            "at least as clean"
        )
    return "\n".join(lines)
