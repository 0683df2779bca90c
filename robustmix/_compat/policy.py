"""The names of the old ``robustmix.policy`` module (its second policy registry now delegates to
:mod:`robustmix.registry`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import registry
from ..nn.policies import BETA_CLAMP, BetaHead, LogitPolicy, PolicyNet

__all__ = ["PolicyNet", "LogitPolicy", "BetaHead", "BETA_CLAMP", "POLICY_TYPES", "build_policy", "policy_spec"]

POLICY_TYPES: dict[str, type[nn.Module]] = {"PolicyNet": PolicyNet, "LogitPolicy": LogitPolicy}


def policy_spec(policy: nn.Module) -> dict[str, Any]:
    """``{"type": registered name, "config": get_config()}`` — everything needed to rebuild ``policy``."""
    return {"type": registry.policy_name(policy), "config": policy.get_config()}


def build_policy(spec: dict[str, Any], g: nn.Module, h: nn.Module) -> nn.Module:
    """Rebuild a policy from :func:`policy_spec` output (see :func:`robustmix.registry.build_policy`)."""
    return registry.build_policy(spec.get("type"), spec.get("config", {}), g, h)  # type: ignore[arg-type]
