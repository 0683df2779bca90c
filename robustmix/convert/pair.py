"""A pair of separate g / h (and policy) state dicts of registered architectures as a saved robustmix model
(e.g. the paper's ResNet-18 checkpoints, Table 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .. import registry
from ..smoothing import AdaptiveSmoothing

__all__ = ["convert_pair", "load_part"]


def load_part(module: torch.nn.Module, state: Mapping[str, Tensor], who: str) -> None:
    """Load ``state`` into ``module`` strictly, listing missing, unexpected and wrongly shaped tensors."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(
            f"the {who} checkpoint does not match its architecture: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, wrongly shaped {shapes[:8]}"
        )
    module.load_state_dict(dict(state), strict=True)


def convert_pair(
    g_state: Mapping[str, Tensor],
    g_arch: Mapping[str, Any],
    h_state: Mapping[str, Tensor],
    h_arch: Mapping[str, Any],
    alpha: float | None = None,
    policy_type: str | None = None,
    policy_config: Mapping[str, Any] | None = None,
    policy_state: Mapping[str, Tensor] | None = None,
    **options: Any,
) -> AdaptiveSmoothing:
    """Build ``AdaptiveSmoothing`` from g/h (and policy) state dicts; ``*_arch`` = ``{"name", "kwargs"}``."""
    g = registry.build_architecture(g_arch["name"], **g_arch.get("kwargs", {}))
    h = registry.build_architecture(h_arch["name"], **h_arch.get("kwargs", {}))
    load_part(g, g_state, "g")
    load_part(h, h_state, "h")
    policy = None
    if policy_type is not None:
        policy = registry.build_policy(policy_type, policy_config or {}, g, h)
        if policy_state is None:
            raise ValueError("a policy needs its checkpoint (--policy-checkpoint)")
        policy.load_state_dict(dict(policy_state), strict=True)
    return AdaptiveSmoothing(g.eval(), h.eval(), alpha=alpha, policy=policy, **options).eval()


