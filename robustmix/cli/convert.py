"""``robustmix convert``: turn original ``.pt`` checkpoints into robustmix's safe Hub format.

Three sources: ``pair`` — separate state dicts of g and h (and optionally a policy) for registered
architectures (:func:`robustmix.convert.convert_pair`); ``release`` — a composite checkpoint of the authors'
later public release, or RobustBench's three files (:func:`robustmix.convert.convert_release`);
``mixednuts`` — RobustBench's ``Bai2024MixedNUTS``, its two files or a state dict of its mixed classifier
(:func:`robustmix.convert.convert_mixednuts`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="source")
    defaults = argparse.ArgumentDefaultsHelpFormatter
    pair = sub.add_parser("pair", help="separate g / h (/ policy) state dicts of registered architectures",
                          formatter_class=defaults)
    pair.add_argument("--g-checkpoint", required=True, help="g's state dict (.pt, read with weights_only=True)")
    pair.add_argument("--g-arch", required=True, help="registered architecture name of g")
    pair.add_argument("--g-kwargs", type=_json_arg, default={}, help="JSON kwargs for g's architecture")
    pair.add_argument("--h-checkpoint", required=True, help="h's state dict (.pt, read with weights_only=True)")
    pair.add_argument("--h-arch", required=True, help="registered architecture name of h")
    pair.add_argument("--h-kwargs", type=_json_arg, default={}, help="JSON kwargs for h's architecture")
    pair.add_argument("--alpha", type=float, help="fixed trade-off α (or give a policy)")
    pair.add_argument("--policy-checkpoint", help="the policy's state dict (with --policy-type)")
    pair.add_argument("--policy-type", help="registered policy name, e.g. PolicyNet")
    pair.add_argument("--policy-config", type=_json_arg, default={}, help="JSON config of the policy")
    pair.add_argument("--mode", default="argmax", choices=("jacobian", "argmax", "none"), help="R of the mixture")
    pair.add_argument("--space", default="logit", choices=("logit", "prob"), help="what the mixture mixes")
    rel = sub.add_parser("release", help="a composite checkpoint of the authors' release (Bai2023Improving_*)",
                         formatter_class=defaults)
    rel.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="one composite state dict, or RobustBench's three files NAME_m0.pt NAME_m1.pt NAME_m2.pt (needs --dataset)",
    )
    rel.add_argument("--variant", required=True, choices=("edm", "trades"), help="which release network")
    nuts = sub.add_parser("mixednuts", help="RobustBench's Bai2024MixedNUTS (CIFAR-10/100), training-free nonlinear mix",
                          formatter_class=defaults)
    nuts.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="a state dict of RobustBench's mixed classifier, or its two files NAME_m0.pt NAME_m1.pt (needs --dataset)",
    )
    for p in (pair, rel, nuts):
        p.add_argument("--output", required=True, help="directory to write config.json, model.safetensors, README.md")
        p.add_argument("--dataset", help="dataset name for the config and model card, e.g. cifar10")
        p.add_argument("--norm", default="linf", choices=("linf", "l2"), help="norm of the threat model")
        p.add_argument("--eps", type=float, help="attack radius of the threat model")
        p.add_argument("--zoo-entry", help="copy dataset, threat model and metrics from this robustmix.hub.ZOO entry")


def run(args: argparse.Namespace) -> int:
    from ..convert import (
        convert_mixednuts,
        convert_pair,
        convert_release,
        read_checkpoint,
        read_mixednuts_files,
        read_release_files,
    )
    from ..errors import InputError
    from ..hub.zoo import ZOO

    dataset = args.dataset or (ZOO[args.zoo_entry].dataset if args.zoo_entry in ZOO else None)
    if args.source in ("mixednuts", "release") and len(args.checkpoint) > 1 and dataset is None:
        raise InputError(f"{args.source} with several files needs --dataset (or --zoo-entry)")
    if args.source == "mixednuts":
        one = len(args.checkpoint) == 1
        model = convert_mixednuts(read_checkpoint(args.checkpoint[0]) if one else read_mixednuts_files(args.checkpoint, dataset))
    elif args.source == "release":
        if len(args.checkpoint) == 1:
            state = read_checkpoint(args.checkpoint[0])
        else:
            state = read_release_files(args.checkpoint, args.variant, dataset)
        model = convert_release(state, args.variant)
    else:
        if (args.alpha is None) == (args.policy_type is None):
            raise InputError("give exactly one of --alpha and --policy-type")
        model = convert_pair(
            read_checkpoint(args.g_checkpoint), {"name": args.g_arch, "kwargs": args.g_kwargs},
            read_checkpoint(args.h_checkpoint), {"name": args.h_arch, "kwargs": args.h_kwargs},
            alpha=args.alpha, policy_type=args.policy_type, policy_config=args.policy_config,
            policy_state=None if args.policy_checkpoint is None else read_checkpoint(args.policy_checkpoint),
            mode=args.mode, space=args.space, norm=args.norm,
        )
    meta: dict[str, Any] = {"dataset": args.dataset, "metrics": []}
    meta["threat_model"] = None if args.eps is None else {"norm": args.norm, "eps": args.eps}
    if args.zoo_entry:
        if args.zoo_entry not in ZOO:
            raise InputError(f"unknown zoo entry {args.zoo_entry!r}; available: {', '.join(ZOO)}")
        entry = ZOO[args.zoo_entry]
        meta = {"dataset": entry.dataset, "threat_model": entry.threat_model, "metrics": entry.card_metrics(), "beta0": entry.beta0}
    if meta["threat_model"] is not None and not math.isfinite(meta["threat_model"]["eps"]):
        raise InputError("--eps must be finite")
    out = model.save_pretrained(args.output, card_name=args.zoo_entry, **meta)
    print(f"wrote {out}; load it with AdaptiveSmoothing.from_pretrained({str(out)!r})")
    return 0
