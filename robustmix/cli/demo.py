"""``robustmix demo``: the paper's Table 1 in miniature on scikit-learn digits (offline, CPU, minutes); see
:mod:`robustmix.demo.recipe`. Under ``torchrun -m robustmix demo`` the work is split and rank 0 prints."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small training and evaluation (< 1 minute)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, models, training, attacks")
    parser.add_argument("--plot", type=Path, default=Path("robustmix_demo_alpha_sweep.png"), help="PNG path")
    parser.add_argument("--cache-dir", type=Path, default=None, help="reuse/store trained g and h here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--full", action="store_true",
        help="standard AutoAttack (with FAB-T; several times slower) instead of its apgd variant + Square, "
        "and the trained policy with the calibrated output maps as one more row",
    )
    parser.add_argument(
        "--autoattack",
        choices=("auto", "on", "off"),
        default="auto",
        help="add AutoAttack to the suite: 'auto' when pyautoattack is installed (default); 'off' is printed",
    )


def run(args: argparse.Namespace) -> int:
    from ..demo.models import DEMO_EPS
    from ..demo.recipe import run_demo, verdict
    from ..distributed import init_from_env
    from ..evaluate import format_table, plot_alpha_sweep

    start = time.perf_counter()
    ctx = init_from_env(device="cpu")  # one process, or one rank under torchrun
    result, _ = run_demo(
        quick=args.quick, seed=args.seed, cache_dir=args.cache_dir, progress=not args.no_progress and ctx.is_main,
        autoattack={"auto": None, "on": True, "off": False}[args.autoattack], ctx=ctx, full=args.full,
    )
    if not ctx.is_main:
        return 0
    cal = result.calibration
    print(format_table(result.report, title=f"digits, l_inf eps={DEMO_EPS} (Table 1 shape)"))
    print(
        f"nonlinear mix: {cal.h_map}, weight on h {cal.weight:.4f}, calibrated on {cal.n} training images to "
        f"keep {100 * cal.target:.0f}% of h's robust ones (predicted clean {100 * cal.predicted_clean:.1f}%, "
        f"robust {100 * cal.predicted_robust:.1f}% there)"
    )
    print(verdict(result))
    path = plot_alpha_sweep(
        result.curve, result.methods, args.plot, title=f"digits, l_inf eps={DEMO_EPS}: fixed α vs the methods"
    )
    print(f"wrote {path}; total {time.perf_counter() - start:.0f} s")
    return 0
