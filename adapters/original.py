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
``α / (1 + α) = sigmoid(β)``: :class:`OriginalPolicy` returns ``β = logit(w)`` (exactly γ when the range
is not squeezed). β is clamped to [-14, 14] by the wrapper (eq. 7), which moves ``w`` by less than 1e-6.

Checkpoints (``.pt``) are read with ``torch.load(..., weights_only=True)``: the policy weights under
``"model"``, the batch norm under ``"bn"`` (or inside ``"model"`` as ``bn.*``), and ``gamma_scale``/
``gamma_bias``. The converted policy is an ordinary module whose ``state_dict()`` can be saved with
safetensors.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmix.demo_models import Tempered
from robustmix.smoothing import AdaptiveSmoothing

from .robustbench import extract_state_dict
from .taps import default_taps

__all__ = ["MixingNet", "OriginalPolicy", "load_original_policy", "original_mixture"]


class _PreActBlock(nn.Module):
    """BN-ReLU, then conv3x3-BN-ReLU-conv3x3, plus a 1x1-conv shortcut from the activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)) if shortcut else None

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (act if self.shortcut is None else self.shortcut(act))


class MixingNet(nn.Module):
    """The original policy network, built from the shapes found in its state dict (see the module doc).

    Args:
        stages: per stage, the list of ``(in_channels, out_channels)`` of its blocks; the first block of
            every stage has stride 2.
        fuse_channels: ``(in, out)`` of the 1x1 convolution applied to the second feature maps (version 4),
            or ``None`` (version 3: they are added as they are).
    """

    def __init__(self, stages: Sequence[Sequence[tuple[int, int]]], fuse_channels: tuple[int, int] | None) -> None:
        super().__init__()
        if len(stages) < 1 or any(len(s) < 1 for s in stages):
            raise ValueError("the mixing network needs at least one stage with at least one block")
        self.layers = nn.ModuleList(
            nn.Sequential(
                *(
                    _PreActBlock(cin, cout, 2 if i == 0 else 1, shortcut=(i == 0 or cin != cout))
                    for i, (cin, cout) in enumerate(stage)
                )
            )
            for stage in stages
        )
        self.conv1x1 = (
            None if fuse_channels is None else nn.Conv2d(fuse_channels[0], fuse_channels[1], 1, bias=False)
        )
        self.linear = nn.Linear(stages[-1][-1][1], 1, bias=False)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> MixingNet:
        """Infer the architecture from the weights' names and shapes and load them (strictly)."""
        blocks: dict[int, dict[int, tuple[int, int]]] = {}
        for key, value in state.items():
            match = re.fullmatch(r"layers\.(\d+)\.(\d+)\.conv1\.weight", key)
            if match:
                blocks.setdefault(int(match[1]), {})[int(match[2])] = (value.shape[1], value.shape[0])
        if not blocks or "linear.weight" not in state:
            raise ValueError(
                "not a mixing-network state dict: expected keys 'layers.<i>.<j>.conv1.weight' and "
                f"'linear.weight', got {sorted(state)[:8]}..."
            )
        stages = [[blocks[i][j] for j in sorted(blocks[i])] for i in sorted(blocks)]
        fuse = None
        if "conv1x1.weight" in state:
            w = state["conv1x1.weight"]
            fuse = (w.shape[1], w.shape[0])
        net = cls(stages, fuse)
        net.load_state_dict(dict(state), strict=True)
        return net

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        """γ ``[B]`` from the concatenated first-stage maps and the concatenated second-stage maps."""
        out = self.layers[0](first)
        out = out + (second if self.conv1x1 is None else self.conv1x1(second))
        for layer in self.layers[1:]:
            out = layer(out)
        return self.linear(out.mean(dim=(2, 3))).reshape(-1)


