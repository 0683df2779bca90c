"""The demo's CNN for scikit-learn's 8x8 digits (registered as ``"digits_cnn"``).

ELU activations and average pooling only (no ReLU, no max-pooling): monotone, with a Lipschitz gradient,
so R (eq. 5) and the bounds of Theorem 2 are well defined everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ...registry import register_architecture

__all__ = ["digits_cnn"]


def digits_cnn(num_classes: int = 10, channels: Sequence[int] = (16, 32, 64)) -> nn.Sequential:
    """A 3-conv CNN for ``[B, 1, 8, 8]`` inputs: conv-ELU x3 with two 2x2 average pools, then linear.

    Layer names (for policy taps): ``conv1 act1 conv2 act2 pool2 conv3 act3 pool3 flatten fc``. The
    convolution weights are channels-last, which makes these small convolutions faster on CPU
    (``benchmarks/memory_format.py``); inputs may be in either memory format.
    """
    c1, c2, c3 = (int(c) for c in channels)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, c1, 3, padding=1),
            act1=nn.ELU(),
            conv2=nn.Conv2d(c1, c2, 3, padding=1),
            act2=nn.ELU(),
            pool2=nn.AvgPool2d(2),
            conv3=nn.Conv2d(c2, c3, 3, padding=1),
            act3=nn.ELU(),
            pool3=nn.AvgPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(c3 * 4, num_classes),
        )
    )
    return model.to(memory_format=torch.channels_last)


register_architecture("digits_cnn", digits_cnn)
