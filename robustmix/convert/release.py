"""The authors' later public release (RobustBench ``Bai2023Improving_edm`` / ``Bai2023Improving_trades``) as a
saved robustmix model: a BiT ResNet-v2 g, a WideResNet h, the mixing network and its output BN, and the
scalars (γ scale/bias, α range, logit scales).

Each ``.pt`` file is read once with ``torch.load(weights_only=True)``, which refuses pickled code
(safetensors files are read with safetensors); the result is a mixture that
:meth:`~robustmix.smoothing.AdaptiveSmoothing.save_pretrained` writes and ``from_pretrained`` loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..nn.layers import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from ..smoothing import AdaptiveSmoothing
from .checkpoints import extract_state_dict, load_trusted, read_checkpoint
from .pair import convert_pair

__all__ = ["RELEASE_SETTINGS", "read_release_files", "convert_release"]

_RELEASE_SCALARS = ("gamma_scale", "gamma_bias", "alpha_scale", "alpha_bias", "std_scale", "rob_scale")
_STATS = {10: (CIFAR10_MEAN, CIFAR10_STD), 100: (CIFAR100_MEAN, CIFAR100_STD)}


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
    mixing = load_trusted(p_path)
    if not isinstance(mixing, Mapping) or not {"model", "bn"} <= set(mixing):
        raise ValueError(f"{p_path} should hold {{'model': mixing network, 'bn': output BN}} state dicts")
    state.update({f"policy_net.{k}": v for k, v in extract_state_dict(mixing["model"]).items()})
    state.update({f"bn.{k}": v for k, v in extract_state_dict(mixing["bn"]).items()})
    state.update({k: torch.tensor(v) for k, v in RELEASE_SETTINGS[(variant, dataset)].items()})
    return state


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
    if num_classes not in _STATS:
        raise ValueError(f"the release covers CIFAR-10/100; got a {num_classes}-class robust model")
    mean, std = _STATS[num_classes]
    g_arch = {"name": "bit_resnetv2", "kwargs": {"depth": bit_depth, "width": bit_width, "num_classes": num_classes, "input_size": 128}}
    h_arch = {
        "name": "dm_wide_resnet",
        "kwargs": {
            "num_classes": num_classes,
            "depth": 6 * wrn_blocks + 4,
            "width": wrn_width,
            "activation": activations[variant],
            "mean": list(mean),
            "std": list(std),
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


