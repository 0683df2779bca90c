"""Classifiers of the common families — timm and torchvision — as registered architectures, recognised even
when built without robustmix.

``"timm"`` is ``timm.create_model(model_name, pretrained=False, num_classes=..., in_chans=...)`` and
``"torchvision"`` is ``torchvision.models.get_model(model_name, weights=None, num_classes=...)``: a config can
only name models those libraries list. :func:`infer_timm` and :func:`infer_torchvision` let
:func:`robustmix.registry.architecture_spec` describe a model built directly with either library (as
``torchvision.models.resnet18(num_classes=10)``); a model is recognised only when a fresh build from the
inferred name (on the meta device: no memory, no download) has exactly its modules and tensor shapes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..._utils.optional import require
from ...registry import register_architecture, register_spec_inference

__all__ = ["timm_classifier", "torchvision_classifier", "infer_timm", "infer_torchvision"]


def timm_classifier(model_name: str, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, ...)``: any timm classifier, by its registered name."""
    timm = require("timm", "timm", "the 'timm' architecture")

    if not isinstance(model_name, str) or not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}; list the choices with timm.list_models()")
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def torchvision_classifier(model_name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(model_name, weights=None, ...)``: a torchvision classifier by name."""
    torchvision = require("torchvision", "vision", "the 'torchvision' architecture")

    available = torchvision.models.list_models(module=torchvision.models)
    if model_name not in available:
        raise ValueError(f"unknown torchvision classification model {model_name!r}; expected one of {', '.join(available)}")
    return torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)


def _same_structure(model: nn.Module, candidate: nn.Module) -> bool:
    """Same module tree (types and hyper-parameters, as ``repr`` shows them) and the same tensor shapes."""
    if repr(candidate) != repr(model):
        return False
    ours, theirs = model.state_dict(), candidate.state_dict()
    return ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours)


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if conv is None else int(conv.in_channels)


def infer_timm(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``("timm", kwargs)`` for a ``timm.create_model`` classifier that a fresh build reproduces, else None."""
    if not type(model).__module__.startswith("timm."):
        return None
    timm = require("timm", "timm")

    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(arch, str) or not timm.is_model(arch) or not isinstance(num_classes, int):
        return None
    kwargs: dict[str, Any] = {"model_name": arch, "num_classes": num_classes}
    channels = _first_conv_channels(model)
    if channels is not None and channels != 3:
        kwargs["in_chans"] = channels
    with torch.device("meta"):
        candidate = timm.create_model(arch, pretrained=False, **{k: v for k, v in kwargs.items() if k != "model_name"})
    return ("timm", kwargs) if _same_structure(model, candidate) else None


def infer_torchvision(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``("torchvision", kwargs)`` for a torchvision classifier that exactly one builder of its module
    reproduces (with the class count read off the last bias), else None."""
    module = type(model).__module__
    if not module.startswith("torchvision.models."):
        return None
    torchvision = require("torchvision", "vision")

    biases = [v for k, v in model.state_dict().items() if k.endswith("bias") and v.dim() == 1]
    if not biases:
        return None
    num_classes = int(biases[-1].shape[0])  # the classifier comes last in every torchvision classifier
    matches = []
    for name in torchvision.models.list_models(module=torchvision.models):
        builder = torchvision.models.get_model_builder(name)
        if builder.__module__ != module:
            continue
        try:
            with torch.device("meta"):
                candidate = builder(weights=None, num_classes=num_classes)
        except (TypeError, ValueError):
            continue
        if _same_structure(model, candidate):
            matches.append(name)
    if len(matches) != 1:
        return None
    return "torchvision", {"model_name": matches[0], "num_classes": num_classes}


register_architecture("timm", timm_classifier)
register_architecture("torchvision", torchvision_classifier)
register_spec_inference(infer_timm)
register_spec_inference(infer_torchvision)
