"""Base models shared by the digits examples: the demo's standard g and PGD-trained h (l_inf, ε = 0.3).

The full recipe is :func:`robustmix.demo.get_demo_models` (a few minutes on two CPU cores, cached
with ``--cache-dir``). ``smoke=True`` trains both for one short epoch on 300 images: seconds, for CI only;
its accuracies mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustmix.demo.data import Split, load_digits_split
from robustmix.demo.models import DEMO_EPS, get_demo_models, train_adversarial, train_standard
from robustmix.nn.architectures.digits import digits_cnn


def digits_models(smoke: bool, seed: int = 0, cache_dir: Path | None = None) -> tuple[nn.Module, nn.Module, Split]:
    """``(g, h, split)`` in eval mode."""
    if not smoke:
        return get_demo_models(quick=False, seed=seed, cache_dir=cache_dir)
    split = load_digits_split(seed=seed)
    x, y = split.x_train[:300], split.y_train[:300]
    torch.manual_seed(seed)
    g = train_standard(digits_cnn(), x, y, epochs=1, seed=seed, progress=False)
    h = train_adversarial(digits_cnn(), x, y, eps=DEMO_EPS, steps=2, epochs=1, seed=seed, progress=False)
    return g, h, split
