"""Neural-network policies β_θ(x) for the adaptive mixture, α = exp(β) (eq. 7, Fig. 1, section 5.2), and the
mixing network of the authors' code (their original checkpoints and their later public release).

:class:`PolicyNet` follows Fig. 1: it taps intermediate features of ``g`` and ``h`` with forward hooks
(captured during the single forward pass of each model that :class:`~robustmix.smoothing.AdaptiveSmoothing`
already makes), passes each through a conv branch, concatenates them, and maps the result with a small
conv stack, global pooling and a linear layer to one number β per input. :class:`LogitPolicy` is the
fallback for models without convolutional features: it reads only the two models' outputs.
:class:`MixingNetPolicy` is the authors' mixing network (pre-activation residual stages on two tapped
stages of each model), whose output γ the mixture turns into the weight on h with
``alpha_transform="sigmoid"``.

Both policies own only their own parameters: ``g`` and ``h`` are never registered as submodules, so
they appear neither in ``policy.parameters()`` nor in ``policy.state_dict()``, and an optimiser built
from the policy's parameters can never change them. Both expose ``get_config()``, the JSON-serialisable
constructor arguments other than ``g`` and ``h``: ``PolicyNet(g, h, **policy.get_config())`` rebuilds one.
All three are registered in :mod:`robustmix.registry` under their class names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_policy
from .layers import PreActBlock
from .taps import FeatureTaps, default_taps

__all__ = ["BETA_CLAMP", "BetaHead", "PolicyNet", "LogitPolicy", "MixingNet", "MixingNetPolicy", "auto_policy"]

#: β is clamped to this range before α = exp(β) (section 6.3: "cropped to [-14, 14]").
BETA_CLAMP = (-14.0, 14.0)


class BetaHead(nn.Module):
    """The policy's output layer: a scalar pre-activation ``z`` -> β (eq. 7, before the clamp).

    ``β = scale · BN(z) + bias`` (``output_bn`` adds a 1-d batch norm without its own affine, as in the
    authors' code; ``bn_momentum`` is its running-statistics momentum); with ``beta_range=(lo, hi)`` the result is squashed into that interval,
    ``β = lo + (hi - lo) · sigmoid(scale · BN(z) + bias)``, restricting α = exp(β) to ``[e^lo, e^hi]``.
    The output is clamped to [-14, 14] as the wrapper does (section 6.3).
    """

    def __init__(
        self,
        output_bn: bool = False,
        output_scale: float = 1.0,
        output_bias: float = 0.0,
        beta_range: Sequence[float] | None = None,
        bn_momentum: float = 0.1,
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
        self.bn = nn.BatchNorm1d(1, affine=False, momentum=float(bn_momentum)) if output_bn else None
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
        self.g_layers = list(g_layers) if not isinstance(g_layers, str) else g_layers
        self.h_layers = list(h_layers) if not isinstance(h_layers, str) else h_layers
        self.width, self.depth, self.hidden = int(width), int(depth), int(hidden)
        # g and h stay out of parameters(), state_dict(), .to() and .train()/.eval(): only the taps hold them.
        self._taps = FeatureTaps([("g", g, self.g_layers), ("h", h, self.h_layers)])
        n_taps = len(self.g_layers) + len(self.h_layers)
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
    def remove_hooks(self) -> None:
        """Detach the policy from g and h; afterwards it can no longer read their features."""
        self._taps.remove()

    @property
    def hooked(self) -> bool:
        return self._taps.hooked

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:
        """β ``[B]`` for the batch ``x`` (eq. 7); ``g_logits``/``h_logits`` are accepted for the wrapper's
        call signature and not used (the features carry more information)."""
        maps = [_as_map(f) for f in self._taps.features(x)]
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


# -- the authors' mixing network ------------------------------------------------------------------------
class MixingNet(nn.Module):
    """The authors' mixing network: stride-2 pre-activation residual stages on the concatenated first tapped
    maps, the concatenated second maps added after the first stage (through a 1x1 convolution, or as they
    are when ``fuse_channels`` is None), global average pooling and a bias-free linear layer to one number.

    Args:
        stages: per stage, the ``(in_channels, out_channels)`` of its :class:`~robustmix.nn.layers.PreActBlock` s;
            the first block of every stage has stride 2.
        fuse_channels: ``(in, out)`` of the 1x1 convolution on the second maps, or ``None``.
    """

    def __init__(self, stages: Sequence[Sequence[Sequence[int]]], fuse_channels: Sequence[int] | None) -> None:
        super().__init__()
        if len(stages) < 1 or any(len(stage) < 1 for stage in stages):
            raise ValueError("the mixing network needs at least one stage with at least one block")
        self.stages = [[(int(cin), int(cout)) for cin, cout in stage] for stage in stages]
        self.fuse_channels = None if fuse_channels is None else (int(fuse_channels[0]), int(fuse_channels[1]))
        self.layers = nn.ModuleList(
            nn.Sequential(*(PreActBlock(cin, cout, 2 if i == 0 else 1) for i, (cin, cout) in enumerate(stage)))
            for stage in self.stages
        )
        self.conv1x1 = None if self.fuse_channels is None else nn.Conv2d(*self.fuse_channels, 1, bias=False)
        self.linear = nn.Linear(self.stages[-1][-1][1], 1, bias=False)

    @staticmethod
    def shapes_from_state_dict(state: Mapping[str, Tensor]) -> tuple[list[list[tuple[int, int]]], tuple[int, int] | None]:
        """``(stages, fuse_channels)`` read off the weights' names and shapes of a mixing network."""
        blocks: dict[int, dict[int, tuple[int, int]]] = {}
        for key, value in state.items():
            match = re.fullmatch(r"layers\.(\d+)\.(\d+)\.conv1\.weight", key)
            if match:
                blocks.setdefault(int(match[1]), {})[int(match[2])] = (int(value.shape[1]), int(value.shape[0]))
        if not blocks or "linear.weight" not in state:
            raise ValueError(
                "not a mixing-network state dict: expected keys 'layers.<i>.<j>.conv1.weight' and "
                f"'linear.weight', got {sorted(state)[:8]}..."
            )
        stages = [[blocks[i][j] for j in sorted(blocks[i])] for i in sorted(blocks)]
        fuse = None
        if "conv1x1.weight" in state:
            w = state["conv1x1.weight"]
            fuse = (int(w.shape[1]), int(w.shape[0]))
        return stages, fuse

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        """``z`` ``[B, 1]`` from the concatenated first-stage maps and the concatenated second-stage maps."""
        out = self.layers[0](first)
        out = out + (second if self.conv1x1 is None else self.conv1x1(second))
        for layer in self.layers[1:]:
            out = layer(out)
        return self.linear(out.mean(dim=(2, 3)))


def _release_shapes(in_channels: Sequence[int], widths: Sequence[int]) -> tuple[list[list[tuple[int, int]]], tuple[int, int]]:
    """The later release's layout: three stages of two blocks, and a 1x1 fuse of the (twice as wide) second maps."""
    if len(in_channels) != 2 or len(widths) != 3:
        raise ValueError("the release layout needs two in_channels (of g's and h's first taps) and three widths")
    planes = [int(sum(in_channels)), *(int(w) for w in widths)]
    stages = [[(planes[k], planes[k + 1]), (planes[k + 1], planes[k + 1])] for k in range(3)]
    return stages, (2 * planes[0], planes[1])


class MixingNetPolicy(MixingNet):
    """The authors' mixing network as a policy: it reads two tapped stages of ``g`` and of ``h`` and returns
    ``γ = gamma_scale · BN(z) + gamma_bias`` (:class:`BetaHead` with an output batch norm, clamped to [-14, 14]).

    Used with ``AdaptiveSmoothing(..., alpha_transform="sigmoid", alpha_range=(low, high))``, the weight on h
    is ``low + (high - low) · sigmoid(γ)``: the form of their original code and of their later release.

    Args:
        g, h: the base models (hooked, not registered as submodules).
        g_layers, h_layers: the two tapped layers of each model (first and second stage outputs).
        stages, fuse_channels: the network's shapes (see :class:`MixingNet`); when ``stages`` is None they
            follow the later release's layout from ``in_channels`` (channels of g's and h's first taps; the
            second taps have twice as many) and ``widths`` (the three stages).
        gamma_scale, gamma_bias: the fixed affine map after the output batch norm.
        bn_momentum: running-statistics momentum of that batch norm (0.01 in the original code).
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        g_layers: Sequence[str] = ("body.block1", "body.block2"),
        h_layers: Sequence[str] = ("layer.0", "layer.1"),
        in_channels: Sequence[int] = (512, 256),
        widths: Sequence[int] = (512, 768, 1024),
        gamma_scale: float = 1.0,
        gamma_bias: float = 0.0,
        stages: Sequence[Sequence[Sequence[int]]] | None = None,
        fuse_channels: Sequence[int] | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        if stages is None:
            stages, fuse_channels = _release_shapes(in_channels, widths)
        super().__init__(stages, fuse_channels)
        if isinstance(g_layers, str) or isinstance(h_layers, str) or len(g_layers) != 2 or len(h_layers) != 2:
            raise ValueError(f"the mixing network reads two layers of each model, got {g_layers!r}, {h_layers!r}")
        self.g_layers, self.h_layers = list(g_layers), list(h_layers)
        self.head = BetaHead(output_bn=True, output_scale=gamma_scale, output_bias=gamma_bias, bn_momentum=bn_momentum)
        self._taps = FeatureTaps([("g", g, self.g_layers), ("h", h, self.h_layers)])

    def remove_hooks(self) -> None:
        """Detach the policy from g and h."""
        self._taps.remove()

    def forward(self, x: Tensor, g_logits: Tensor | None = None, h_logits: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """γ ``[B]`` for the batch ``x`` (the logits are accepted for the wrapper's call signature, unused)."""
        g1, g2, h1, h2 = self._taps.features(x)
        dtype = self.linear.weight.dtype
        z = super().forward(torch.cat([g1, h1], dim=1).to(dtype), torch.cat([g2, h2], dim=1).to(dtype))
        return self.head(z)

    def get_config(self) -> dict[str, Any]:
        return {
            "g_layers": self.g_layers,
            "h_layers": self.h_layers,
            "stages": [[list(block) for block in stage] for stage in self.stages],
            "fuse_channels": None if self.fuse_channels is None else list(self.fuse_channels),
            "gamma_scale": self.head.output_scale,
            "gamma_bias": self.head.output_bias,
            "bn_momentum": self.head.bn.momentum,
        }


def auto_policy(g: nn.Module, h: nn.Module, **policy_kwargs: Any) -> PolicyNet:
    """A Fig. 1 :class:`PolicyNet` reading :func:`~robustmix.nn.taps.default_taps` of ``g`` and ``h``.

    ``policy_kwargs`` (``width``, ``depth``, ``hidden``, ``output_bn``, ``beta_range``, ...) go to PolicyNet.
    """
    return PolicyNet(g, h, default_taps(g), default_taps(h), **policy_kwargs)


register_policy("PolicyNet", PolicyNet)
register_policy("LogitPolicy", LogitPolicy)
register_policy("MixingNetPolicy", MixingNetPolicy)
