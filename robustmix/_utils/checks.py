"""Checks shared by every layer: choices among names, and the tensors of a labelled dataset."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["check_choice", "check_data", "describe"]


def check_choice(name: str, value: object, allowed: Sequence[str]) -> None:
    """Raise an :class:`InputError` (a ``ValueError``) naming the allowed values when ``value`` is not one."""
    if value not in allowed:
        raise InputError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")


def describe(t: object) -> str:
    """``"torch.int32 of shape (4,)"`` for a tensor, the type name otherwise (for error messages)."""
    return f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__


def check_data(x: object, y: object, what: str = "the data") -> None:
    """``x``: a finite floating-point batch ``[N, ...]``; ``y``: int64 labels ``[N]`` on x's device."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise InputError(f"x of {what} must be a batched floating-point tensor [N, ...], got {describe(x)}")
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (x.shape[0],):
        raise InputError(f"y of {what} must be int64 labels of shape [{x.shape[0]}], got {describe(y)}")
    if y.device != x.device:
        raise InputError(f"x is on {x.device} but y is on {y.device}; move them to one device")
    if not torch.isfinite(x).all():
        raise InputError(f"x of {what} contains NaN or Inf values; clean the data first")
