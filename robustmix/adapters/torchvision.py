"""Model builders for the paper's architectures and torchvision's ImageNet classifiers, with their taps.

* :func:`cifar_resnet18` — the CIFAR-style ResNet-18 of Table 1 (3x3 stem with stride 1, no max-pooling),
  built from torchvision's ResNet so its layer names are torchvision's (``layer1`` ... ``layer4``, ``fc``).
* :class:`WideResNet` / :func:`wide_resnet` — WideResNet-depth-k (TRADES' WRN-34-10 of Table 1 row 3,
  WRN-28-10 of many RobustBench entries) with the parameter names of the TRADES/RobustBench code, so their
  checkpoints load with ``load_state_dict`` (see :func:`robustmix.adapters.robustbench.load_checkpoint`).
* :func:`imagenet_model` — any ``torchvision.models.get_model`` classifier, taking pixels in [0, 1].

Everything built here is tagged with its registered architecture, so ``save_pretrained`` can name it. Fig. 1
taps the outputs of the first two stages: :data:`CIFAR_RESNET18_TAPS`, :data:`WIDE_RESNET_TAPS`; for other
models :func:`~robustmix.adapters.default_taps` finds them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._utils.optional import require
from ..nn.architectures.cifar import CIFAR_RESNET18_TAPS, WIDE_RESNET_TAPS, WideResNet
from ..nn.layers import IMAGENET_MEAN, IMAGENET_STD, Normalized
from ..registry import build_architecture, tag_if_json

__all__ = [
    "cifar_resnet18",
    "WideResNet",
    "wide_resnet",
    "imagenet_model",
    "CIFAR_RESNET18_TAPS",
    "WIDE_RESNET_TAPS",
]


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 for 32x32 inputs: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pooling.

    Returns the model in eval mode with random weights, built as the registered architecture
    ``"cifar_resnet18"``; it expects whatever input its weights were trained on (wrap it in
    :class:`~robustmix.adapters.Normalized` if that was standardised images).
    """
    return build_architecture("cifar_resnet18", num_classes=num_classes).eval()


def wide_resnet(depth: int = 28, widen_factor: int = 10, num_classes: int = 10, **kwargs: Any) -> WideResNet:
    """A :class:`WideResNet` in eval mode (random weights), built as the registered architecture
    ``"wide_resnet"``. WRN-34-10 is TRADES' robust model of Table 1."""
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
    tv = require("torchvision", "vision", "imagenet_model")

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
