"""Building blocks of the networks: input normalisation inside the model, logit scaling, logit extraction,
and the residual blocks the architectures share.

**Normalisation.** Per-channel input normalisation is part of the model, so attacks and certificates live in
pixel space.

Attack radii (ε = 8/255 in l_inf, 0.5 in l_2, section 6.3) are defined on images in [0, 1]. Models are
usually trained on standardised inputs ``(x - mean) / std``; attacking such a model with [0, 1] images, or
attacking the standardised tensor with a pixel-space ε, silently changes the threat model (by a factor of
about 1/std ≈ 4 for CIFAR-10). :class:`Normalized` moves the standardisation inside the model: the wrapped
model takes pixels in [0, 1], and so do :class:`~robustmix.smoothing.AdaptiveSmoothing`, the attacks, and
R (eq. 5), whose input gradients are then taken with respect to pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Normalized",
    "Tempered",
    "ExtractLogits",
    "PreActBlock",
    "SqueezeExcite",
    "WideBlock",
    "WideStage",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: Per-channel statistics of the training sets (the values torchvision/RobustBench/timm configurations use).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(name: str, values: Sequence[float] | Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; give one value per input channel")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf: {t.tolist()}")
    return t


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a model that expects standardised input, taking pixels in [0, 1].

    Args:
        model: the network trained on standardised inputs (logits out).
        mean, std: one value per channel (e.g. :data:`CIFAR10_MEAN`, :data:`CIFAR10_STD`); ``std > 0``.

    The wrapped model is the submodule ``model`` (layer names gain the prefix ``model.``); ``mean`` and
    ``std`` are buffers of shape ``[1, C, 1, 1]`` that follow ``.to()`` and stay out of the state dict
    (a wrapped model saves and loads exactly the weights of ``model``, under the prefix ``model.``). The
    wrapper has no parameters of its own and forwards train/eval mode to ``model``.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        mean_t, std_t = _stats("mean", mean), _stats("std", std)
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if not (std_t > 0).all():
            raise ValueError(f"std must be positive in every channel, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1), persistent=False)

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` over the channel dimension 1 of a ``[B, C, H, W]`` batch."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected images [B, {self.channels}, H, W] in [0, 1], got shape {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"



class Tempered(nn.Module):
    """``model``'s logits multiplied by a fixed ``scale`` (an inverse temperature); the argmax is unchanged.

    Probability-space mixing (``space="prob"``) depends on how sharp each model's softmax is; the authors'
    later release tempers g and h before mixing. The wrapped model is the submodule ``model``, so its layer
    names gain the prefix ``model.``.
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.model = model
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class ExtractLogits(nn.Module):
    """``model(x)`` reduced to its logits tensor: ``out.logits`` (Hugging Face), ``out[key]`` (a dict) or
    ``out[0]`` (a tuple or list), for models whose forward returns more than logits.

    The mixture, the attacks and the certificates expect each model to return a logits tensor ``[B, c]``.
    The wrapped model is the submodule ``model`` (layer names gain the prefix ``model.``); the wrapper has
    no parameters of its own.
    """

    def __init__(self, model: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping) and self.key in out:
            logits = out[self.key]
        elif hasattr(out, self.key):
            logits = getattr(out, self.key)
        elif isinstance(out, (tuple, list)) and out:
            logits = out[0]
        else:
            raise ValueError(
                f"{type(self.model).__name__} returned a {type(out).__name__} without {self.key!r}; pass key= to "
                "name the entry that holds the logits"
            )
        if not isinstance(logits, Tensor):
            raise ValueError(f"the {self.key!r} entry of the model's output is a {type(logits).__name__}, not a tensor")
        return logits

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


