"""``robustmix certify``: certified accuracy of a mixture at a few radii, saying what is certified.

The model is ``--model`` or ``--g``/``--h`` (default mode ``jacobian``: Theorem 2 covers eq. 5 at a fixed
α); without either, the digits demo's pair.

Two kinds of numbers are printed, each labelled:

* Theorem 2 (sound bound propagation, deterministic) for the mixture at its fixed α, in its norm — these
  are certificates;
* randomized-smoothing certificates (l_2, probability-space convex mix with weight w on a Gaussian-smoothed
  h, :mod:`robustmix.certify.randomized`) — certificates that hold with the stated confidence over the Monte
  Carlo noise.

``--empirical`` adds Theorem 2 with sampled constants, printed as NOT certified.
"""

from __future__ import annotations

import argparse

from . import _options as opt


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("radii must be >= 0")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt.add_model_arguments(parser, mode="jacobian")
    opt.add_data_arguments(parser, limit=10)
    parser.add_argument("--radii", type=_floats, default=(0.0, 0.001, 0.002, 0.005, 0.01),
                        help="radii for Theorem 2, in the mixture's norm (comma-separated)")
    parser.add_argument("--rs-radii", type=_floats, default=(0.0, 0.1, 0.25, 0.5),
                        help="l_2 radii for the randomized-smoothing certificates (comma-separated)")
    parser.add_argument("--no-rs", action="store_true", help="skip the randomized-smoothing certificates")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise of the smoothed h")
    parser.add_argument("--w", type=float, default=0.8, help="weight on the smoothed h in the probability mix")
    parser.add_argument("--n", type=int, default=1000, help="Monte Carlo samples per image")
    parser.add_argument("--confidence", type=float, default=0.999, help="confidence of the RS certificates")
    parser.add_argument(
        "--split-budget", type=int, default=0,
        help="Theorem 2: cover the ball with up to this many l_inf boxes where the whole-ball check fails "
        "(input splitting; for inputs of a few dimensions); 0: off",
    )
    parser.add_argument("--empirical", action="store_true", help="also print Theorem 2 with sampled constants (NOT certified)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf", help="norm of a --g/--h mixture")
    opt.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..certify import RandomizedSmoothing, certify, certify_mixture
    from ..errors import InputError
    from ..smoothing import AdaptiveSmoothing
    from ..workflow import resolve_device, run_record, write_json

    if not 0 < args.w < 1:
        raise InputError("--w must be in (0, 1)")
    start = time.perf_counter()
    device = resolve_device(args.device)
    data = opt.load_data(args)
    model = opt.load_model(args, data, device)
    x, y = data.x.to(device), data.y.to(device)
    progress = opt.progress_of(args)
    opt.say(args, f"robustmix certify: {opt.describe_model(args)} on {data.name} ({data.split}), {len(x)} images")
    try:
        report = certify(model, (x, y), radii=args.radii, progress=progress, split_budget=args.split_budget)
    except (ValueError, NotImplementedError) as err:
        raise InputError(f"Theorem 2 cannot certify this model: {err}") from err
    print(f"[CERTIFICATE] Theorem 2 ({model.norm}), {model.mode} mixture alpha={model.alpha}: {report}")
    record = {"theorem2": {"radii": list(report.radii), "accuracy": list(report.accuracy),
                           "radius_per_example": report.radii_per_sample, "norm": model.norm,
                           "split_budget": args.split_budget}}
    if args.empirical:
        emp = certify(model, (x, y), radii=args.radii, method="empirical", progress=progress)
        print(f"[NOT CERTIFIED] Theorem 2 with sampled constants: {emp}")
        record["empirical_not_certified"] = {"radii": list(emp.radii), "accuracy": list(emp.accuracy)}

    if not args.no_rs:
        smoothed = RandomizedSmoothing(model.h, args.sigma, n=args.n, batch=500)
        rs_model = AdaptiveSmoothing(model.g, smoothed, alpha=args.w / (1 - args.w), mode="none", space="prob")
        gen = torch.Generator(device=device).manual_seed(args.seed)
        radii = []
        for xs, ys in zip(x, y, strict=True):
            cert = certify_mixture(rs_model, xs[None], label=int(ys), confidence=args.confidence, generator=gen)
            radii.append(-1.0 if cert.abstain else cert.radius)
        shares = [sum(1 for v in radii if v >= r and v >= 0) / len(radii) for r in args.rs_radii]
        rows = ", ".join(f"r={r:g}: {a:.1%}" for r, a in zip(args.rs_radii, shares, strict=True))
        print(
            f"[CERTIFICATE, holds with probability >= {args.confidence}] randomized smoothing, l2, sigma={args.sigma}, "
            f"w={args.w} on h, n={args.n}: certified accuracy {rows} (abstained: {sum(v < 0 for v in radii)})"
        )
        record["randomized_smoothing"] = {"radii": list(args.rs_radii), "accuracy": shares, "sigma": args.sigma,
                                          "w": args.w, "n": args.n, "confidence": args.confidence,
                                          "radius_per_example": radii}
    opt.say(args, "Certified radii are lower bounds on the robust radius; they do not bound empirical attack accuracy.")
    if args.out:
        out = run_record("certify", model=opt.model_spec(args),
                         dataset={"name": data.name, "split": data.split, "n": len(y)},
                         seconds=time.perf_counter() - start, **record)
        opt.say(args, f"wrote {write_json(args.out, out)}")
    return 0
