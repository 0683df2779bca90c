"""Reading foreign checkpoints safely: safetensors files with safetensors, ``.pt``/``.pth``/``.bin`` files with
``torch.load(weights_only=True)`` (which refuses pickled code), and the state dict inside a training checkpoint.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..hub.weights import safetensors_header

__all__ = ["CONTAINER_KEYS", "load_trusted", "extract_state_dict", "read_checkpoint"]

#: Keys under which training scripts store the model's state dict.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def load_trusted(path: str | os.PathLike[str], hint: str | None = None) -> Any:
    """The object in a checkpoint file: a safetensors file's tensors, or ``torch.load(weights_only=True)``'s
    result (tensors and plain containers only; never full unpickling). ``hint`` is added to the error when
    the file holds pickled objects other than tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if safetensors_header(path) is not None:
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds pickled objects other than tensors; torch.load(weights_only=True) refused it "
            f"and robustmix will not load it any other way ({str(err).splitlines()[0]})"
            + (f". To convert it, {hint}" if hint else "")
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err})") from None


def extract_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The model weights inside a training checkpoint: the tensors under ``state_dict``, ``model_state_dict``,
    ``model`` or ``net`` when present (else the mapping itself), with ``module.`` prefixes (DataParallel)
    removed."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}")
    for key in CONTAINER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            checkpoint = inner
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(
            f"no tensors found in the checkpoint (top-level keys: {list(checkpoint)}); expected a state dict "
            f"or one under {', '.join(CONTAINER_KEYS)}"
        )
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` state dict from a ``.pt``/``.pth``/``.bin`` (weights_only) or safetensors file.

    Unwraps ``{"state_dict": ...}``-style containers and strips ``module.`` (DataParallel) prefixes.
    """
    checkpoint = load_trusted(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return extract_state_dict(checkpoint)
