"""Adapters for model families: builders that take pixels in [0, 1] (torchvision, timm, RobustBench), foreign
checkpoints (TRADES, RobustBench, the authors' original code), and the building blocks they share.

Importing it needs only torch; each family's package (torchvision, timm, robustbench) is imported when a
function that needs it is called, and a missing one raises an ``ImportError`` naming the extra to install
(``pip install 'robustmix[vision]'``, ``'robustmix[timm]'``). ``import robustmix`` does not load this package.
"""

from ..convert.checkpoints import extract_state_dict
from ..nn.layers import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExtractLogits,
    Normalized,
)
from ..nn.policies import MixingNet, auto_policy
from ..nn.taps import default_taps
from .original import OriginalPolicy, load_original_policy, original_mixture
from .robustbench import load_checkpoint, load_robustbench, wrap_robustbench
from .timm import timm_model, timm_taps
from .torchvision import (
    CIFAR_RESNET18_TAPS,
    WIDE_RESNET_TAPS,
    WideResNet,
    cifar_resnet18,
    imagenet_model,
    wide_resnet,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_RESNET18_TAPS",
    "ExtractLogits",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MixingNet",
    "Normalized",
    "OriginalPolicy",
    "WIDE_RESNET_TAPS",
    "WideResNet",
    "auto_policy",
    "cifar_resnet18",
    "default_taps",
    "extract_state_dict",
    "imagenet_model",
    "load_checkpoint",
    "load_original_policy",
    "load_robustbench",
    "original_mixture",
    "timm_model",
    "timm_taps",
    "wide_resnet",
    "wrap_robustbench",
]
