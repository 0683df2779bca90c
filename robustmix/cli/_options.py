"""Options shared by the commands — one syntax for models, datasets, threat models and outputs — and their
resolution into library objects (deferred imports: ``--help`` loads no torch)."""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction
from typing import Any


def number(text: str) -> float:
    """A float, ``inf``, or a fraction such as ``8/255``."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.03 or 8/255, got {text!r}") from err


def numbers(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (``inf`` and fractions allowed), each >= 0."""
    values = tuple(number(v) for v in text.split(","))
    if any(math.isnan(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def add_model_arguments(parser: argparse.ArgumentParser, demo_default: bool = True, mode: str = "argmax") -> None:
    group = parser.add_argument_group("model (a saved mixture, or a pair of base models)")
    group.add_argument("--model", default=None,
                       help="a directory written by save_pretrained, a Hub repo id, or a zoo name")
    group.add_argument("--g", default=None,
                       help="the accurate model: ARCH[{json kwargs}][:weights.safetensors] (a registered architecture), "
                            "timm:NAME[:weights], torchvision:NAME[:weights], or a saved directory")
    group.add_argument("--h", default=None, help="the robust model, same syntax as --g")
    group.add_argument("--alpha", type=number, default=1.0, help="fixed α of a --g/--h mixture (inf: h alone)")
    group.add_argument("--mode", choices=("argmax", "jacobian", "none"), default=mode,
                       help="R of a --g/--h mixture: eq. 10, eq. 5, or R = 1")
    group.add_argument("--space", choices=("logit", "prob"), default="logit", help="what a --g/--h mixture mixes")
    if demo_default:
        group.add_argument("--quick", action="store_true",
                           help="without --model/--g/--h: the digits demo's quick models (for tests)")
        group.add_argument("--cache-dir", default=None, help="without --model/--g/--h: reuse the demo's models here")


def add_data_arguments(parser: argparse.ArgumentParser, split: str = "test", limit: int | None = None) -> None:
    group = parser.add_argument_group("data (read from local files; nothing is downloaded without --download)")
    group.add_argument("--dataset", choices=("digits", "cifar10", "cifar100", "imagefolder"), default="digits",
                       help="digits: scikit-learn's (no files needed); cifar10/cifar100: torchvision's on-disk "
                            "format under --data-dir; imagefolder: one subfolder per class (a 'test'/'train' "
                            "subfolder is used when present), resized and centre-cropped to --image-size")
    group.add_argument("--data-dir", default=None, help="folder holding the dataset")
    group.add_argument("--split", choices=("test", "train"), default=split, help="which split")
    group.add_argument("--download", action="store_true", help="download CIFAR into --data-dir if missing")
    group.add_argument("--image-size", type=int, default=224, help="imagefolder: side of the centre crop")
    group.add_argument("--limit", type=int, default=limit, help="use the first N examples")
    group.add_argument("--batch-size", type=int, default=256, help="examples per batch")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    group.add_argument("--workers", type=int, default=0, help="data-loading worker processes (imagefolder)")


def add_threat_arguments(parser: argparse.ArgumentParser, eps: float | None = None) -> None:
    group = parser.add_argument_group("threat model and attacks")
    group.add_argument("--norm", choices=("linf", "l2"), default="linf", help="attack norm")
    group.add_argument("--eps", type=number, default=eps,
                       help="attack radius, e.g. 8/255 (default: 0.3 on digits, 8/255 otherwise)")
    group.add_argument("--steps", type=int, default=20, help="PGD steps")
    group.add_argument("--restarts", type=int, default=3, help="PGD random restarts")
    group.add_argument("--autoattack", choices=("auto", "on", "off"), default="auto",
                       help="AutoAttack in the suite (auto: when pyautoattack is installed)")
    group.add_argument("--aa-version", choices=("standard", "apgd", "plus", "rand"), default="standard",
                       help="AutoAttack version (apgd: APGD-CE + APGD-T, plus Square)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of the attacks (and of the demo models)")
    group.add_argument("--out", default=None, help="write the JSON record of the run here")
    group.add_argument("--quiet", action="store_true", help="print only the summary line")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")


def progress_of(args: argparse.Namespace) -> bool:
    return not (args.quiet or args.no_progress) and sys.stderr.isatty()


def default_eps(args: argparse.Namespace) -> float:
    if args.eps is not None:
        return float(args.eps)
    return 0.3 if args.dataset == "digits" else 8 / 255


def load_data(args: argparse.Namespace) -> Any:
    from ..workflow import load_dataset

    return load_dataset(
        args.dataset, args.data_dir, split=args.split, limit=args.limit, download=args.download,
        image_size=args.image_size, seed=args.seed, workers=args.workers,
    )


def describe_model(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    if args.g or args.h:
        return f"{args.g} + {args.h} (alpha={args.alpha:g}, mode={args.mode})"
    return "the digits demo's pair"


def model_spec(args: argparse.Namespace) -> dict[str, Any]:
    """What the run evaluated, for the JSON record."""
    if args.model:
        return {"model": args.model}
    if args.g or args.h:
        return {"g": args.g, "h": args.h, "alpha": args.alpha, "mode": args.mode, "space": args.space}
    return {"demo": "quick" if getattr(args, "quick", False) else "full"}


def load_model(args: argparse.Namespace, data: Any, device: Any, **overrides: Any) -> Any:
    """The mixture the arguments name; without any, the digits demo's g and h mixed with the options."""
    from ..errors import InputError
    from ..smoothing import AdaptiveSmoothing
    from ..workflow import load_mixture_from_specs
    from ..workflow.models import load_saved_mixture

    options = {"alpha": args.alpha, "mode": args.mode, "space": args.space, "norm": args.norm, **overrides}
    if args.model and (args.g or args.h):
        raise InputError("give either --model or --g and --h, not both")
    if args.model:
        model = load_saved_mixture(args.model, device)
    elif args.g or args.h:
        if not (args.g and args.h):
            raise InputError("--g and --h go together: give both base models")
        model = load_mixture_from_specs(args.g, args.h, data.num_classes, device, **options)
    else:
        if data.name != "digits":
            raise InputError(f"--dataset {data.name} needs a model: give --model, or --g and --h")
        from ..demo.models import get_demo_models

        g, h, _ = get_demo_models(quick=getattr(args, "quick", False), seed=args.seed,
                                  cache_dir=getattr(args, "cache_dir", None), progress=False)
        model = AdaptiveSmoothing(g.to(device), h.to(device), **options)
    check_classes(model, data, device)
    return model


def check_classes(model: Any, data: Any, device: Any) -> None:
    import torch

    from ..errors import InputError

    with torch.no_grad():
        sample = data.x[:1].to(device)
        try:
            classes = int(model.g(sample).shape[1]), int(model.h(sample).shape[1])
        except RuntimeError as err:
            raise InputError(
                f"the model cannot read {data.name} images of shape {tuple(data.x.shape[1:])}: {str(err).splitlines()[0]}"
            ) from err
    if classes[0] != data.num_classes or classes[1] != data.num_classes:
        raise InputError(
            f"the model predicts {classes[0]} (g) / {classes[1]} (h) classes but {data.name} has "
            f"{data.num_classes}; build the models for {data.num_classes} classes"
        )


def suite_of(args: argparse.Namespace, alphas: tuple[float, ...]) -> Any:
    from ..evaluate import AttackSuite

    return AttackSuite(
        eps=default_eps(args), norm=args.norm, steps=args.steps, restarts=args.restarts, alphas=alphas,
        autoattack={"auto": None, "on": True, "off": False}[args.autoattack], autoattack_version=args.aa_version,
        batch_size=args.batch_size, seed=args.seed,
    )


def say(args: argparse.Namespace, *lines: str) -> None:
    if not args.quiet:
        for line in lines:
            print(line)
