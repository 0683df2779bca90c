"""Adapters for model families: normalisation in the model, builders, feature taps, foreign checkpoints.

Installed as ``robustmix.adapters``. Importing it needs only torch; each family's package (torchvision,
timm, robustbench) is imported when a function that needs it is called, and a missing one raises an
``ImportError`` naming the extra to install (``pip install 'robustmix[vision]'``, ``'robustmix[timm]'``).
"""

from .normalize import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalized,
)
from .original import MixingNet, OriginalPolicy, load_original_policy, original_mixture
from .outputs import ExtractLogits
from .robustbench import extract_state_dict, load_checkpoint, load_robustbench, wrap_robustbench
from .taps import auto_policy, default_taps
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
