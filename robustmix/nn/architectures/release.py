"""Architectures of the authors' later public releases: RobustBench's ``Bai2023Improving_edm`` / ``_trades``
and ``Bai2024MixedNUTS``.

That release mixes softmax probabilities of an accurate and a robust model with a per-input weight
``w = low + (high - low)·sigmoid(γ)``, ``γ = scale·BN(z) + bias``, where ``z`` comes from a mixing network
reading two intermediate feature maps of each model; each model's logits are multiplied by a fixed
factor first. In robustmix this is ``AdaptiveSmoothing(g, h, policy=MixingNetPolicy(...), mode="none",
space="prob", alpha_transform="sigmoid", alpha_range=(low, high), logit_scales=(s_g, s_h))`` with:

* ``g`` = :func:`bit_resnetv2` — a pre-activation bottleneck ResNet with GroupNorm and weight-standardised
  convolutions (BiT), inputs resized bilinearly (``input_size``) and mapped to [-1, 1];
* ``h`` = :func:`dm_wide_resnet` — a pre-activation WideResNet with asymmetric padding on strided convs,
  per-channel input normalisation and SiLU/Swish activations;
* the policy = :class:`~robustmix.nn.policies.MixingNetPolicy` — features of both models (forward hooks
  on two stages each), pre-activation residual stages, global pooling, a linear layer, and
  :class:`~robustmix.nn.policies.BetaHead`.

All of it is written from the architecture description; the converter in :mod:`robustmix.convert.release`
maps the release's state-dict names onto these modules. MixedNUTS (CIFAR-10) mixes the same BiT g with
:func:`ra_wide_resnet` (RA-WRN-70-16, ``Peng2023Robust``); on CIFAR-100 with a :func:`dm_wide_resnet`
(:mod:`robustmix.convert.mixednuts`). Registered as ``"bit_resnetv2"``, ``"dm_wide_resnet"`` and
``"ra_wide_resnet"``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import register_architecture
from ..layers import CIFAR10_MEAN, CIFAR10_STD, WideStage

__all__ = ["bit_resnetv2", "dm_wide_resnet", "ra_wide_resnet", "BiTResNetV2", "DMWideResNet"]


# -- BiT ResNet-v2 -----------------------------------------------------------------------------------
class WSConv2d(nn.Conv2d):
    """Convolution whose kernel is standardised per output channel (zero mean, unit variance) on every call."""

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-10)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _Bottleneck(nn.Module):
    """GN-ReLU-conv1x1, GN-ReLU-conv3x3 (strided), GN-ReLU-conv1x1, plus a projected or identity shortcut."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cin)
        self.conv1 = WSConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid)
        self.conv2 = WSConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, cmid)
        self.conv3 = WSConv2d(cmid, cout, 1, bias=False)
        self.downsample = WSConv2d(cin, cout, 1, stride=stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.gn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.gn2(out)))
        out = self.conv3(F.relu(self.gn3(out)))
        return out + shortcut


