"""Models named on the command line: a saved mixture (directory, Hub repo id, zoo name) or a pair of base
models, each given by a spec string, mixed with the options given.

Base-model specs (``--g`` / ``--h``):

* ``ARCH[{json}][:weights.safetensors]`` — an architecture registered in :mod:`robustmix.registry`
  (``digits_cnn``, ``cifar_resnet18``, ``wide_resnet``, ...) with optional JSON keyword arguments, e.g.
  ``wide_resnet{"depth": 28, "width": 10}:h.safetensors``; built for the dataset's class count when it
  takes ``num_classes``;
* ``timm:NAME[:weights.safetensors]`` / ``torchvision:NAME[:weights.safetensors]`` — a classifier of those
  families by name, with the dataset's class count;
* ``DIR`` — a directory written by ``save_pretrained`` (e.g. by ``robustmix convert``): its ``h`` (``--h``) or
  ``g`` (``--g``).

Weights are read only from safetensors files; without a file the model keeps its random initialisation
(and the command says so).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..hub.weights import read_safetensors
from ..registry import architecture_factory, build_architecture, list_architectures
from ..smoothing import AdaptiveSmoothing

__all__ = ["resolve_device", "load_base_model", "load_mixture_from_specs", "load_saved_mixture"]


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu``; ``cuda`` (refused when no GPU is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is visible")
    return torch.device(name)


def _load_state(model: nn.Module, path: str, spec: str) -> None:
    if not path.endswith(".safetensors"):
        raise InputError(
            f"{spec}: weights must be a .safetensors file, got {path!r}; convert .pt checkpoints with "
            "`robustmix convert`"
        )
    if not Path(path).is_file():
        raise InputError(f"{spec}: no weights file {path}")
    tensors = read_safetensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InputError(f"{spec}: {path} does not fit the architecture: {' '.join(first[:3])}") from err


def _split_arch_spec(spec: str, role: str) -> tuple[str, dict[str, Any], str]:
    """``ARCH[{json kwargs}][:weights]`` → (name, kwargs, weights path or "")."""
    cut = min((i for i in (spec.find("{"), spec.find(":")) if i >= 0), default=len(spec))
    name, rest = spec[:cut], spec[cut:]
    kwargs: dict[str, Any] = {}
    if rest.startswith("{"):
        try:
            kwargs, end = json.JSONDecoder().raw_decode(rest)
        except json.JSONDecodeError as err:
            raise InputError(f"--{role} {spec}: the architecture's arguments are not JSON: {err}") from err
        if not isinstance(kwargs, dict):
            raise InputError(f"--{role} {spec}: the architecture's arguments must be a JSON object")
        rest = rest[end:]
    if rest and not rest.startswith(":"):
        raise InputError(f"--{role} {spec}: expected ARCH[{{json}}][:weights.safetensors]")
    return name, kwargs, rest[1:]


def load_saved_mixture(name_or_path: str, device: torch.device, **runtime: Any) -> AdaptiveSmoothing:
    """``AdaptiveSmoothing.from_pretrained`` with command-line errors."""
    return AdaptiveSmoothing.from_pretrained(name_or_path, device=device, **runtime)


def load_base_model(spec: str, num_classes: int, device: torch.device, role: str = "h") -> nn.Module:
    """The base model ``spec`` names (see the module docstring), in eval mode on ``device``."""
    if not spec:
        raise InputError(f"--{role} is empty")
    if Path(spec).is_dir():
        saved = load_saved_mixture(spec, device)
        return getattr(saved, role)
    family, _, rest = spec.partition(":")
    if family in ("timm", "torchvision"):
        name, _, weights = rest.partition(":")
        if not name:
            raise InputError(f"--{role} {spec}: give the model name, e.g. {family}:resnet18")
        try:
            model = build_architecture(family, model_name=name, num_classes=num_classes)
        except (ImportError, RuntimeError, KeyError, ValueError) as err:
            raise InputError(f"--{role} {spec}: cannot build {family} model {name!r}: {err}") from err
    else:
        name, kwargs, weights = _split_arch_spec(spec, role)
        if name not in list_architectures():
            raise InputError(
                f"--{role} {spec}: unknown architecture {name!r}; registered: {', '.join(list_architectures())} "
                "(or timm:NAME, torchvision:NAME, a saved directory)"
            )
        if "num_classes" in inspect.signature(architecture_factory(name)).parameters:
            kwargs.setdefault("num_classes", num_classes)
        try:
            model = build_architecture(name, **kwargs)
        except (TypeError, ValueError) as err:
            raise InputError(f"--{role} {spec}: {err}") from err
    if weights:
        _load_state(model, weights, f"--{role} {spec}")
    return model.to(device).eval()


def load_mixture_from_specs(
    g_spec: str, h_spec: str, num_classes: int, device: torch.device, **options: Any
) -> AdaptiveSmoothing:
    """``AdaptiveSmoothing(load_base_model(g), load_base_model(h), **options)``."""
    g = load_base_model(g_spec, num_classes, device, role="g")
    h = load_base_model(h_spec, num_classes, device, role="h")
    try:
        return AdaptiveSmoothing(g, h, **options)
    except (ValueError, ConfigError) as err:
        raise InputError(f"mixture options: {err}") from err
