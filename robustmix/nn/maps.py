"""Output maps: fixed transforms of a model's logits applied before mixing (the MixedNUTS form).

MixedNUTS (Bai, Zhou, Patel, Sojoudi) mixes ``(1 - w)·softmax(map_g(g(x))) + w·softmax(map_h(h(x)))``
with no training: the robust model's logits go through :class:`NonlinearMap`, which widens the gap
between its confident (robust) and unconfident (clean-but-wrong) predictions, and the accurate model
through :class:`HardMax` or :class:`TemperatureMap`. Maps hold no weights; they are saved as JSON
(:meth:`OutputMap.get_config`, rebuilt by :func:`map_from_config` from an allowlist).

Steep maps and hard maxima can mask gradients. Each map names a differentiable stand-in,
:meth:`OutputMap.surrogate`, that attacks take gradients through (the robust map is relaxed to a plain
layer norm; the hard max to a steep scaled layer norm), while the attack's success is judged on the
real map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "OutputMap",
    "TemperatureMap",
    "HardMax",
    "LayerNormMap",
    "NonlinearMap",
    "CLAMPS",
    "map_from_config",
    "map_config",
]

#: The clamp functions of :class:`NonlinearMap` (GELU is the MixedNUTS choice).
CLAMPS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "softplus": F.softplus,
    "identity": lambda u: u,
}
#: Where GELU stops decreasing: it is monotone increasing on ``[GELU_MONOTONE_FROM, inf)``.
GELU_MONOTONE_FROM = -0.7518


class OutputMap(nn.Module):
    """A fixed map ``[B, c]`` logits → ``[B, c]`` logits, saved as JSON (``type`` + ``get_config()``)."""

    #: The name a saved config uses for this map.
    map_type: str = ""

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def surrogate(self) -> nn.Module | None:
        """A differentiable stand-in for gradient-based attacks (``None``: no map, the raw logits)."""
        return self

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_logits(z: Tensor) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        raise ValueError(f"an output map expects logits [batch, classes], got {getattr(z, 'shape', type(z))}")


class TemperatureMap(OutputMap):
    """``z ↦ z / T``: temperature scaling (``T < 1`` sharpens, ``T > 1`` softens)."""

    map_type = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_positive("temperature", temperature)

    def forward(self, z: Tensor) -> Tensor:
        _check_logits(z)
        return z / self.temperature

    def get_config(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


def _layer_norm_top_k(z: Tensor, k: int | None) -> Tensor:
    """Logits centred by the mean and divided by the standard deviation (unbiased, ``sqrt(var + 1e-8)``, as
    in the MixedNUTS release, so its published parameters apply) of the ``k`` largest (all: None)."""
    top = z if k is None or k >= z.shape[1] else z.topk(k, dim=1).values
    mean = top.mean(dim=1, keepdim=True)
    var = top.var(dim=1, keepdim=True, unbiased=True)
    return (z - mean) / (var + 1e-8).sqrt()


def _check_k(k: int | None) -> int | None:
    if k is not None and (int(k) != k or k < 2):
        raise ValueError(f"k (the top-k classes of the layer norm) must be an integer >= 2 or None, got {k!r}")
    return None if k is None else int(k)


class LayerNormMap(OutputMap):
    """``z ↦ scale · LN_k(z)``: the logits layer-normalised over the top ``k`` classes and scaled.

    Order-preserving; used as the differentiable surrogate of :class:`HardMax` (large ``scale``) and of
    :class:`NonlinearMap`.
    """

    map_type = "layer_norm"

    def __init__(self, scale: float = 1.0, k: int | None = None) -> None:
        super().__init__()
        self.scale = _check_positive("scale", scale)
        self.k = _check_k(k)

    def forward(self, z: Tensor) -> Tensor:
        _check_logits(z)
        return self.scale * _layer_norm_top_k(z, self.k)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "k": self.k}


class HardMax(OutputMap):
    """g contributes the one-hot vector of its prediction: logits 0 for the argmax, ``-1e4`` elsewhere
    (``softmax`` of them is exactly one-hot in float32 and float64).

    It has no useful gradient; :meth:`surrogate` is ``LayerNormMap(surrogate_scale)`` (a steep, smooth
    approximation of the same one-hot vector).
    """

    map_type = "hard_max"
    _LOW = -1e4

    def __init__(self, surrogate_scale: float = 10.0) -> None:
        super().__init__()
        self.surrogate_scale = _check_positive("surrogate_scale", surrogate_scale)

    def forward(self, z: Tensor) -> Tensor:
        _check_logits(z)
        onehot = F.one_hot(z.argmax(dim=1), z.shape[1]).to(z.dtype)
        return (1 - onehot) * self._LOW + 0 * z  # keeps z's autograd graph (zero gradient), not an error

    def surrogate(self) -> nn.Module:
        return LayerNormMap(self.surrogate_scale)

    def get_config(self) -> dict[str, Any]:
        return {"surrogate_scale": self.surrogate_scale}


class NonlinearMap(OutputMap):
    """The MixedNUTS robust map ``M(z) = s · sign(u) · |u|^p`` with ``u = clamp(LN_k(z) + c)``.

    Args:
        s: scale (> 0); p: power (> 0); c: bias added after the layer norm (usually negative).
        k: the layer norm's mean and standard deviation are over the ``k`` largest logits (None: all).
        clamp: ``"gelu"`` (MixedNUTS), ``"relu"``, ``"softplus"`` or ``"identity"``.

    For every clamp but GELU the map preserves the order of the logits of one example; GELU preserves it
    among the entries with ``LN_k(z) + c >= -0.75`` (where GELU increases), which always includes the
    largest logit when ``c >= -0.75``.
    """

    map_type = "nonlinear"

    def __init__(self, s: float = 1.0, p: float = 1.0, c: float = 0.0, k: int | None = None,
                 clamp: str = "gelu") -> None:
        super().__init__()
        self.s = _check_positive("s", s)
        self.p = _check_positive("p", p)
        self.c = float(c)
        if not math.isfinite(self.c):
            raise ValueError(f"c must be finite, got {c!r}")
        self.k = _check_k(k)
        if clamp not in CLAMPS:
            raise ValueError(f"clamp must be one of {sorted(CLAMPS)}, got {clamp!r}")
        self.clamp = clamp

    def forward(self, z: Tensor) -> Tensor:
        _check_logits(z)
        u = CLAMPS[self.clamp](_layer_norm_top_k(z, self.k) + self.c)
        # |u|^p with a gradient that stays finite at u = 0 for p < 1.
        magnitude = u.abs().clamp_min(1e-12).pow(self.p)
        return self.s * torch.sign(u) * magnitude

    def surrogate(self) -> nn.Module:
        return LayerNormMap(1.0, self.k)

    def get_config(self) -> dict[str, Any]:
        return {"s": self.s, "p": self.p, "c": self.c, "k": self.k, "clamp": self.clamp}


_MAP_TYPES: dict[str, type[OutputMap]] = {
    cls.map_type: cls for cls in (TemperatureMap, HardMax, LayerNormMap, NonlinearMap)
}


def map_config(output_map: nn.Module | None) -> dict[str, Any] | None:
    """The JSON form of a map, ``{"type": ..., "config": {...}}`` (``None`` for no map)."""
    if output_map is None:
        return None
    if not isinstance(output_map, OutputMap) or type(output_map).map_type not in _MAP_TYPES:
        raise ConfigError(
            f"cannot save the output map {type(output_map).__name__}: only {sorted(_MAP_TYPES)} "
            "(robustmix.nn.maps) are saved in config.json"
        )
    return {"type": output_map.map_type, "config": output_map.get_config()}


def map_from_config(entry: Mapping[str, Any] | None) -> OutputMap | None:
    """The map a saved config describes; unknown types or keys are errors (nothing is imported)."""
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or set(entry) != {"type", "config"} or not isinstance(entry["config"], Mapping):
        raise ConfigError(f"an output map entry must be {{'type': ..., 'config': {{...}}}}, got {entry!r}")
    cls = _MAP_TYPES.get(entry["type"])
    if cls is None:
        raise ConfigError(f"unknown output map type {entry['type']!r}; known: {sorted(_MAP_TYPES)}")
    try:
        return cls(**entry["config"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config for output map {entry['type']!r}: {err}") from err
