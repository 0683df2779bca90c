"""RobustBench models as the robust model ``h``, and loading their (or TRADES') checkpoints without it.

RobustBench's convention is that every model takes images in [0, 1] and applies any normalisation it
needs internally, so a model from ``robustbench.utils.load_model`` is already the right ``h``: attacks and
the smoothing's R (eq. 5) then work in pixel space. A bare architecture (for example
:func:`~robustmix.adapters.wide_resnet` loaded with :func:`load_checkpoint`) needs the mean/std its
weights were trained with, if any: give them to :func:`wrap_robustbench`.

The ``robustbench`` package is optional and not an extra of robustmix (it pins timm and gdown versions
that conflict with the default environment): ``pip install robustbench`` to use :func:`load_robustbench`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .._utils.optional import require
from ..convert.checkpoints import extract_state_dict, load_trusted
from ..nn.layers import Normalized

__all__ = ["wrap_robustbench", "load_robustbench", "load_checkpoint", "extract_state_dict"]

def wrap_robustbench(
    model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> nn.Module:
    """``model`` as ``h``, in eval mode and taking pixels in [0, 1].

    Models from RobustBench's ``load_model`` already normalise internally: call this without ``mean`` and
    ``std``. For a bare architecture trained on standardised inputs, pass both; the result is then
    ``Normalized(model, mean, std)``.
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (for a model trained on standardised inputs) or neither")
    if mean is not None and std is not None:
        model = Normalized(model, mean, std)
    return model.eval()


def load_robustbench(
    model_name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: str | Path = "models",
    device: str | torch.device = "cpu",
) -> nn.Module:
    """``robustbench.utils.load_model(...)`` (downloads the weights into ``model_dir``) wrapped by
    :func:`wrap_robustbench`. Needs ``pip install robustbench``."""
    load_model = require("robustbench.utils", None, "load_robustbench (robustbench is kept out of robustmix's extras because of its pins)").load_model

    model = load_model(model_name=model_name, dataset=dataset, threat_model=threat_model, model_dir=str(model_dir))
    return wrap_robustbench(model).to(device)


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` and return it in eval mode.

    ``.safetensors`` files are read with safetensors; other files (RobustBench's and TRADES' ``.pt``) with
    ``torch.load(..., weights_only=True)``, which refuses pickled code. Nested checkpoints and DataParallel
    prefixes are handled by :func:`extract_state_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint file at {path}")
    checkpoint = load_trusted(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    state = {k: v.to(device) for k, v in extract_state_dict(checkpoint).items()}
    model.load_state_dict(state, strict=strict)
    return model.eval()
