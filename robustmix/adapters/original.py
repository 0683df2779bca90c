"""Checkpoints of the authors' original code base: its policy ("mixing network") as a robustmix policy.

The original code trains a policy that reads two feature maps of each base model — the outputs of the first
two stages, ``layer1`` and ``layer2`` of a ResNet-18 (Fig. 1) — and maps them to one number γ per input:
stride-2 pre-activation residual stages on the concatenated first maps, with the concatenated second maps
added after the first stage (through a 1x1 convolution in its version 4), global average pooling and a
bias-free linear layer. γ then passes a 1-d batch norm without affine weights and a fixed scale and bias,
and the weight on ``h`` is ``w = sigmoid(γ)``, optionally squeezed into ``[alpha_bias, alpha_bias +
alpha_scale]``. The two models' softmax probabilities (of logits multiplied by ``std_scale`` and
``rob_scale``) are mixed as ``(1 - w) p_g + w p_h``.

That is robustmix's ``AdaptiveSmoothing(..., mode="none", space="prob")`` with ``α = exp(β)``, because
``α / (1 + α) = sigmoid(β)``: :class:`OriginalPolicy` — the :class:`~robustmix.nn.policies.MixingNetPolicy`
network with the original's batch-norm momentum — returns ``β = logit(w)`` (exactly γ when the range is not
squeezed). β is clamped to [-14, 14] (eq. 7), which moves ``w`` by less than 1e-6.

Checkpoints (``.pt``) are read with ``torch.load(..., weights_only=True)``: the policy weights under
``"model"``, the batch norm under ``"bn"`` (or inside ``"model"`` as ``bn.*``), and ``gamma_scale``/
``gamma_bias``. The converted policy is an ordinary module whose ``state_dict()`` can be saved with
safetensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..convert.checkpoints import extract_state_dict, load_trusted
from ..nn.layers import Tempered
from ..nn.policies import MixingNet, MixingNetPolicy
from ..nn.taps import default_taps
from ..registry import register_policy
from ..smoothing import AdaptiveSmoothing

__all__ = ["MixingNet", "OriginalPolicy", "load_original_policy", "original_mixture"]


class OriginalPolicy(MixingNetPolicy):
    """The original code's policy with robustmix's policy interface ``(x, g_logits, h_logits) -> β``.

    The network is :class:`~robustmix.nn.policies.MixingNetPolicy` (output batch norm with momentum
    ``bn_momentum``, 0.01 in the original code); the output is ``β = logit(w)`` for the mixture's default
    ``α = exp(β)``, where ``w = sigmoid(γ)``, squeezed into ``alpha_range = (low, high)`` when given.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        g_layers: Sequence[str],
        h_layers: Sequence[str],
        stages: Sequence[Sequence[Sequence[int]]],
        fuse_channels: Sequence[int] | None = None,
        gamma_scale: float = 1.0,
        gamma_bias: float = 0.0,
        alpha_range: Sequence[float] | None = None,
        bn_momentum: float = 0.01,
    ) -> None:
        if alpha_range is not None:
            low, high = (float(v) for v in alpha_range)
            if not 0 <= low < high <= 1:
                raise ValueError(f"alpha_range must satisfy 0 <= low < high <= 1, got {alpha_range}")
            alpha_range = (low, high)
        if not (math.isfinite(gamma_scale) and math.isfinite(gamma_bias)):
            raise ValueError(f"gamma_scale and gamma_bias must be finite, got {gamma_scale}, {gamma_bias}")
        super().__init__(
            g, h, g_layers, h_layers, stages=stages, fuse_channels=fuse_channels, gamma_scale=gamma_scale,
            gamma_bias=gamma_bias, bn_momentum=bn_momentum,
        )
        self.alpha_range = alpha_range

    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:
        """β with ``sigmoid(β)`` = the original weight on h (the logits are not used)."""
        gamma = super().forward(x)
        if self.alpha_range is None:
            return gamma
        low, high = self.alpha_range
        w = (low + (high - low) * torch.sigmoid(gamma)).clamp(1e-12, 1 - 1e-12)
        return torch.log(w) - torch.log1p(-w)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha_range": None if self.alpha_range is None else list(self.alpha_range)}


register_policy("OriginalPolicy", OriginalPolicy)


def _scalar(value: object, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must hold one number, got shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"{name} must be a number, got {type(value).__name__}")


def load_original_policy(
    path: str | Path,
    g: nn.Module,
    h: nn.Module,
    g_layers: Sequence[str] | None = None,
    h_layers: Sequence[str] | None = None,
    alpha_range: Sequence[float] | None = None,
) -> OriginalPolicy:
    """Read an original-code checkpoint (``weights_only=True``) and return the policy in eval mode.

    ``g_layers``/``h_layers`` default to :func:`~robustmix.adapters.default_taps` (``layer1``, ``layer2`` for
    a ResNet-18). ``alpha_range`` is the original configuration's ``(alpha_bias, alpha_bias + alpha_scale)``
    (not stored in the checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint file at {path}")
    checkpoint = load_trusted(
        path,
        hint="load it in the original code base and save {'model': policy_net.state_dict(), 'bn': bn.state_dict(), "
        "'gamma_scale': ..., 'gamma_bias': ...} with torch.save",
    )
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    model_state = checkpoint.get("model", checkpoint)
    if not isinstance(model_state, Mapping):
        raise ValueError(f"{path}: 'model' is a {type(model_state).__name__}, not a state dict")
    state = extract_state_dict(model_state)
    bn_state = checkpoint.get("bn")
    bn = {k[3:]: v for k, v in state.items() if k.startswith("bn.")}
    if isinstance(bn_state, Mapping):
        bn = {k: v for k, v in bn_state.items() if isinstance(v, Tensor)}
    net_state = {k: v for k, v in state.items() if not k.startswith("bn.")}
    stages, fuse = MixingNet.shapes_from_state_dict(net_state)
    policy = OriginalPolicy(
        g,
        h,
        list(g_layers) if g_layers is not None else default_taps(g),
        list(h_layers) if h_layers is not None else default_taps(h),
        stages,
        fuse,
        gamma_scale=_scalar(checkpoint.get("gamma_scale"), "gamma_scale", 1.0),
        gamma_bias=_scalar(checkpoint.get("gamma_bias"), "gamma_bias", 0.0),
        alpha_range=alpha_range,
    )
    missing, unexpected = policy.load_state_dict({**net_state, **{f"head.bn.{k}": v for k, v in bn.items()}}, strict=False)
    absent = [k for k in missing if not k.startswith("head.bn.") or bn]
    if absent or unexpected:
        raise ValueError(f"{path}: the mixing network does not match its weights (missing {absent[:8]}, unexpected {unexpected[:8]})")
    return policy.eval()


def original_mixture(
    g: nn.Module,
    h: nn.Module,
    path: str | Path,
    std_scale: float = 1.0,
    rob_scale: float = 1.0,
    g_layers: Sequence[str] | None = None,
    h_layers: Sequence[str] | None = None,
    alpha_range: Sequence[float] | None = None,
) -> AdaptiveSmoothing:
    """The original composite model as an :class:`AdaptiveSmoothing`: tempered logits (``std_scale``,
    ``rob_scale``), probability mixing with R = 1, and the converted policy. ``g`` and ``h`` must be the
    base models the policy was trained with, taking the same input as in the original code."""
    policy = load_original_policy(path, g, h, g_layers, h_layers, alpha_range)
    return AdaptiveSmoothing(
        Tempered(g, std_scale).eval(), Tempered(h, rob_scale).eval(), policy=policy, mode="none", space="prob"
    )
