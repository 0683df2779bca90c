"""Wrap a standard and a robust classifier in three lines and compare them (eq. 5, fixed α).

    python examples/three_line_wrap.py [--alpha 1.0] [--cache-dir .cache] [--smoke]

g is a standard CNN and h a PGD-trained CNN on scikit-learn's digits; the mixture's clean and worst-case
robust accuracy (l_inf PGD at ε = 0.3) typically lie between theirs, moving towards h as α grows.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from _digits import digits_models

from robustmix.demo.models import DEMO_EPS
from robustmix.evaluate import AttackSuite, evaluate_models, format_table
from robustmix.smoothing import AdaptiveSmoothing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=1.0, help="the fixed trade-off α of eq. 5")
    parser.add_argument("--cache-dir", type=Path, default=None, help="store/reuse the trained g and h here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds-long CI run (untrained-quality models)")
    args = parser.parse_args(argv)

    g, h, split = digits_models(args.smoke, args.seed, args.cache_dir)

    # The three lines: two models in, one classifier out.
    model = AdaptiveSmoothing(g, h, alpha=args.alpha)  # eq. 5 with the single-gradient R of eq. 10
    with torch.no_grad():
        predictions = model(split.x_test[:5]).argmax(dim=1)
    print("mixture predicts", predictions.tolist(), "for labels", split.y_test[:5].tolist())

    n = 40 if args.smoke else len(split.y_test)
    suite = AttackSuite(
        eps=DEMO_EPS,
        steps=3 if args.smoke else 20,
        restarts=1 if args.smoke else 3,
        alphas=(0.0, args.alpha, math.inf),  # attack the mixture through g, through itself, through h
        adaptive=False,
        autoattack=False,
        seed=args.seed,
    )
    models = {"g (standard)": g, "h (PGD-trained)": h, f"mixture α={args.alpha:g}": model}
    report = evaluate_models(models, split.x_test[:n], split.y_test[:n], suite, progress=False)
    print(format_table(report, title="digits, l_inf eps=0.3"))


if __name__ == "__main__":
    main()
