"""``robustmix certify``: certified accuracy of the demo's mixtures at a few radii, saying what is certified.

Two kinds of numbers are printed, each labelled:

* Theorem 2 (sound bound propagation, deterministic) for the jacobian-mode mixture of the demo's g and h
  at a fixed α, in the demo's norm (l_inf) — these are certificates;
* randomized-smoothing certificates (l_2, probability-space convex mix with weight w on a Gaussian-smoothed
  h, :mod:`robustmix.certify.randomized`) — certificates that hold with the stated confidence over the Monte
  Carlo noise.

``--empirical`` adds Theorem 2 with sampled constants, printed as NOT certified.
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("radii must be >= 0")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the demo's quick models (for tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo models and of the Monte Carlo noise")
    parser.add_argument("--cache-dir", default=None, help="reuse/store the demo models' weights here")
    parser.add_argument("--limit", type=int, default=10, help="number of test images to certify")
    parser.add_argument("--alpha", type=float, default=1.0, help="fixed α of the Theorem 2 mixture (jacobian mode)")
    parser.add_argument("--radii", type=_floats, default=(0.0, 0.001, 0.002, 0.005, 0.01),
                        help="l_inf radii for Theorem 2 (comma-separated)")
    parser.add_argument("--rs-radii", type=_floats, default=(0.0, 0.1, 0.25, 0.5),
                        help="l_2 radii for the randomized-smoothing certificates (comma-separated)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise of the smoothed h")
    parser.add_argument("--w", type=float, default=0.8, help="weight on the smoothed h in the probability mix")
    parser.add_argument("--n", type=int, default=1000, help="Monte Carlo samples per image")
    parser.add_argument("--confidence", type=float, default=0.999, help="confidence of the RS certificates")
    parser.add_argument("--empirical", action="store_true", help="also print Theorem 2 with sampled constants (NOT certified)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..certify import RandomizedSmoothing, certify, certify_mixture
    from ..demo.models import get_demo_models
    from ..smoothing import AdaptiveSmoothing

    if not 0 < args.w < 1:
        raise SystemExit("--w must be in (0, 1)")
    g, h, split = get_demo_models(quick=args.quick, seed=args.seed, cache_dir=args.cache_dir, progress=not args.no_progress)
    x, y = split.x_test[: args.limit], split.y_test[: args.limit]
    print(f"robustmix certify: demo models on digits, {len(x)} test images")

    mixture = AdaptiveSmoothing(g, h, alpha=args.alpha, mode="jacobian", norm="linf")
    report = certify(mixture, (x, y), radii=args.radii, progress=not args.no_progress)
    print(f"[CERTIFICATE] Theorem 2, jacobian mixture alpha={args.alpha}: {report}")
    if args.empirical:
        emp = certify(mixture, (x, y), radii=args.radii, method="empirical", progress=not args.no_progress)
        print(f"[NOT CERTIFIED] Theorem 2 with sampled constants: {emp}")

    smoothed = RandomizedSmoothing(h, args.sigma, n=args.n, batch=500)
    rs_model = AdaptiveSmoothing(g, smoothed, alpha=args.w / (1 - args.w), mode="none", space="prob")
    gen = torch.Generator().manual_seed(args.seed)
    radii = []
    for xs, ys in zip(x, y, strict=True):
        cert = certify_mixture(rs_model, xs[None], label=int(ys), confidence=args.confidence, generator=gen)
        radii.append(-1.0 if cert.abstain else cert.radius)
    rows = ", ".join(f"r={r:g}: {sum(1 for v in radii if v >= r and v >= 0) / len(radii):.1%}" for r in args.rs_radii)
    print(
        f"[CERTIFICATE, holds with probability >= {args.confidence}] randomized smoothing, l2, sigma={args.sigma}, "
        f"w={args.w} on h, n={args.n}: certified accuracy {rows} (abstained: {sum(v < 0 for v in radii)})"
    )
    print("Certified radii are lower bounds on the robust radius; they do not bound empirical attack accuracy.")
    return 0
