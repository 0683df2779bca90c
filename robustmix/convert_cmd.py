"""``robustmix convert``: turn original ``.pt`` checkpoints into robustmix's safe Hub format.

Two sources:

* ``pair`` — separate state dicts of g and h (and optionally a policy) for registered architectures,
  e.g. the paper's ResNet-18 checkpoints (Table 1);
* ``release`` — a composite checkpoint of the authors' later public release (RobustBench
  ``Bai2023Improving_edm`` / ``Bai2023Improving_trades``): a BiT ResNet-v2 g, a WideResNet h, the mixing
  network and its output BN, and the scalars (γ scale/bias, α range, logit scales), all read from the
  checkpoint itself.

Each ``.pt`` file is read once with ``torch.load(weights_only=True)``, which refuses pickled code
(safetensors files are read with safetensors); the result is written by
:func:`robustmix.hub.save_pretrained` and then loads with ``AdaptiveSmoothing.from_pretrained(DIR)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import registry
from .hub import safetensors_header
from .smoothing import AdaptiveSmoothing

__all__ = [
    "add_arguments",
    "run",
    "read_checkpoint",
    "read_release_files",
    "RELEASE_SETTINGS",
    "convert_pair",
    "convert_release",
]

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_RELEASE_SCALARS = ("gamma_scale", "gamma_bias", "alpha_scale", "alpha_bias", "std_scale", "rob_scale")


def _load_raw(path: Path) -> Any:
    """The object in a checkpoint file: safetensors, or ``torch.load(weights_only=True)`` (never full unpickling)."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if safetensors_header(path) is not None:
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds pickled objects other than tensors; torch.load(weights_only=True) refused it "
            f"and robustmix will not load it any other way ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err})") from None