class OriginalPolicy(nn.Module):
    """A converted original policy with robustmix's policy interface ``(x, g_logits, h_logits) -> β``.

    Args:
        g, h: the base models (hooked, not registered as submodules).
        net: the :class:`MixingNet`.
        g_layers, h_layers: the two taps of each model (first and second stage outputs).
        gamma_scale, gamma_bias: the fixed affine map after the output batch norm.
        alpha_range: ``(low, high)`` within [0, 1] to squeeze the weight on h into, or ``None``.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        net: MixingNet,
        g_layers: Sequence[str],
        h_layers: Sequence[str],
        gamma_scale: float = 1.0,
        gamma_bias: float = 0.0,
        alpha_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(g_layers) != 2 or len(h_layers) != 2:
            raise ValueError(f"the original policy reads two layers of each model, got {g_layers}, {h_layers}")
        if alpha_range is not None:
            low, high = (float(v) for v in alpha_range)
            if not 0 <= low < high <= 1:
                raise ValueError(f"alpha_range must satisfy 0 <= low < high <= 1, got {alpha_range}")
            alpha_range = (low, high)
        if not (math.isfinite(gamma_scale) and math.isfinite(gamma_bias)):
            raise ValueError(f"gamma_scale and gamma_bias must be finite, got {gamma_scale}, {gamma_bias}")
        self.net = net
        self.bn = nn.BatchNorm1d(1, affine=False, momentum=0.01)
        self.gamma_scale, self.gamma_bias = float(gamma_scale), float(gamma_bias)
        self.alpha_range = alpha_range
        self.g_layers, self.h_layers = list(g_layers), list(h_layers)
        self._models = (g, h)
        self._keys = [("g", n) for n in self.g_layers] + [("h", n) for n in self.h_layers]
        self._captured: dict[tuple[str, str], Tensor] = {}
        ref = weakref.ref(self)
        self._handles = []
        for who, model, names in (("g", g, self.g_layers), ("h", h, self.h_layers)):
            modules = dict(model.named_modules())
            unknown = [n for n in names if n not in modules]
            if unknown:
                raise ValueError(f"unknown layer name(s) {unknown} in {who}; see {who}.named_modules()")
            for name in names:
                self._handles.append(modules[name].register_forward_hook(_hook(ref, (who, name))))

    def remove_hooks(self) -> None:
        """Detach the policy from g and h."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _features(self, x: Tensor) -> list[Tensor]:
        if not all(k in self._captured and self._captured[k].shape[0] == x.shape[0] for k in self._keys):
            g, h = self._models
            g(x)
            h(x)
        feats = [self._captured[k] for k in self._keys]
        self._captured.clear()
        return feats

    def gamma(self, x: Tensor) -> Tensor:
        """γ after the batch norm and the fixed scale and bias, ``[B]``."""
        g1, g2, h1, h2 = self._features(x)
        dtype = self.net.linear.weight.dtype
        raw = self.net(torch.cat([g1, h1], dim=1).to(dtype), torch.cat([g2, h2], dim=1).to(dtype))
        return self.bn(raw.reshape(-1, 1)).reshape(-1) * self.gamma_scale + self.gamma_bias

    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:
        """β with ``sigmoid(β)`` = the original weight on h (the logits are not used)."""
        gamma = self.gamma(x)
        if self.alpha_range is None:
            return gamma
        low, high = self.alpha_range
        w = (low + (high - low) * torch.sigmoid(gamma)).clamp(1e-12, 1 - 1e-12)
        return torch.log(w) - torch.log1p(-w)

    def get_config(self) -> dict[str, Any]:
        return {
            "g_layers": self.g_layers,
            "h_layers": self.h_layers,
            "gamma_scale": self.gamma_scale,
            "gamma_bias": self.gamma_bias,
            "alpha_range": None if self.alpha_range is None else list(self.alpha_range),
        }


def _hook(ref: weakref.ref, key: tuple[str, str]) -> Any:
    def store(module: nn.Module, inputs: Any, output: Any) -> None:
        policy = ref()
        if policy is not None and isinstance(output, Tensor):
            policy._captured[key] = output

    return store


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
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read with weights_only=True ({err}); load it in the original code base and "
            "save {'model': policy_net.state_dict(), 'bn': bn.state_dict(), 'gamma_scale': ..., "
            "'gamma_bias': ...} with torch.save"
        ) from err
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
    net = MixingNet.from_state_dict({k: v for k, v in state.items() if not k.startswith("bn.")})
    policy = OriginalPolicy(
        g,
        h,
        net,
        list(g_layers) if g_layers is not None else default_taps(g),
        list(h_layers) if h_layers is not None else default_taps(h),
        gamma_scale=_scalar(checkpoint.get("gamma_scale"), "gamma_scale", 1.0),
        gamma_bias=_scalar(checkpoint.get("gamma_bias"), "gamma_bias", 0.0),
        alpha_range=alpha_range,
    )
    if bn:
        policy.bn.load_state_dict(bn, strict=True)
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
