"""Architectures of the authors' later public release (RobustBench ``Bai2023Improving_edm`` / ``_trades``).

That release mixes softmax probabilities of an accurate and a robust model with a per-input weight
``w = low + (high - low)·sigmoid(γ)``, ``γ = scale·BN(z) + bias``, where ``z`` comes from a mixing network
reading two intermediate feature maps of each model; each model's logits are multiplied by a fixed
factor first. In robustmix this is ``AdaptiveSmoothing(g, h, policy=MixingNetPolicy(...), mode="none",
space="prob", alpha_transform="sigmoid", alpha_range=(low, high), logit_scales=(s_g, s_h))`` with:

* ``g`` = :func:`bit_resnetv2` — a pre-activation bottleneck ResNet with GroupNorm and weight-standardised
  convolutions (BiT), inputs resized bilinearly (``input_size``) and mapped to [-1, 1];
* ``h`` = :func:`dm_wide_resnet` — a pre-activation WideResNet with asymmetric padding on strided convs,
  per-channel input normalisation and SiLU/Swish activations;
* the policy = :class:`MixingNetPolicy` — features of both models (forward hooks on two stages each),
  pre-activation residual stages, global pooling, a linear layer, and :class:`~robustmix.policy.BetaHead`.

All of it is written from the architecture description; the converter in :mod:`robustmix.convert_cmd`
maps the release's state-dict names onto these modules.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["bit_resnetv2", "dm_wide_resnet", "MixingNetPolicy", "CIFAR10_STATS", "CIFAR100_STATS"]

CIFAR10_STATS = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2471, 0.2435, 0.2616)}
CIFAR100_STATS = {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}


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


class _WideBlock(nn.Module):
    """BN-act, 3x3 conv (stride 2 padded right/bottom only), BN-act, 3x3 conv; 1x1 shortcut on width change."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if cin != cout else None
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu_0(self.batchnorm_0(x))
        pad = (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)
        out = self.conv_0(F.pad(pre, pad))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return (x if self.shortcut is None else self.shortcut(pre)) + out


class _WideGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*(_WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act) for i in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """WideResNet-depth-width with input normalisation; stages ``layer.0..2`` (the policy reads 0 and 1)."""

    def __init__(self, num_classes: int, depth: int, width: int, activation: str, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        acts = {"silu": nn.SiLU, "swish": _Swish, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(acts)}")
        act = acts[activation]
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)
        self.init_conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.layer = nn.Sequential(
            _WideGroup(n, widths[0], widths[1], 1, act),
            _WideGroup(n, widths[1], widths[2], 2, act),
            _WideGroup(n, widths[2], widths[3], 2, act),
        )
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.relu = act()
        self.logits = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = F.avg_pool2d(self.relu(self.batchnorm(out)), 8)
        return self.logits(out.flatten(1))


def dm_wide_resnet(
    num_classes: int = 10,
    depth: int = 70,
    width: int = 16,
    activation: str = "silu",
    mean: Sequence[float] = CIFAR10_STATS["mean"],
    std: Sequence[float] = CIFAR10_STATS["std"],
) -> DMWideResNet:
    """WideResNet-``depth``-``width`` for 32x32 inputs in [0, 1], normalised with ``mean``/``std``."""
    return DMWideResNet(int(num_classes), int(depth), int(width), activation, mean, std)


# -- the release's mixing network as a robustmix policy ----------------------------------------------
class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        projected = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False)) if projected else None

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        # As in the release: the identity shortcut carries the pre-activated input, not x itself.
        shortcut = pre if self.shortcut is None else self.shortcut(pre)
        return self.conv2(F.relu(self.bn2(self.conv1(pre)))) + shortcut


class MixingNetPolicy(nn.Module):
    """The release's mixing network reading ``g``'s and ``h``'s first two stages through forward hooks.

    ``z = linear(pool(stages(stage0(cat(g1, h1)) + conv1x1(cat(g2, h2)))))``, then ``γ = head(z)``
    (:class:`~robustmix.policy.BetaHead` with ``output_bn=True``: ``gamma_scale·BN(z) + gamma_bias``).
    ``in_channels``: channels of the first tapped layer of g and of h (the second tapped layers must have
    twice as many, as in BiT/WideResNet stages); ``widths``: the three pre-activation stages' widths.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        g_layers: Sequence[str] = ("body.block1", "body.block2"),
        h_layers: Sequence[str] = ("layer.0", "layer.1"),
        in_channels: Sequence[int] = (512, 256),
        widths: Sequence[int] = (512, 768, 1024),
        gamma_scale: float = 1.0,
        gamma_bias: float = 0.0,
    ) -> None:
        from .policy import BetaHead

        super().__init__()
        if len(g_layers) != 2 or len(h_layers) != 2 or len(in_channels) != 2 or len(widths) != 3:
            raise ValueError("need two tapped layers per model, two in_channels and three widths")
        self.g_layers, self.h_layers = list(g_layers), list(h_layers)
        self.in_channels, self.widths = [int(c) for c in in_channels], [int(w) for w in widths]
        planes = [sum(self.in_channels), *self.widths]
        self.layers = nn.ModuleList()
        cin = planes[0]
        for width in planes[1:]:
            self.layers.append(nn.Sequential(_PreActBlock(cin, width, 2), _PreActBlock(width, width, 1)))
            cin = width
        self.conv1x1 = nn.Conv2d(2 * planes[0], planes[1], 1, bias=False)
        self.linear = nn.Linear(planes[-1], 1, bias=False)
        self.head = BetaHead(output_bn=True, output_scale=gamma_scale, output_bias=gamma_bias)
        self._models = (g, h)
        self._captured: dict[str, Tensor] = {}
        modules_g, modules_h = dict(g.named_modules()), dict(h.named_modules())
        taps = [(f"g{i}", modules_g, n) for i, n in enumerate(self.g_layers)]
        taps += [(f"h{i}", modules_h, n) for i, n in enumerate(self.h_layers)]
        ref = weakref.ref(self)
        self._handles = []
        for key, modules, name in taps:
            if name not in modules:
                raise ValueError(f"no layer {name!r} to tap; available: {', '.join(n for n in modules if n)}")
            self._handles.append(modules[name].register_forward_hook(_Tap(ref, key)))

    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:
        keys = ("g0", "h0", "g1", "h1")
        if not all(k in self._captured and self._captured[k].shape[0] == x.shape[0] for k in keys):
            self._captured.clear()
            for model in self._models:
                model(x)
        g0, h0, g1, h1 = (self._captured.pop(k) for k in keys)
        feats = self.layers[0](torch.cat([g0, h0], dim=1)) + self.conv1x1(torch.cat([g1, h1], dim=1))
        for stage in self.layers[1:]:
            feats = stage(feats)
        return self.head(self.linear(feats.mean(dim=(2, 3))))

    def get_config(self) -> dict[str, Any]:
        return {
            "g_layers": self.g_layers,
            "h_layers": self.h_layers,
            "in_channels": self.in_channels,
            "widths": self.widths,
            "gamma_scale": self.head.output_scale,
            "gamma_bias": self.head.output_bias,
        }


class _Tap:
    def __init__(self, policy_ref: weakref.ref, key: str) -> None:
        self.policy_ref, self.key = policy_ref, key

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        policy = self.policy_ref()
        if policy is not None:
            policy._captured[self.key] = output
