"""RobustBench's ``Bai2024MixedNUTS`` (CIFAR-10 and CIFAR-100) as a saved robustmix model.

MixedNUTS (Bai, Zhou, Patel, Sojoudi) mixes probabilities without training: g's hard max (the one-hot
vector of its prediction) and h's logits through the map ``M(z) = s · sign(u)·|u|^p``,
``u = GELU(LN_k(z) + c)``, with h's weight ``w``:
``log((1 - w)·onehot(argmax g(x)) + w·softmax(M(h(x))))``. In robustmix this is
``AdaptiveSmoothing(g, h, alpha=w/(1-w), mode="none", space="prob", g_map=HardMax(),
h_map=NonlinearMap(s, p, c, k, clamp="gelu"))`` with:

* g = :func:`~robustmix.nn.architectures.bit_resnetv2` (BiT-M-R152x2, inputs resized to 128);
* h = :func:`~robustmix.nn.architectures.ra_wide_resnet` (RA-WRN-70-16, ``Peng2023Robust``) on CIFAR-10,
  a SiLU :func:`~robustmix.nn.architectures.dm_wide_resnet` (``Wang2023Better_WRN-70-16``) on CIFAR-100;
  both read off the checkpoint's tensor shapes.

RobustBench ships two files (``Bai2024MixedNUTS_m0.pt``: g, ``_m1.pt``: h) and sets ``s, p, c, w`` in code:
:data:`MIXEDNUTS_SETTINGS` holds those values. A state dict of RobustBench's whole mixed classifier
(``std_model.*``, ``rob_model.*``, ``_alpha``, ``rob_map.*``) carries them itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..nn.layers import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from ..nn.maps import HardMax, NonlinearMap
from ..smoothing import AdaptiveSmoothing
from .checkpoints import read_checkpoint
from .pair import convert_pair

__all__ = ["MIXEDNUTS_SETTINGS", "read_mixednuts_files", "convert_mixednuts"]

#: The map and weight RobustBench 1.1.1 sets for ``Bai2024MixedNUTS`` (its ``optimal_spca.yaml``, GELU
#: clamp), per dataset: ``M(z) = s·sign(u)|u|^p``, ``u = GELU(LN_k(z) + c)``, h's weight ``alpha``.
MIXEDNUTS_SETTINGS: dict[str, dict[str, float]] = {
    "cifar10": {"s": 5.0, "p": 4.0, "c": -1.1, "alpha": 0.9987500602493457, "k": 250},
    "cifar100": {
        "s": 0.6115753843212784, "p": 3.571428571428571, "c": -2.142857142857143, "alpha": 0.9860300534207915,
        "k": 250,
    },
}
#: RobustBench's state-dict names of the map and weight -> ours.
_SCALARS = {"rob_map.scale": "s", "rob_map.power": "p", "rob_map.clamp_bias": "c", "_alpha": "alpha"}
#: Entries of RobustBench's classifier that robustmix does not need: the weight its own adaptive attack
#: uses for gradients, and g's hard max's differentiable stand-in (robustmix's HardMax has its own).
_IGNORED = ("_alpha_diffable", "std_map.")
_STATS = {10: (CIFAR10_MEAN, CIFAR10_STD), 100: (CIFAR100_MEAN, CIFAR100_STD)}


def read_mixednuts_files(paths: Sequence[str | os.PathLike[str]], dataset: str) -> dict[str, Tensor]:
    """RobustBench's two files (``*_m0.pt`` g, ``*_m1.pt`` h) as one state dict in the names of its mixed
    classifier, with the map and weight of :data:`MIXEDNUTS_SETTINGS` for ``dataset``."""
    if dataset not in MIXEDNUTS_SETTINGS:
        raise ValueError(f"no MixedNUTS settings for {dataset!r}; known: {', '.join(MIXEDNUTS_SETTINGS)}")
    if len(paths) != 2:
        raise ValueError(f"expected the two files *_m0.pt (g) *_m1.pt (h), got {len(paths)}")
    g_path, h_path = (Path(p) for p in paths)
    state = {f"std_model.{k}": v for k, v in read_checkpoint(g_path).items()}
    state.update({f"rob_model.{k}": v for k, v in read_checkpoint(h_path).items()})
    settings = MIXEDNUTS_SETTINGS[dataset]
    state.update({name: torch.tensor(settings[ours]) for name, ours in _SCALARS.items()})
    return state


def _split(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
    g_state: dict[str, Tensor] = {}
    h_state: dict[str, Tensor] = {}
    scalars: dict[str, float] = {}
    unknown = []
    for raw, value in state.items():
        key = raw.removeprefix("module.")
        if key.startswith("std_model."):
            g_state[key.removeprefix("std_model.")] = value
        elif key.startswith("rob_model."):
            h_state[key.removeprefix("rob_model.")] = value
        elif key in _SCALARS:
            if value.numel() != 1:
                raise ValueError(f"{raw} holds {value.numel()} values; robustmix converts one mixing weight and map")
            scalars[_SCALARS[key]] = float(value.item())
        elif not key.startswith(_IGNORED):
            unknown.append(raw)
    absent = sorted(set(_SCALARS.values()) - set(scalars))
    if absent or not g_state or not h_state:
        raise ValueError(
            f"not a MixedNUTS checkpoint (missing {absent or 'model weights'}); expected keys std_model.*, "
            "rob_model.*, _alpha, rob_map.scale, rob_map.power, rob_map.clamp_bias (or use read_mixednuts_files)"
        )
    if unknown:
        raise ValueError(f"unexpected entries in the MixedNUTS checkpoint: {unknown[:8]}")
    return g_state, h_state, scalars


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _drop_bit_normalisation(g_state: dict[str, Tensor]) -> None:
    """RobustBench's BiT stores its input normalisation as parameters ``mean``/``std`` (0.5 each); robustmix's
    BiT applies the same fixed ``(x - 0.5)/(0.5 + 1e-8)``, so other values are refused, not dropped."""
    for name in ("mean", "std"):
        value = g_state.pop(name, None)
        if value is not None and not torch.allclose(value.float(), torch.full_like(value.float(), 0.5)):
            raise ValueError(f"the standard model's input {name} is {value.flatten().tolist()}; robustmix's BiT "
                             "normalises with mean = std = 0.5")


def _bit_arch(g_state: Mapping[str, Tensor], num_classes: int) -> dict[str, Any]:
    depth = {6: "r50", 23: "r101", 36: "r152"}.get(_count(g_state, "body.block3."))
    if depth is None or "root.conv.weight" not in g_state:
        raise ValueError("the standard model is not a BiT ResNet-v2 (R50/R101/R152) checkpoint")
    width = int(g_state["root.conv.weight"].shape[0]) // 64
    return {"name": "bit_resnetv2", "kwargs": {"depth": depth, "width": width, "num_classes": num_classes, "input_size": 128}}


def _wide_resnet_arch(h_state: Mapping[str, Tensor], num_classes: int) -> dict[str, Any]:
    """The DeepMind-layout WideResNet the robust model's tensor shapes describe (SiLU, as both releases)."""
    if "init_conv.weight" not in h_state or "layer.2.block.0.conv_0.weight" not in h_state:
        raise ValueError("the robust model is not a DeepMind-layout WideResNet (init_conv, layer.k.block.i.conv_0)")
    mean, std = _STATS[num_classes]
    stem = int(h_state["init_conv.weight"].shape[0])
    depths = [_count(h_state, f"layer.{k}.block.") for k in range(3)]
    widths = [int(h_state[f"layer.{k}.block.0.conv_0.weight"].shape[0]) for k in range(3)]
    groups = [w // int(h_state[f"layer.{k}.block.0.conv_1.weight"].shape[1]) for k, w in enumerate(widths)]
    se = h_state.get("layer.0.block.0.se.fc1.weight")
    se_ratio = None if se is None else int(se.shape[0]) / widths[0]
    n = depths[0]
    if se_ratio is None and stem == 16 and depths == [n] * 3 and groups == [1] * 3 and widths[0] % 16 == 0 \
            and widths == [widths[0], 2 * widths[0], 4 * widths[0]]:
        kwargs = {"num_classes": num_classes, "depth": 6 * n + 4, "width": widths[0] // 16, "activation": "silu"}
        return {"name": "dm_wide_resnet", "kwargs": {**kwargs, "mean": list(mean), "std": list(std)}}
    kwargs = {"num_classes": num_classes, "stem_width": stem, "depths": depths, "widths": widths, "groups": groups,
              "se_ratio": se_ratio, "activation": "silu", "mean": list(mean), "std": list(std)}
    return {"name": "ra_wide_resnet", "kwargs": kwargs}


def convert_mixednuts(state: Mapping[str, Tensor], k: int | None = 250) -> AdaptiveSmoothing:
    """Build MixedNUTS in robustmix form from a state dict of RobustBench's mixed classifier (or of
    :func:`read_mixednuts_files`).

    Architectures are read off the tensor shapes; ``k``: the top-k classes of the map's layer norm
    (RobustBench uses 250, which on CIFAR means all classes; it is not stored in the checkpoint).
    """
    g_state, h_state, s = _split(state)
    _drop_bit_normalisation(g_state)
    if "logits.weight" not in h_state:
        raise ValueError("the robust model has no linear head 'logits'")
    num_classes = int(h_state["logits.weight"].shape[0])
    if num_classes not in _STATS:
        raise ValueError(f"MixedNUTS on RobustBench covers CIFAR-10/100; got a {num_classes}-class robust model")
    w = s["alpha"]
    if not 0 <= w <= 1:
        raise ValueError(f"the mixing weight must lie in [0, 1], got {w}")
    alpha = math.inf if w == 1 else w / (1 - w)
    h_map = NonlinearMap(s=s["s"], p=s["p"], c=s["c"], k=k, clamp="gelu")
    return convert_pair(
        g_state, _bit_arch(g_state, num_classes), h_state, _wide_resnet_arch(h_state, num_classes), alpha=alpha,
        mode="none", space="prob", g_map=HardMax(), h_map=h_map,
    )
