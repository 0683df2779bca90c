"""Whether code runs inside a ``torch.func`` transform (grad, vmap, jacrev, jvp, ...).

Inside a transform, tensors are functorch wrappers: Python control flow on their values (``bool(t)``,
``.item()``) fails under ``vmap``, and ``torch.autograd.grad`` / ``requires_grad_`` do not see the
transform's levels. The mixture uses these two questions to pick the ``torch.func`` path for R and to skip
value checks that a transform cannot run.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["in_transform", "is_transformed"]


def in_transform() -> bool:
    """True while a ``torch.func`` transform is active (its interpreter stack is not empty)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def is_transformed(t: object) -> bool:
    """True for a tensor wrapped by a ``torch.func`` transform (batched or gradient-tracking)."""
    return isinstance(t, Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t)