class BiTResNetV2(nn.Module):
    """BiT ResNet-v2; stages ``body.block1..4`` (the release's policy reads block1 and block2)."""

    def __init__(self, units: Sequence[int], width: int, num_classes: int, input_size: int | None) -> None:
        super().__init__()
        self.input_size = input_size
        stem = 64 * width
        self.root = nn.Sequential(
            OrderedDict(
                conv=WSConv2d(3, stem, 7, stride=2, padding=3, bias=False),
                pad=nn.ConstantPad2d(1, 0.0),
                pool=nn.MaxPool2d(3, stride=2),
            )
        )
        blocks = OrderedDict()
        cin = stem
        for i, n in enumerate(units):
            cmid, cout = stem * 2**i, 256 * width * 2**i
            stage = OrderedDict()
            for j in range(n):
                stage[f"unit{j + 1:02d}"] = _Bottleneck(cin, cout, cmid, stride=2 if (i > 0 and j == 0) else 1)
                cin = cout
            blocks[f"block{i + 1}"] = nn.Sequential(stage)
        self.body = nn.Sequential(blocks)
        self.head = nn.Sequential(
            OrderedDict(
                gn=nn.GroupNorm(32, cin),
                relu=nn.ReLU(),
                avg=nn.AdaptiveAvgPool2d(1),
                conv=nn.Conv2d(cin, num_classes, 1),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear")
        x = (x - 0.5) / (0.5 + 1e-8)
        return self.head(self.body(self.root(x)))[..., 0, 0]


_BIT_UNITS = {"r50": (3, 4, 6, 3), "r101": (3, 4, 23, 3), "r152": (3, 8, 36, 3)}


def bit_resnetv2(
    depth: str = "r152", width: int = 2, num_classes: int = 10, input_size: int | None = 128
) -> BiTResNetV2:
    """BiT-M-R{50,101,152}x{width}; ``input_size`` resizes inputs bilinearly first (None: no resize)."""
    if depth not in _BIT_UNITS:
        raise ValueError(f"unknown BiT depth {depth!r}; expected one of {', '.join(_BIT_UNITS)}")
    return BiTResNetV2(_BIT_UNITS[depth], int(width), int(num_classes), input_size)


# -- DeepMind-style WideResNet -----------------------------------------------------------------------
class _Swish(nn.Module):
    """``x · sigmoid(x)`` computed in that order (the release's robust CIFAR-100 TRADES model)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


_ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "swish": _Swish, "relu": nn.ReLU}


class DMWideResNet(nn.Module):
    """A pre-activation WideResNet with input normalisation; stages ``layer.0..2`` (the release's policy
    reads 0 and 1).

    Blocks in DeepMind's layout (:class:`~robustmix.nn.layers.WideBlock` with ``layout="deepmind"``): a
    3x3 stem of ``stem_width`` channels, three stages of ``depths[k]`` blocks and ``widths[k]`` channels
    (strides 1, 2, 2) with ``groups[k]``-grouped convolutions and optional squeeze-excitation gates, a final
    BN-activation, 8x8 average pooling and a linear layer. :func:`dm_wide_resnet` and
    :func:`ra_wide_resnet` choose these numbers.
    """

    def __init__(
        self,
        num_classes: int,
        stem_width: int,
        depths: Sequence[int],
        widths: Sequence[int],
        activation: str,
        mean: Sequence[float],
        std: Sequence[float],
        groups: Sequence[int] = (1, 1, 1),
        se_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if not len(depths) == len(widths) == len(groups) == 3:
            raise ValueError(f"a WideResNet has three stages: got depths {depths}, widths {widths}, groups {groups}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(_ACTIVATIONS)}")
        act = _ACTIVATIONS[activation]
        channels = (int(stem_width), *(int(w) for w in widths))
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)
        self.init_conv = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.layer = nn.Sequential(*(
            WideStage(int(depths[k]), channels[k], channels[k + 1], 1 if k == 0 else 2, act, layout="deepmind",
                      groups=int(groups[k]), se_ratio=se_ratio)
            for k in range(3)
        ))
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.relu = act()
        self.logits = nn.Linear(channels[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = F.avg_pool2d(self.relu(self.batchnorm(out)), 8)
        return self.logits(out.flatten(1))


def dm_wide_resnet(
    num_classes: int = 10,
    depth: int = 70,
    width: int = 16,
    activation: str = "silu",
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> DMWideResNet:
    """WideResNet-``depth``-``width`` for 32x32 inputs in [0, 1], normalised with ``mean``/``std``."""
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
    n, width = (int(depth) - 4) // 6, int(width)
    return DMWideResNet(int(num_classes), 16, (n, n, n), (16 * width, 32 * width, 64 * width), activation, mean, std)


def ra_wide_resnet(
    num_classes: int = 10,
    stem_width: int = 96,
    depths: Sequence[int] = (30, 31, 10),
    widths: Sequence[int] = (216, 432, 864),
    groups: Sequence[int] = (1, 1, 1),
    se_ratio: float | None = 0.25,
    activation: str = "silu",
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> DMWideResNet:
    """A robust-architecture WideResNet (Peng et al. 2023, "Robust Principles"): the DeepMind-layout
    WideResNet with a wider stem, uneven stage depths and widths, SiLU and squeeze-excitation gates after
    each block's second convolution. The defaults are RA-WRN-70-16, RobustBench's ``Peng2023Robust`` (the
    robust model of MixedNUTS on CIFAR-10)."""
    return DMWideResNet(
        int(num_classes), stem_width, depths, widths, activation, mean, std, groups=groups,
        se_ratio=None if se_ratio is None else float(se_ratio),
    )


register_architecture("bit_resnetv2", bit_resnetv2)
register_architecture("dm_wide_resnet", dm_wide_resnet)
register_architecture("ra_wide_resnet", ra_wide_resnet)