def _flat_state(state: Any, path: Path) -> dict[str, Tensor]:
    for key in _CONTAINER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key.removeprefix("module.")] = value
    return out


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` state dict from a ``.pt``/``.pth``/``.bin`` (weights_only) or safetensors file.

    Unwraps ``{"state_dict": ...}``-style containers and strips ``module.`` (DataParallel) prefixes.
    """
    path = Path(path)
    return _flat_state(_load_raw(path), path)


#: The release's fixed scalars, set in code (not stored in its checkpoints) per (variant, dataset):
#: γ = gamma_scale·BN(z) + gamma_bias; w = alpha_bias + alpha_scale·sigmoid(γ); logits × std/rob_scale.
RELEASE_SETTINGS: dict[tuple[str, str], dict[str, float]] = {
    ("edm", "cifar10"): {"gamma_scale": 2.0, "gamma_bias": 1.05, "alpha_scale": 0.04, "alpha_bias": 0.96, "std_scale": 1.2, "rob_scale": 0.3},
    ("edm", "cifar100"): {"gamma_scale": 2.0, "gamma_bias": 1.3, "alpha_scale": 0.15, "alpha_bias": 0.84, "std_scale": 2.0, "rob_scale": 1.0},
    ("trades", "cifar100"): {"gamma_scale": 2.0, "gamma_bias": 1.0, "alpha_scale": 0.1, "alpha_bias": 0.815, "std_scale": 2.0, "rob_scale": 1.0},
}


def read_release_files(
    paths: Sequence[str | os.PathLike[str]], variant: str, dataset: str
) -> dict[str, Tensor]:
    """RobustBench's three release files (``*_m0.pt`` g, ``*_m1.pt`` h, ``*_m2.pt`` ``{"model", "bn"}`` of the
    mixing network) as one composite state dict, with the scalars of :data:`RELEASE_SETTINGS`."""
    if (variant, dataset) not in RELEASE_SETTINGS:
        raise ValueError(f"no release settings for {variant}/{dataset}; known: {sorted(RELEASE_SETTINGS)}")
    if len(paths) != 3:
        raise ValueError(f"expected the three files *_m0.pt *_m1.pt *_m2.pt, got {len(paths)}")
    g_path, h_path, p_path = (Path(p) for p in paths)
    state: dict[str, Tensor] = {}
    state.update({f"models.0.{k}": v for k, v in read_checkpoint(g_path).items()})
    state.update({f"models.1.{k}": v for k, v in read_checkpoint(h_path).items()})
    mixing = _load_raw(p_path)
    if not isinstance(mixing, Mapping) or not {"model", "bn"} <= set(mixing):
        raise ValueError(f"{p_path} should hold {{'model': mixing network, 'bn': output BN}} state dicts")
    state.update({f"policy_net.{k}": v for k, v in _flat_state(mixing["model"], p_path).items()})
    state.update({f"bn.{k}": v for k, v in _flat_state(mixing["bn"], p_path).items()})
    state.update({k: torch.tensor(v) for k, v in RELEASE_SETTINGS[(variant, dataset)].items()})
    return state


def _load_part(module: torch.nn.Module, state: Mapping[str, Tensor], who: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(
            f"the {who} checkpoint does not match its architecture: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, wrongly shaped {shapes[:8]}"
        )
    module.load_state_dict(dict(state), strict=True)


def convert_pair(
    g_state: Mapping[str, Tensor],
    g_arch: Mapping[str, Any],
    h_state: Mapping[str, Tensor],
    h_arch: Mapping[str, Any],
    alpha: float | None = None,
    policy_type: str | None = None,
    policy_config: Mapping[str, Any] | None = None,
    policy_state: Mapping[str, Tensor] | None = None,
    **options: Any,
) -> AdaptiveSmoothing:
    """Build ``AdaptiveSmoothing`` from g/h (and policy) state dicts; ``*_arch`` = ``{"name", "kwargs"}``."""
    g = registry.build_architecture(g_arch["name"], **g_arch.get("kwargs", {}))
    h = registry.build_architecture(h_arch["name"], **h_arch.get("kwargs", {}))
    _load_part(g, g_state, "g")
    _load_part(h, h_state, "h")
    policy = None
    if policy_type is not None:
        policy = registry.build_policy(policy_type, policy_config or {}, g, h)
        if policy_state is None:
            raise ValueError("a policy needs its checkpoint (--policy-checkpoint)")
        policy.load_state_dict(dict(policy_state), strict=True)
    return AdaptiveSmoothing(g.eval(), h.eval(), alpha=alpha, policy=policy, **options).eval()


def _release_parts(state: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], dict[str, float]]:
    """Split a release checkpoint into g/h/policy state dicts (robustmix names) and its scalars."""
    keys = {k.removeprefix("module.") for k in state}
    parts: dict[str, dict[str, Tensor]] = {"g": {}, "h": {}, "policy": {}}
    scalars: dict[str, float] = {}
    unknown = []
    for raw, value in state.items():
        key = raw.removeprefix("module.")
        if key.startswith("_comp_model.") and "comp_model." + key.removeprefix("_comp_model.") in keys:
            continue  # the wrapper registers the same composite model twice
        key = key.removeprefix("_comp_model.").removeprefix("comp_model.")
        if key.startswith("models.0."):
            parts["g"][key.removeprefix("models.0.")] = value
        elif key.startswith("models.1."):
            parts["h"][key.removeprefix("models.1.")] = value
        elif key.startswith("policy_net."):
            parts["policy"][key.removeprefix("policy_net.")] = value
        elif key.startswith("bn."):
            parts["policy"]["head." + key] = value
        elif key in _RELEASE_SCALARS:
            scalars[key] = float(value.item())
        else:
            unknown.append(raw)
    absent = [s for s in _RELEASE_SCALARS if s not in scalars]
    if absent or not parts["g"] or not parts["h"] or not parts["policy"]:
        raise ValueError(
            f"not a composite checkpoint of the authors' release (missing scalars {absent} or model weights); "
            "expected keys like models.0.*, models.1.*, policy_net.*, bn.*, gamma_scale, alpha_bias"
        )
    if unknown:
        raise ValueError(f"unexpected entries in the release checkpoint: {unknown[:8]}")
    return parts, scalars


def _count_units(state: Mapping[str, Tensor], prefix: str, level: int) -> int:
    return len({k[len(prefix):].split(".")[level] for k in state if k.startswith(prefix)})


def convert_release(state: Mapping[str, Tensor], variant: str) -> AdaptiveSmoothing:
    """Build the release's model in robustmix form from its composite state dict.

    ``variant``: ``"edm"`` (robust WideResNet with SiLU) or ``"trades"`` (with Swish). Architectures are
    read off the tensor shapes; the mixing form is ``mode="none"``, ``space="prob"``,
    ``alpha_transform="sigmoid"``, ``alpha_range=(alpha_bias, alpha_bias + alpha_scale)`` and
    ``logit_scales=(std_scale, rob_scale)``.
    """
    activations = {"edm": "silu", "trades": "swish"}
    if variant not in activations:
        raise ValueError(f"unknown release variant {variant!r}; expected one of {', '.join(activations)}")
    parts, s = _release_parts(state)
    g_state, h_state, p_state = parts["g"], parts["h"], parts["policy"]
    bit_width = g_state["root.conv.weight"].shape[0] // 64
    bit_depth = {6: "r50", 23: "r101", 36: "r152"}.get(_count_units(g_state, "body.block3.", 0))
    if bit_depth is None:
        raise ValueError("cannot recognise the BiT depth of the standard model")
    num_classes = int(h_state["logits.weight"].shape[0])
    wrn_blocks = _count_units(h_state, "layer.0.block.", 0)
    wrn_width = h_state["layer.0.block.0.conv_0.weight"].shape[0] // 16
    stats = {10: "CIFAR10_STATS", 100: "CIFAR100_STATS"}
    if num_classes not in stats:
        raise ValueError(f"the release covers CIFAR-10/100; got a {num_classes}-class robust model")
    from . import release

    norm_stats = getattr(release, stats[num_classes])
    g_arch = {"name": "bit_resnetv2", "kwargs": {"depth": bit_depth, "width": bit_width, "num_classes": num_classes, "input_size": 128}}
    h_arch = {
        "name": "dm_wide_resnet",
        "kwargs": {
            "num_classes": num_classes,
            "depth": 6 * wrn_blocks + 4,
            "width": wrn_width,
            "activation": activations[variant],
            "mean": list(norm_stats["mean"]),
            "std": list(norm_stats["std"]),
        },
    }
    policy_config = {
        "in_channels": [256 * bit_width, 16 * wrn_width],
        "widths": [int(p_state[f"layers.{i}.0.conv1.weight"].shape[0]) for i in range(3)],
        "gamma_scale": s["gamma_scale"],
        "gamma_bias": s["gamma_bias"],
    }
    low, high = s["alpha_bias"], s["alpha_bias"] + s["alpha_scale"]
    if not 0 <= low < high <= 1 + 1e-6:
        raise ValueError(f"unsupported α range ({low}, {high}); the release form needs 0 <= bias < bias + scale <= 1")
    return convert_pair(
        g_state, g_arch, h_state, h_arch,
        policy_type="MixingNetPolicy", policy_config=policy_config, policy_state=p_state,
        mode="none", space="prob", alpha_transform="sigmoid", alpha_range=(low, min(high, 1.0)),
        logit_scales=(s["std_scale"], s["rob_scale"]),
    )


# -- command line ------------------------------------------------------------------------------------
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
    pair = sub.add_parser("pair", help="separate g / h (/ policy) state dicts of registered architectures")
    pair.add_argument("--g-checkpoint", required=True)
    pair.add_argument("--g-arch", required=True, help="registered architecture name of g")
    pair.add_argument("--g-kwargs", type=_json_arg, default={}, help="JSON kwargs for g's architecture")
    pair.add_argument("--h-checkpoint", required=True)
    pair.add_argument("--h-arch", required=True)
    pair.add_argument("--h-kwargs", type=_json_arg, default={})
    pair.add_argument("--alpha", type=float, help="fixed trade-off α (or give a policy)")
    pair.add_argument("--policy-checkpoint")
    pair.add_argument("--policy-type", help="registered policy name, e.g. PolicyNet")
    pair.add_argument("--policy-config", type=_json_arg, default={})
    pair.add_argument("--mode", default="argmax", choices=("jacobian", "argmax", "none"))
    pair.add_argument("--space", default="logit", choices=("logit", "prob"))
    rel = sub.add_parser("release", help="a composite checkpoint of the authors' release (Bai2023Improving_*)")
    rel.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="one composite state dict, or RobustBench's three files NAME_m0.pt NAME_m1.pt NAME_m2.pt (needs --dataset)",
    )
    rel.add_argument("--variant", required=True, choices=("edm", "trades"))
    for p in (pair, rel):
        p.add_argument("--output", required=True, help="directory to write config.json, model.safetensors, README.md")
        p.add_argument("--dataset", help="dataset name for the config and model card, e.g. cifar10")
        p.add_argument("--norm", default="linf", choices=("linf", "l2"))
        p.add_argument("--eps", type=float, help="attack radius of the threat model")
        p.add_argument("--zoo-entry", help="copy dataset, threat model and metrics from this robustmix.zoo entry")


def run(args: argparse.Namespace) -> int:
    from .hub import save_pretrained
    from .zoo import ZOO

    if args.source == "release":
        if len(args.checkpoint) == 1:
            state = read_checkpoint(args.checkpoint[0])
        else:
            dataset = args.dataset or (ZOO[args.zoo_entry].dataset if args.zoo_entry in ZOO else None)
            if dataset is None:
                raise SystemExit("robustmix convert release with three files needs --dataset (or --zoo-entry)")
            state = read_release_files(args.checkpoint, args.variant, dataset)
        model = convert_release(state, args.variant)
    else:
        if (args.alpha is None) == (args.policy_type is None):
            raise SystemExit("robustmix convert pair: give exactly one of --alpha and --policy-type")
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
            raise SystemExit(f"unknown zoo entry {args.zoo_entry!r}; available: {', '.join(ZOO)}")
        entry = ZOO[args.zoo_entry]
        meta = {"dataset": entry.dataset, "threat_model": entry.threat_model, "metrics": entry.card_metrics(), "beta0": entry.beta0}
    if meta["threat_model"] is not None and not math.isfinite(meta["threat_model"]["eps"]):
        raise SystemExit("--eps must be finite")
    out = save_pretrained(model, args.output, card_name=args.zoo_entry, **meta)
    print(f"wrote {out}; load it with AdaptiveSmoothing.from_pretrained({str(out)!r})")
    return 0
