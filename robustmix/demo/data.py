"""Offline data: scikit-learn's digits (8x8 grey images shipped inside the package), scaled to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils.optional import require

__all__ = ["Split", "load_digits_split"]


@dataclass
class Split:
    """Train and test tensors: images ``[n, 1, 8, 8]`` in [0, 1] and integer labels ``[n]``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_split(test_fraction: float = 0.3, seed: int = 0) -> Split:
    """The 1,797 digits images, shuffled with ``seed`` and split; needs scikit-learn (no download)."""
    load_digits = require("sklearn.datasets", "data", "the digits data").load_digits
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train], x[test], y[test])
