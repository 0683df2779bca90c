"""Model builders for the paper's architectures and torchvision's ImageNet classifiers, with their taps.

* :func:`cifar_resnet18` — the CIFAR-style ResNet-18 of Table 1 (3x3 stem with stride 1, no max-pooling),
  built from torchvision's ResNet so its layer names are torchvision's (``layer1`` ... ``layer4``, ``fc``).
* :class:`WideResNet` / :func:`wide_resnet` — WideResNet-depth-k (TRADES' WRN-34-10 of Table 1 row 3,
  WRN-28-10 of many RobustBench entries) with the parameter names of the TRADES/RobustBench code, so their
  checkpoints load with ``load_state_dict`` (see :func:`robustmix.adapters.robustbench.load_checkpoint`).
* :func:`imagenet_model` — any ``torchvision.models.get_model`` classifier, taking pixels in [0, 1].

Fig. 1 taps the outputs of the first two stages: :data:`CIFAR_RESNET18_TAPS`, :data:`WIDE_RESNET_TAPS`;
for other models :func:`~robustmix.adapters.default_taps` finds them.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ._optional import require
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized

__all__ = [
    "cifar_resnet18",
    "WideResNet",
    "wide_resnet",
    "imagenet_model",
    "CIFAR_RESNET18_TAPS",
    "WIDE_RESNET_TAPS",
]

#: The layers Fig. 1 taps in a (CIFAR) ResNet-18: the outputs of its first two residual stages.
CIFAR_RESNET18_TAPS = ("layer1", "layer2")
#: The same two stages in a WideResNet.
WIDE_RESNET_TAPS = ("block1", "block2")

_VISION_HINT = "pip install 'robustmix[vision]'"


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 for 32x32 inputs: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pooling.

    Returns the model in eval mode with random weights, built as the registered architecture
    ``"cifar_resnet18"`` (so ``save_pretrained`` knows it); it expects whatever input its weights were trained
    on (wrap it in :class:`~robustmix.adapters.Normalized` if that was standardised images).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    require("torchvision", _VISION_HINT)
    from robustmix.registry import build_architecture

    return build_architecture("cifar_resnet18", num_classes=num_classes).eval()


class _WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, identity or 1x1-conv shortcut.

    When the channel count changes, the shortcut starts from the activated input (as in TRADES' code)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut = (
            None if in_planes == out_planes else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class _WideStage(nn.Module):
    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                _WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` for 32x32 inputs (Zagoruyko & Komodakis), pre-activation blocks.

    Parameter names follow the TRADES/RobustBench implementation (``conv1``, ``block1.layer.0.bn1``, ...,
    ``convShortcut``, ``bn1``, ``fc``). ``sub_block1=True`` adds the unused ``sub_block1`` stage present in
    TRADES' checkpoints, so they load strictly. ``depth`` must satisfy ``(depth - 4) % 6 == 0``.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        drop_rate: float = 0.0,
        sub_block1: bool = False,
        bias_last: bool = True,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 70, ...), got {depth}")
        if widen_factor < 1 or num_classes < 2:
            raise ValueError(f"need widen_factor >= 1 and num_classes >= 2, got {widen_factor}, {num_classes}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, channels[0], channels[1], 1, drop_rate)
        if sub_block1:
            self.sub_block1 = _WideStage(n, channels[0], channels[1], 1, drop_rate)
        self.block2 = _WideStage(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = _WideStage(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels[3], num_classes, bias=bias_last)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(out.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, widen_factor={self.widen_factor}"


def wide_resnet(depth: int = 28, widen_factor: int = 10, num_classes: int = 10, **kwargs: Any) -> WideResNet:
    """A :class:`WideResNet` in eval mode (random weights), built as the registered architecture
    ``"wide_resnet"``. WRN-34-10 is TRADES' robust model of Table 1."""
    from robustmix.registry import build_architecture

    model = build_architecture("wide_resnet", depth=depth, widen_factor=widen_factor, num_classes=num_classes, **kwargs)
    return model.eval()  # type: ignore[return-value]


def imagenet_model(name: str, weights: str | None = None, normalize: bool = True, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(name, weights=weights, **kwargs)`` in eval mode.

    ``weights=None`` builds random weights (no download); a name such as ``"DEFAULT"`` downloads them
    through torchvision. With ``normalize=True`` the model is wrapped in
    :class:`~robustmix.adapters.Normalized` with the ImageNet mean and std, so it takes pixels in [0, 1] as
    attacks and the smoothing's R expect (its layer names then start with ``model.``). The result is
    tagged as the registered architecture ``"torchvision"``, so ``save_pretrained`` knows it.
    """
    tv = require("torchvision", _VISION_HINT)
    from robustmix.registry import tag_if_json

    available = tv.models.list_models(module=tv.models)
    if name not in available:
        raise ValueError(f"unknown torchvision model {name!r}; expected one of {', '.join(available)}")
    model = tag_if_json(tv.models.get_model(name, weights=weights, **kwargs), "torchvision", {"model_name": name, **kwargs})
    if normalize:
        stats = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        model = tag_if_json(
            Normalized(model, IMAGENET_MEAN, IMAGENET_STD), "torchvision", {"model_name": name, **kwargs}, stats
        )
    return model.eval()
