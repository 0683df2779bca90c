"""The networks robustmix can build by name (each module registers its architectures where they are defined):
the demo's digits CNN, the paper's CIFAR ResNet-18 and WideResNet, the base models of the authors' later
release and of MixedNUTS (RobustBench), and any timm or torchvision classifier."""

from . import families  # noqa: F401  (registers the timm and torchvision families)
from .cifar import CIFAR_RESNET18_TAPS, WIDE_RESNET_TAPS, WideResNet, cifar_resnet18, torchvision_resnet18
from .digits import digits_cnn
from .release import BiTResNetV2, DMWideResNet, bit_resnetv2, dm_wide_resnet, ra_wide_resnet

__all__ = [
    "CIFAR_RESNET18_TAPS",
    "WIDE_RESNET_TAPS",
    "BiTResNetV2",
    "DMWideResNet",
    "WideResNet",
    "bit_resnetv2",
    "cifar_resnet18",
    "digits_cnn",
    "dm_wide_resnet",
    "ra_wide_resnet",
    "torchvision_resnet18",
]
