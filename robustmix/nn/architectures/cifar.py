"""The paper's CIFAR architectures (Table 1): ResNet-18 (torchvision's, plain or with the CIFAR stem) and the
TRADES/RobustBench WideResNet, registered as ``"torchvision_resnet18"``, ``"cifar_resnet18"``, ``"wide_resnet"``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..._utils.optional import require
from ...registry import register_architecture
from ..layers import WideStage

__all__ = ["torchvision_resnet18", "cifar_resnet18", "WideResNet", "CIFAR_RESNET18_TAPS", "WIDE_RESNET_TAPS"]

#: The layers Fig. 1 taps in a (CIFAR) ResNet-18: the outputs of its first two residual stages.
CIFAR_RESNET18_TAPS = ("layer1", "layer2")
#: The same two stages in a WideResNet.
WIDE_RESNET_TAPS = ("block1", "block2")


def torchvision_resnet18(num_classes: int = 1000) -> nn.Module:
    """``torchvision.models.resnet18(weights=None, num_classes=...)`` (needs ``robustmix[vision]``)."""
    tv = require("torchvision", "vision", "ResNet-18")
    return tv.models.resnet18(weights=None, num_classes=num_classes)


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 for 32x32 inputs: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pooling, so its
    layer names are torchvision's (``layer1`` ... ``layer4``, ``fc``). Random weights."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    model = torchvision_resnet18(num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


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
        self.block1 = WideStage(n, channels[0], channels[1], 1, drop_rate=drop_rate)
        if sub_block1:
            self.sub_block1 = WideStage(n, channels[0], channels[1], 1, drop_rate=drop_rate)
        self.block2 = WideStage(n, channels[1], channels[2], 2, drop_rate=drop_rate)
        self.block3 = WideStage(n, channels[2], channels[3], 2, drop_rate=drop_rate)
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


register_architecture("torchvision_resnet18", torchvision_resnet18)
register_architecture("cifar_resnet18", cifar_resnet18)
register_architecture("wide_resnet", WideResNet)
