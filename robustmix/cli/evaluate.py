"""``robustmix eval``: clean and worst-case robust accuracy of the digits demo's g, h and fixed-α mixtures.

Prints a Table-1-style table (every robust number is the per-example worst case over the attack suite)
and optionally writes the α-sweep plot. Heavy imports happen inside :func:`run` so ``--help`` stays fast.
Under ``torchrun --nproc_per_node=N`` the examples are split over the N processes; rank 0 prints.
"""

from __future__ import annotations

import argparse
import math

_PAPER_ALPHAS = "0,0.316,1.46,6.81,31.6,147,681,3162,inf"  # section 6.3, as robustmix.attacks.PAPER_ALPHAS


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(a) for a in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (inf allowed), got {text!r}") from err
    if any(math.isnan(a) or a < 0 for a in values):
        raise argparse.ArgumentTypeError(f"alphas must be >= 0, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the demo's quick models (for tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo models and of the attacks")
    parser.add_argument("--cache-dir", default=None, help="reuse/store the demo models' weights here")
    parser.add_argument("--eps", type=float, default=None, help="attack radius (default: the demo's eps)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--restarts", type=int, default=3, help="PGD random restarts")
    parser.add_argument("--alphas", type=_alphas, default=_alphas(_PAPER_ALPHAS),
                        help=f"fixed α_t to attack at and to sweep (default {_PAPER_ALPHAS})")
    parser.add_argument("--mode", choices=("argmax", "jacobian", "none"), default="argmax",
                        help="R of the mixtures (eq. 10, eq. 5, or R = 1)")
    parser.add_argument("--space", choices=("logit", "prob"), default="logit", help="what the mixtures mix")
    parser.add_argument("--autoattack", choices=("auto", "on", "off"), default="auto",
                        help="add AutoAttack to the suite (auto: when pyautoattack is installed)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test examples")
    parser.add_argument("--plot", default=None, help="write the α-sweep plot (PNG) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..demo.models import DEMO_EPS, get_demo_models_on_every_rank
    from ..distributed import init_from_env
    from ..evaluate import (
        AttackSuite,
        EvalReport,
        alpha_sweep,
        evaluate_models,
        format_table,
        plot_alpha_sweep,
    )
    from ..smoothing import AdaptiveSmoothing

    ctx = init_from_env(device="cpu")  # one process, or one rank under torchrun (gloo)
    progress = False if args.no_progress or not ctx.is_main else None
    suite = AttackSuite(
        eps=DEMO_EPS if args.eps is None else args.eps, norm=args.norm, steps=args.steps, restarts=args.restarts,
        alphas=args.alphas, autoattack={"auto": None, "on": True, "off": False}[args.autoattack],
        batch_size=args.batch_size, seed=args.seed,
    )
    g, h, split = get_demo_models_on_every_rank(ctx, quick=args.quick, seed=args.seed, cache_dir=args.cache_dir,
                                                progress=not args.no_progress)
    x, y = split.x_test, split.y_test
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    dist = ctx.distributed
    report = evaluate_models({"g (standard)": g, "h (robust)": h}, x, y, suite, progress=progress, distributed=dist)
    template = AdaptiveSmoothing(g, h, alpha=1.0, mode=args.mode, norm=args.norm, space=args.space)
    sweep = alpha_sweep(template, x, y, suite, progress=progress, distributed=dist)
    if not ctx.is_main:
        return 0
    report = EvalReport(report.scores + sweep, suite)
    print(format_table(report, title=f"digits demo ({'quick' if args.quick else 'full'} models, seed {args.seed})"))
    if args.plot:
        path = plot_alpha_sweep(sweep, None, args.plot, title="digits: fixed-α mixtures of g and h")
        print(f"plot written to {path}")
    return 0
