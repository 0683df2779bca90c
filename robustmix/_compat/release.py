"""The names of the old ``robustmix.release`` module."""

from ..nn.architectures.release import BiTResNetV2, DMWideResNet, bit_resnetv2, dm_wide_resnet
from ..nn.layers import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from ..nn.policies import MixingNetPolicy

CIFAR10_STATS = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
CIFAR100_STATS = {"mean": CIFAR100_MEAN, "std": CIFAR100_STD}

__all__ = ["bit_resnetv2", "dm_wide_resnet", "BiTResNetV2", "DMWideResNet", "MixingNetPolicy", "CIFAR10_STATS",
           "CIFAR100_STATS"]
