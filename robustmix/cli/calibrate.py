"""``robustmix calibrate``: the training-free nonlinear mixture (MixedNUTS form) for a pair of models.

Attacks h once on a calibration split (default: the first 500 training images), picks h's output map and
the weight on h (:func:`robustmix.calibrate`), prints what it chose and predicts, and saves the calibrated
mixture with ``save_pretrained`` (the model card lists the predicted numbers, labelled as predictions on
the calibration split). Evaluate the saved model with ``robustmix eval --model DIR``.
"""

from __future__ import annotations

import argparse

from . import _options as opt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt.add_model_arguments(parser, mode="none")
    opt.add_data_arguments(parser, split="train", limit=500)
    group = parser.add_argument_group("calibration")
    group.add_argument("--norm", choices=("linf", "l2"), default="linf", help="attack norm")
    group.add_argument("--eps", type=opt.number, default=None,
                       help="attack radius, e.g. 8/255 (default: 0.3 on digits, 8/255 otherwise)")
    group.add_argument("--steps", type=int, default=20, help="steps of the margin-loss PGD on h")
    group.add_argument("--restarts", type=int, default=1, help="its random restarts")
    group.add_argument("--target", type=float, default=0.9,
                       help="fraction of h's robust calibration examples kept robust with g fully fooled")
    group.add_argument("--clamp", choices=("gelu", "relu", "softplus", "identity"), default="gelu",
                       help="clamp function of the map")
    group.add_argument("--save", required=True, help="directory to save the calibrated mixture in")
    opt.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from ..calibration import calibrate
    from ..workflow import resolve_device, run_record, write_json

    start = time.perf_counter()
    device = resolve_device(args.device)
    data = opt.load_data(args)
    pair = opt.load_model(args, data, device)
    eps = opt.default_eps(args)
    cal = calibrate(
        pair.g, pair.h, data.x.to(device), data.y.to(device), eps, norm=args.norm, target=args.target,
        clamp=args.clamp, steps=args.steps, restarts=args.restarts, batch_size=args.batch_size, seed=args.seed,
        progress=opt.progress_of(args),
    )
    model = cal.mixture(pair.g, pair.h, norm=args.norm)
    where = f"{data.name} {data.split}[:{len(data.y)}]"
    attack = f"calibration prediction on {where}: margin PGD-{args.steps} on h, g assumed fully fooled"
    metrics = [
        {"name": "clean accuracy (calibration split)", "value": 100 * cal.predicted_clean, "attack": "none"},
        {"name": "robust accuracy (predicted)", "value": 100 * cal.predicted_robust, "attack": attack},
    ]
    directory = model.save_pretrained(
        args.save, dataset=data.name, threat_model={"norm": args.norm, "eps": eps}, metrics=metrics
    )
    print(f"calibrated: {cal.h_map}, weight on h {cal.weight:.6f} (alpha {cal.alpha:.6g}); predicted on {where}: "
          f"clean {100 * cal.predicted_clean:.2f}%, robust {100 * cal.predicted_robust:.2f}% "
          f"(h alone keeps {100 * cal.h_robust:.2f}% under the calibration attack)")
    opt.say(args, f"saved the calibrated mixture to {directory}")
    if args.out:
        record = run_record(
            "calibrate", model=opt.model_spec(args), dataset={"name": data.name, "split": data.split, "n": len(data.y)},
            threat_model={"norm": args.norm, "eps": eps}, target=cal.target, h_map=cal.h_map.get_config(),
            weight=cal.weight, alpha=cal.alpha, cutoff=cal.cutoff, predicted_clean=cal.predicted_clean,
            predicted_robust=cal.predicted_robust, h_robust=cal.h_robust, search=cal.search,
            saved=str(directory), seconds=time.perf_counter() - start,
        )
        opt.say(args, f"wrote {write_json(args.out, record)}")
    return 0
