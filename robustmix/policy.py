"""Neural-network policies β_θ(x) for the adaptive mixture, α = exp(β) (eq. 7, Fig. 1, section 5.2).

:class:`PolicyNet` follows Fig. 1: it taps intermediate features of ``g`` and ``h`` with forward hooks
(captured during the single forward pass of each model that :class:`~robustmix.smoothing.AdaptiveSmoothing`
already makes), passes each through a conv branch, concatenates them, and maps the result with a small
conv stack, global pooling and a linear layer to one number β per input. :class:`LogitPolicy` is the
fallback for models without convolutional features: it reads only the two models' outputs.

Both policies own only their own parameters: ``g`` and ``h`` are never registered as submodules, so
they appear neither in ``policy.parameters()`` nor in ``policy.state_dict()``, and an optimiser built
from the policy's parameters can never change them. Both expose ``get_config()``, the JSON-serialisable
constructor arguments other than ``g`` and ``h``: ``PolicyNet(g, h, **policy.get_config())`` rebuilds one.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .smoothing import BETA_CLAMP

__all__ = ["PolicyNet", "LogitPolicy", "BetaHead", "POLICY_TYPES", "build_policy", "policy_spec"]


class BetaHead(nn.Module):
    """The policy's output layer: a scalar pre-activation ``z`` -> β (eq. 7, before the clamp).

    ``β = scale · BN(z) + bias`` (``output_bn`` adds a 1-d batch norm without its own affine, as in the
    authors' later release); with ``beta_range=(lo, hi)`` the result is squashed into that interval,
    ``β = lo + (hi - lo) · sigmoid(scale · BN(z) + bias)``, restricting α = exp(β) to ``[e^lo, e^hi]``.
    The output is clamped to [-14, 14] as the wrapper does (section 6.3).
    """

    def __init__(
        self,
        output_bn: bool = False,
        output_scale: float = 1.0,
        output_bias: float = 0.0,
        beta_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if beta_range is not None:
            beta_range = [float(v) for v in beta_range]
            if len(beta_range) != 2 or not beta_range[0] < beta_range[1]:
                raise ValueError(f"beta_range must be (low, high) with low < high, got {beta_range}")
        if not (torch.isfinite(torch.tensor([output_scale, output_bias])).all()):
            raise ValueError(
                f"output_scale and output_bias must be finite, got {output_scale}, {output_bias}"
            )
        self.bn = nn.BatchNorm1d(1, affine=False) if output_bn else None
        self.output_scale = float(output_scale)
        self.output_bias = float(output_bias)
        self.beta_range = None if beta_range is None else tuple(beta_range)

    def forward(self, z: Tensor) -> Tensor:
        z = z.reshape(-1, 1)
        if self.bn is not None:
            z = self.bn(z)
        z = (self.output_scale * z + self.output_bias).reshape(-1)
        if self.beta_range is not None:
            low, high = self.beta_range
            z = low + (high - low) * torch.sigmoid(z)
        return z.clamp(*BETA_CLAMP)

    def get_config(self) -> dict[str, Any]:
        return {
            "output_bn": self.bn is not None,
            "output_scale": self.output_scale,
            "output_bias": self.output_bias,
            "beta_range": None if self.beta_range is None else list(self.beta_range),
        }


def _conv_block(out_channels: int, lazy: bool, in_channels: int = 0) -> nn.Sequential:
    conv = (
        nn.LazyConv2d(out_channels, 3, padding=1)
        if lazy
        else nn.Conv2d(in_channels, out_channels, 3, padding=1)
    )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


def _as_map(t: Tensor) -> Tensor:
    """A feature of rank 2 ``[B, F]`` or 3 ``[B, C, L]`` becomes a ``[B, C, H, W]`` map."""
    if t.dim() == 4:
        return t
    if t.dim() == 2:
        return t[:, :, None, None]
    if t.dim() == 3:
        return t[:, :, :, None]
    raise ValueError(f"cannot use a feature of shape {tuple(t.shape)}; expected rank 2, 3 or 4")


def _resolve(model: nn.Module, names: Sequence[str], who: str) -> list[nn.Module]:
    if isinstance(names, str):
        raise ValueError(f"{who}_layers must be a list of layer names, got the string {names!r}")
    if len(names) == 0:
        raise ValueError(f"{who}_layers is empty; name at least one layer of {who} to read features from")
    available = dict(model.named_modules())
    unknown = [n for n in names if n not in available or n == ""]
    if unknown:
        listing = ", ".join(repr(n) for n in available if n)
        raise ValueError(f"unknown layer name(s) {unknown} in {who}; available layers of {who}: {listing}")
    return [available[n] for n in names]


class PolicyNet(nn.Module):
    """Fig. 1 policy: features of ``g`` and ``h`` -> conv branches -> conv stack -> pool -> linear -> β.

    Args:
        g, h: the two base models (not registered as submodules; never modified).
        g_layers, h_layers: names from ``model.named_modules()`` whose outputs are tapped by forward hooks.
            Outputs of rank 2 or 3 are treated as ``[B, C, 1, 1]`` / ``[B, C, L, 1]`` maps.
        width: channels of every conv layer of the policy.
        depth: conv layers after concatenating the branches (each Conv3x3 + BN + ReLU).
        hidden: width of the hidden linear layer.
        output_bn, output_scale, output_bias, beta_range: see :class:`BetaHead`.

    Call signature is the wrapper's ``policy(x, g_logits, h_logits) -> β [B]``. The features are those of
    the most recent forward of ``g`` and ``h`` (the wrapper runs both right before the policy); they are
    consumed by the call. If none were captured for this batch, the policy runs ``g(x)`` and ``h(x)``
    itself. Input channel counts are inferred on the first call (lazy layers): run one batch before
    building an optimiser, or load a state dict. ``remove_hooks()`` detaches the policy from g and h.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        g_layers: Sequence[str],
        h_layers: Sequence[str],
        width: int = 32,
        depth: int = 2,
        hidden: int = 64,
        output_bn: bool = False,
        output_scale: float = 1.0,
        output_bias: float = 0.0,
        beta_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 0 or hidden < 1:
            raise ValueError(f"need width >= 1, depth >= 0, hidden >= 1; got {width}, {depth}, {hidden}")
        g_modules = _resolve(g, g_layers, "g")
        h_modules = _resolve(h, h_layers, "h")
        self.g_layers = list(g_layers)
        self.h_layers = list(h_layers)
        self.width, self.depth, self.hidden = int(width), int(depth), int(hidden)
        # A plain tuple: g and h stay out of parameters(), state_dict(), .to() and .train()/.eval().
        self._models: tuple[nn.Module, nn.Module] = (g, h)
        self._keys = [f"g:{n}" for n in self.g_layers] + [f"h:{n}" for n in self.h_layers]
        self._captured: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        ref = weakref.ref(self)
        for key, module in zip(self._keys, g_modules + h_modules, strict=True):
            self._handles.append(module.register_forward_hook(_Capture(ref, key)))
        n_taps = len(self._keys)
        self.branches = nn.ModuleList(_conv_block(self.width, lazy=True) for _ in range(n_taps))
        self.trunk = nn.Sequential(
            *(
                _conv_block(self.width, lazy=False, in_channels=self.width * (n_taps if i == 0 else 1))
                for i in range(self.depth)
            )
        )
        trunk_out = self.width * (n_taps if self.depth == 0 else 1)
        self.fc = nn.Sequential(nn.Linear(trunk_out, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        self.head = BetaHead(output_bn, output_scale, output_bias, beta_range)

    # -- hooks ----------------------------------------------------------------------------------------
    def _store(self, key: str, output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = next((o for o in output if isinstance(o, Tensor)), None)
        if isinstance(output, Tensor):
            self._captured[key] = output

    def remove_hooks(self) -> None:
        """Detach the policy from g and h; afterwards it can no longer read their features."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    @property
    def hooked(self) -> bool:
        return bool(self._handles)

    def _features(self, x: Tensor) -> list[Tensor]:
        if not self._handles:
            raise RuntimeError("the policy's hooks were removed; build a new PolicyNet to use it again")
        fresh = all(k in self._captured and self._captured[k].shape[0] == x.shape[0] for k in self._keys)
        if not fresh:
            g, h = self._models
            self._captured.clear()
            g(x)
            h(x)
        feats = [self._captured[k] for k in self._keys]
        self._captured.clear()
        # The wrapper keeps a model's graph only when x or that model's parameters need gradients; otherwise
        # its features must not carry the (already freed) graph into the policy's backward pass.
        keep = [x.requires_grad or any(p.requires_grad for p in m.parameters()) for m in self._models]
        n_g = len(self.g_layers)
        return [f if keep[0 if i < n_g else 1] else f.detach() for i, f in enumerate(feats)]

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:
        """β ``[B]`` for the batch ``x`` (eq. 7); ``g_logits``/``h_logits`` are accepted for the wrapper's
        call signature and not used (the features carry more information)."""
        maps = [_as_map(f) for f in self._features(x)]
        height = min(m.shape[2] for m in maps)
        width = min(m.shape[3] for m in maps)
        outs = []
        for branch, m in zip(self.branches, maps, strict=True):
            y = branch(m.to(self.fc[0].weight.dtype))
            if y.shape[2:] != (height, width):
                y = F.adaptive_avg_pool2d(y, (height, width))
            outs.append(y)
        z = self.trunk(torch.cat(outs, dim=1)).mean(dim=(2, 3))
        return self.head(self.fc(z))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments other than g and h (JSON-serialisable)."""
        return {
            "g_layers": list(self.g_layers),
            "h_layers": list(self.h_layers),
            "width": self.width,
            "depth": self.depth,
            "hidden": self.hidden,
            **self.head.get_config(),
        }


class _Capture:
    """Forward hook storing a module's output in the policy (held weakly, so g/h do not keep it alive)."""

    def __init__(self, policy_ref: weakref.ref, key: str) -> None:
        self.policy_ref = policy_ref
        self.key = key

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        policy = self.policy_ref()
        if policy is not None:
            policy._store(self.key, output)


class LogitPolicy(nn.Module):
    """Fallback policy from the two models' outputs only: ``[p_g, p_h, sorted p_g, sorted p_h]`` -> MLP -> β.

    ``p = softmax(logits / temperature)``. Works for any pair of classifiers (MLPs, K-NN oracles).
    """

    def __init__(
        self,
        num_classes: int,
        hidden: int = 64,
        temperature: float = 1.0,
        output_bn: bool = False,
        output_scale: float = 1.0,
        output_bias: float = 0.0,
        beta_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2 or hidden < 1 or not temperature > 0:
            raise ValueError(
                f"need num_classes >= 2, hidden >= 1, temperature > 0; got {num_classes}, {hidden}, {temperature}"
            )
        self.num_classes, self.hidden, self.temperature = int(num_classes), int(hidden), float(temperature)
        self.mlp = nn.Sequential(
            nn.Linear(4 * self.num_classes, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, 1),
        )
        self.head = BetaHead(output_bn, output_scale, output_bias, beta_range)

    def forward(self, x: Tensor, g_logits: Tensor, h_logits: Tensor) -> Tensor:
        for name, t in (("g_logits", g_logits), ("h_logits", h_logits)):
            if t.dim() != 2 or t.shape[1] != self.num_classes:
                raise ValueError(f"{name} must be [B, {self.num_classes}], got shape {tuple(t.shape)}")
        dtype = self.mlp[0].weight.dtype
        p_g = (g_logits.to(dtype) / self.temperature).softmax(dim=1)
        p_h = (h_logits.to(dtype) / self.temperature).softmax(dim=1)
        sorted_g = p_g.sort(dim=1, descending=True).values
        sorted_h = p_h.sort(dim=1, descending=True).values
        return self.head(self.mlp(torch.cat([p_g, p_h, sorted_g, sorted_h], dim=1)))

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "hidden": self.hidden,
            "temperature": self.temperature,
            **self.head.get_config(),
        }


#: Policy classes by name, for saving a policy's type next to its config.
POLICY_TYPES: dict[str, type[nn.Module]] = {"PolicyNet": PolicyNet, "LogitPolicy": LogitPolicy}


def policy_spec(policy: nn.Module) -> dict[str, Any]:
    """``{"type": class name, "config": get_config()}`` — everything needed to rebuild ``policy``."""
    name = type(policy).__name__
    if name not in POLICY_TYPES:
        raise ValueError(f"unknown policy type {name}; expected one of {', '.join(POLICY_TYPES)}")
    return {"type": name, "config": policy.get_config()}


def build_policy(spec: dict[str, Any], g: nn.Module, h: nn.Module) -> nn.Module:
    """Rebuild a policy from :func:`policy_spec` output (``PolicyNet`` gets ``g`` and ``h`` for its hooks)."""
    kind = spec.get("type")
    if kind not in POLICY_TYPES:
        raise ValueError(f"unknown policy type {kind!r}; expected one of {', '.join(POLICY_TYPES)}")
    config = dict(spec.get("config", {}))
    if kind == "PolicyNet":
        return PolicyNet(g, h, **config)
    return LogitPolicy(**config)
