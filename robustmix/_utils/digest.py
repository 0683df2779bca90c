"""Exact digests of tensors: the same bytes, shapes and dtypes give the same digest on every device."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["tensor_digest"]


def tensor_digest(*tensors: Tensor, extra: str = "", size: int = 16, rows: int = 1024) -> str:
    """Hex blake2b digest (``size`` bytes) of the tensors' shapes, dtypes and bytes, and of ``extra``.

    Tensors are hashed ``rows`` leading entries at a time, so a large tensor is never copied whole.
    """
    digest = hashlib.blake2b(digest_size=size)
    digest.update(" ".join(f"{tuple(t.shape)} {t.dtype}" for t in tensors).encode() + b"|" + extra.encode())
    for t in tensors:
        flat = t.detach().reshape(max(1, len(t)) if t.dim() else 1, -1)
        for block in flat.split(rows):
            digest.update(block.contiguous().cpu().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
