"""Per-channel input normalisation as part of the model, so attacks and certificates live in pixel space.

Attack radii (ε = 8/255 in l_inf, 0.5 in l_2, section 6.3) are defined on images in [0, 1]. Models are
usually trained on standardised inputs ``(x - mean) / std``; attacking such a model with [0, 1] images, or
attacking the standardised tensor with a pixel-space ε, silently changes the threat model (by a factor of
about 1/std ≈ 4 for CIFAR-10). :class:`Normalized` moves the standardisation inside the model: the wrapped
model takes pixels in [0, 1], and so do :class:`~robustmix.smoothing.AdaptiveSmoothing`, the attacks, and
R (eq. 5), whose input gradients are then taken with respect to pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Normalized",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: Per-channel statistics of the training sets (the values torchvision/RobustBench/timm configurations use).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(name: str, values: Sequence[float] | Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; give one value per input channel")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf: {t.tolist()}")
    return t


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a model that expects standardised input, taking pixels in [0, 1].

    Args:
        model: the network trained on standardised inputs (logits out).
        mean, std: one value per channel (e.g. :data:`CIFAR10_MEAN`, :data:`CIFAR10_STD`); ``std > 0``.

    The wrapped model is the submodule ``model`` (layer names gain the prefix ``model.``); ``mean`` and
    ``std`` are buffers of shape ``[1, C, 1, 1]`` that follow ``.to()`` and stay out of the state dict
    (a wrapped model saves and loads exactly the weights of ``model``, under the prefix ``model.``). The
    wrapper has no parameters of its own and forwards train/eval mode to ``model``.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        mean_t, std_t = _stats("mean", mean), _stats("std", std)
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if not (std_t > 0).all():
            raise ValueError(f"std must be positive in every channel, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1), persistent=False)

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` over the channel dimension 1 of a ``[B, C, H, W]`` batch."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected images [B, {self.channels}, H, W] in [0, 1], got shape {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"

