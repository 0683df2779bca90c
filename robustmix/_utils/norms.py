"""The attack norms and their duals: R (eq. 5) and the certificates (Theorems 1, 2) use ``||·||_{p*}``.

An l_inf attack pairs with the l_1 norm of gradients, an l_2 attack with the l_2 norm.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .checks import check_choice

__all__ = ["Norm", "NORMS", "dual_norm", "primal_norm", "upcast"]

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")


def upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 tensors (from autocast) become float32; other dtypes are returned unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def dual_norm(v: Tensor, norm: Norm, batch_dims: int | None = 1) -> Tensor:
    """``||v||_{p*}`` of the attack norm: l_1 for ``"linf"``, l_2 for ``"l2"``.

    Reduced over every dim after the first ``batch_dims``; ``batch_dims=None`` reduces the last dim only.
    Half-precision inputs (autocast) are reduced in float32.
    """
    check_choice("norm", norm, NORMS)
    flat = upcast(v if batch_dims is None else v.flatten(start_dim=batch_dims))
    if norm == "linf":
        return flat.abs().sum(dim=-1)
    return torch.linalg.vector_norm(flat, ord=2, dim=-1)


def primal_norm(v: Tensor, norm: Norm) -> Tensor:
    """``||v||_p`` over the last dim (the size of a perturbation in the attack norm)."""
    check_choice("norm", norm, NORMS)
    return v.abs().amax(-1) if norm == "linf" else torch.linalg.vector_norm(v, dim=-1)
