"""Any ``timm.create_model`` classifier as ``g`` or ``h``, taking pixels in [0, 1], with its policy taps.

timm records each model's input normalisation (``pretrained_cfg["mean"]``/``["std"]``) and the feature
stages (``feature_info``); :func:`timm_model` uses the first to wrap the model in
:class:`~robustmix.adapters.Normalized` and :func:`timm_taps` the second to choose the layers the policy
reads (Fig. 1: the first two stages after the stem).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._utils.optional import require
from ..nn.layers import IMAGENET_MEAN, IMAGENET_STD, Normalized
from ..nn.taps import default_taps
from ..registry import tag_if_json

__all__ = ["timm_model", "timm_taps"]

def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(model, Normalized):
        return model.model, "model."
    return model, ""


def timm_model(
    name: str, pretrained: bool = False, num_classes: int | None = None, normalize: bool = True, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, pretrained=..., num_classes=..., **kwargs)`` in eval mode.

    ``pretrained=False`` (default) builds random weights without any download. With ``normalize=True`` the
    model is wrapped in :class:`~robustmix.adapters.Normalized` using the mean/std of its pretrained
    configuration (ImageNet's when it has none), so it takes pixels in [0, 1]; layer names then start with
    ``model.``. Needs ``pip install 'robustmix[timm]'``.
    """
    timm = require("timm", "timm", "timm_model")

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; list the choices with timm.list_models()")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    spec = {"model_name": name, "num_classes": model.num_classes, **{k: v for k, v in kwargs.items() if k != "num_classes"}}
    tag_if_json(model, "timm", spec)
    if normalize:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        channels = len(mean)
        in_chans = kwargs.get("in_chans", 3)
        if channels != in_chans:
            mean, std = (sum(mean) / channels,) * in_chans, (sum(std) / channels,) * in_chans
        model = tag_if_json(Normalized(model, mean, std), "timm", spec, {"mean": list(mean), "std": list(std)})
    return model.eval()


def timm_taps(model: nn.Module, count: int = 2) -> list[str]:
    """The policy's taps in a timm model (possibly wrapped by :func:`timm_model`): the first ``count``
    entries of ``feature_info`` with a reduction of at least 4, named as in ``model.named_modules()``."""
    inner, prefix = _unwrap(model)
    if getattr(inner, "feature_info", None) is None:
        raise ValueError(f"{type(inner).__name__} has no timm feature_info; use default_taps(model) instead")
    return [prefix + n for n in default_taps(inner, count)]