# -- residual blocks ---------------------------------------------------------------------------------------
class PreActBlock(nn.Module):
    """Pre-activation basic block: ``a = ReLU(BN(x))``, ``conv3x3(ReLU(BN(conv3x3_stride(a)))) + s(a)``, where the
    shortcut ``s`` is the identity or, when the stride or width changes, a 1x1 convolution (``shortcut.0``).

    As in the authors' mixing networks (Fig. 1's policy and their later release), the identity shortcut
    carries the activated input ``a``, not ``x``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        projected = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)) if projected else None
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (act if self.shortcut is None else self.shortcut(act))


#: Parameter names of the two published WideResNet layouts, so that their checkpoints load as they are.
WIDE_LAYOUTS: dict[str, dict[str, str]] = {
    "trades": {"bn1": "bn1", "act1": "relu1", "conv1": "conv1", "bn2": "bn2", "act2": "relu2", "conv2": "conv2",
               "shortcut": "convShortcut", "stage": "layer"},
    "deepmind": {"bn1": "batchnorm_0", "act1": "relu_0", "conv1": "conv_0", "bn2": "batchnorm_1", "act2": "relu_1",
                 "conv2": "conv_1", "shortcut": "shortcut", "stage": "block"},
}


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x · sigmoid(fc2(ReLU(fc1(mean_hw(x)))))`` with 1x1 convolutions ``fc1``/``fc2``
    (``channels → squeeze → channels``, with biases): a per-channel gate computed from the global average."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class WideBlock(nn.Module):
    """Pre-activation basic block of a WideResNet: ``a = act(BN(x))``, ``conv3x3(act(BN(conv3x3_stride(a))))``
    (dropout between the two with ``drop_rate``), plus ``x`` — or, when the width changes, a 1x1 projection
    of ``a``.

    ``layout``: ``"trades"`` (the TRADES/RobustBench names ``bn1``, ``conv1``, ..., ``convShortcut``) or
    ``"deepmind"`` (DeepMind's ``batchnorm_0``, ``conv_0``, ..., ``shortcut``, whose strided convolution is
    padded on the right and bottom only). ``groups``: grouped 3x3 convolutions; ``se_ratio``: a
    :class:`SqueezeExcite` gate (``round(se_ratio · out_channels)`` squeeze channels, named ``se``) on the
    residual branch before the addition, as in the robust-architecture WideResNets (RA-WRN).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        drop_rate: float = 0.0,
        layout: str = "trades",
        groups: int = 1,
        se_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if layout not in WIDE_LAYOUTS:
            raise ValueError(f"unknown WideResNet layout {layout!r}; expected one of {', '.join(WIDE_LAYOUTS)}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide the block's widths {in_channels} and {out_channels}")
        self._names = names = WIDE_LAYOUTS[layout]
        self.stride, self.drop_rate = stride, drop_rate
        self.asymmetric = layout == "deepmind" and stride != 1
        setattr(self, names["bn1"], nn.BatchNorm2d(in_channels))
        setattr(self, names["act1"], activation())
        setattr(self, names["conv1"], nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=0 if self.asymmetric else 1, groups=groups,
            bias=False,
        ))
        setattr(self, names["bn2"], nn.BatchNorm2d(out_channels))
        setattr(self, names["act2"], activation())
        setattr(self, names["conv2"], nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=groups, bias=False))
        setattr(self, names["shortcut"], None if in_channels == out_channels else nn.Conv2d(
            in_channels, out_channels, 1, stride=stride, bias=False
        ))
        self.se = None if not se_ratio else SqueezeExcite(out_channels, int(round(se_ratio * out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        part = self._names
        act = getattr(self, part["act1"])(getattr(self, part["bn1"])(x))
        out = getattr(self, part["conv1"])(F.pad(act, (0, 1, 0, 1)) if self.asymmetric else act)
        out = getattr(self, part["act2"])(getattr(self, part["bn2"])(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = getattr(self, part["conv2"])(out)
        if self.se is not None:
            out = self.se(out)
        shortcut = getattr(self, part["shortcut"])
        return (x if shortcut is None else shortcut(act)) + out


class WideStage(nn.Module):
    """``blocks`` :class:`WideBlock` s in a row (the first one strided and widening), held as a Sequential
    under the layout's name (``layer`` for TRADES, ``block`` for DeepMind)."""

    def __init__(
        self,
        blocks: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        drop_rate: float = 0.0,
        layout: str = "trades",
        groups: int = 1,
        se_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if layout not in WIDE_LAYOUTS:
            raise ValueError(f"unknown WideResNet layout {layout!r}; expected one of {', '.join(WIDE_LAYOUTS)}")
        self._sequence = WIDE_LAYOUTS[layout]["stage"]
        setattr(self, self._sequence, nn.Sequential(*(
            WideBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, activation,
                      drop_rate, layout, groups, se_ratio)
            for i in range(blocks)
        )))

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, self._sequence)(x)
