"""``robustmix demo``: the paper's Table 1 in miniature, on scikit-learn digits (offline, CPU, minutes).

g is a standard CNN, h a PGD-adversarially-trained CNN (l_inf, ε = 0.3: where g's robustness collapses and
adversarial training costs clean accuracy, DESIGN.md "Demo setting"), and the adaptive mixture's policy
(Fig. 1) is trained with eq. 9 (:class:`~robustmix.training.PolicyTrainer`). The table reports clean and
per-example worst-case robust accuracy over the whole attack suite for g, h, the adaptive mixture and
fixed-α mixtures, and a PNG shows the α sweep with the adaptive point.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from .attacks import PAPER_ALPHAS
from .data import Split
from .demo_models import DEMO_EPS, Tempered
from .distributed import DistContext, init_from_env
from .policy import PolicyNet
from .smoothing import AdaptiveSmoothing
from .training import PolicyTrainer

__all__ = ["DEMO_MIX", "build_demo_mixture", "demo_trainer", "demo_steps"]

#: How the demo mixes: softmax probabilities with R = 1 and tempered logits (the authors' later release;
#: DESIGN.md lists these as measured levers).
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small training and evaluation (< 1 minute)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, models, training, attacks")
    parser.add_argument("--plot", type=Path, default=Path("robustmix_demo_alpha_sweep.png"), help="PNG path")
    parser.add_argument("--cache-dir", type=Path, default=None, help="reuse/store trained g and h here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--autoattack",
        choices=("auto", "on", "off"),
        default="auto",
        help="add AutoAttack to the suite: 'auto' when pyautoattack is installed (default); 'off' is printed",
    )


def run(args: argparse.Namespace) -> int:
    from .demo_models import get_demo_models_on_every_rank
    from .evaluate import (
        AttackSuite,
        EvalReport,
        alpha_sweep,
        evaluate_models,
        format_table,
        plot_alpha_sweep,
    )

    start = time.perf_counter()
    ctx = init_from_env(device="cpu")  # one process, or one rank under torchrun
    progress = not args.no_progress and ctx.is_main
    torch.manual_seed(args.seed)
    g, h, split = get_demo_models_on_every_rank(
        ctx, quick=args.quick, seed=args.seed, cache_dir=args.cache_dir, progress=progress
    )
    model = build_demo_mixture(g, h, seed=args.seed)
    trainer = demo_trainer(model, split, quick=args.quick, seed=args.seed, progress=progress, ctx=ctx)
    trainer.fit(steps=demo_steps(trainer, args.quick))
    model.eval()

    n_eval = 40 if args.quick else len(split.y_test)
    x, y = split.x_test[:n_eval], split.y_test[:n_eval]
    suite = AttackSuite(
        eps=DEMO_EPS,
        steps=20,
        restarts=3,
        alphas=EVAL_ALPHAS,
        adaptive=True,
        seed=args.seed,
        autoattack={"auto": None, "on": True, "off": False}[args.autoattack],
    )
    dist = ctx.distributed
    report = evaluate_models(
        {"g (standard CNN)": model.g, "h (PGD-trained CNN)": model.h}, x, y, suite, progress, distributed=dist
    )
    adaptive = evaluate_models({"adaptive mixture (policy)": model}, x, y, suite, progress, distributed=dist)
    adaptive = adaptive.scores[0]
    sweep_alphas = (0.0, 1.0, math.inf) if args.quick else SWEEP_ALPHAS
    sweep = alpha_sweep(model, x, y, suite, alphas=sweep_alphas, progress=progress, distributed=dist)
    if not ctx.is_main:
        return 0
    table = EvalReport([*report.scores, adaptive, *sweep], suite)
    print(format_table(table, title=f"digits, l_inf eps={DEMO_EPS} (Table 1 shape)"))
    print(_verdict(report.scores[0], report.scores[1], adaptive, sweep))
    path = plot_alpha_sweep(
        sweep, adaptive, args.plot, title=f"digits, l_inf eps={DEMO_EPS}: fixed α vs policy"
    )
    print(f"wrote {path}; total {time.perf_counter() - start:.0f} s")
    return 0


def _verdict(g: Any, h: Any, adaptive: Any, sweep: list[Any]) -> str:
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
