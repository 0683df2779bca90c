"""The intermediate features a policy reads (Fig. 1): capturing them with forward hooks (:class:`FeatureTaps`),
and finding which layers to tap in an arbitrary image classifier (:func:`default_taps`).

Fig. 1 feeds the policy the outputs of the first two residual stages of each ResNet-18 (``layer1`` and
``layer2``, the two feature maps the authors' code returns next to the logits). :func:`default_taps`
generalises that choice: it returns the names (as in ``model.named_modules()``) of the outputs of the first
two stages of a network, found by these rules, in order:

1. a model with timm's ``feature_info``: the first two feature levels with a reduction of at least 4
   (the stages after the stem);
2. otherwise, walking down from the model: the first two children that are containers holding a
   convolution (ResNet ``layer1``/``layer2``, WideResNet ``block1``/``block2``); a level with exactly one
   such child (a wrapper such as :class:`~robustmix.adapters.Normalized`, or a ``features`` trunk) is
   entered;
3. at a level of plain layers: the first two pooling layers (VGG-style trunks: the outputs of the first
   two stages).

When none applies, a ``ValueError`` lists the model's layer names, so that they can be given to
:class:`~robustmix.nn.policies.PolicyNet` explicitly.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["FeatureTaps", "default_taps"]

_POOLS = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _is_container(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _from_feature_info(info: Any, count: int) -> list[str] | None:
    entries = info.get_dicts() if hasattr(info, "get_dicts") else info
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, dict) and "module" in e for e in entries):
        return None
    staged = [e["module"] for e in entries if e.get("reduction", 0) >= 4]
    names = staged if len(staged) >= count else [e["module"] for e in entries]
    return names[:count] if len(names) >= count else None


def _search(module: nn.Module, count: int) -> list[str] | None:
    info = getattr(module, "feature_info", None)
    if info is not None:
        found = _from_feature_info(info, count)
        if found is not None:
            return found
    children = list(module.named_children())
    stages = [(n, c) for n, c in children if _is_container(c) and _has_conv(c)]
    if len(stages) >= count:
        return [n for n, _ in stages[:count]]
    if len(stages) == 1:
        name, child = stages[0]
        inner = _search(child, count)
        return None if inner is None else [f"{name}.{n}" for n in inner]
    pools = [n for n, c in children if isinstance(c, _POOLS)]
    return pools[:count] if len(pools) >= count else None


def default_taps(model: nn.Module, count: int = 2) -> list[str]:
    """Names of the layers whose outputs the policy taps in ``model`` (Fig. 1: the first two stages).

    Args:
        model: the classifier (``g`` or ``h``), possibly wrapped (``Normalized``, ``Tempered``).
        count: how many stages to tap (Fig. 1 taps two).

    Returns names valid for ``PolicyNet(g, h, g_layers=..., h_layers=...)``. Raises ``ValueError`` listing
    the available layer names when no stage structure is found.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    found = _search(model, count)
    if found is None:
        listing = ", ".join(n for n, _ in model.named_modules() if n)
        raise ValueError(
            f"could not find {count} feature stages in {type(model).__name__}; pass layer names to PolicyNet "
            f"explicitly, choosing from: {listing}"
        )
    return found


class FeatureTaps:
    """Forward hooks on named layers of ``g`` and ``h`` that keep each layer's latest output for a policy.

    ``taps``: ``(model, layer names)`` pairs, in the order the features are returned. The mixture runs g and h
    once per forward; the hooks capture the features then, and :meth:`features` hands them to the policy
    (consuming them). When none were captured for the batch, the models are run on it here. A model whose
    graph the mixture does not keep (neither x nor its parameters need gradients) gives detached
    features, so no backward pass enters its freed graph. The hooks hold the taps weakly: a policy that is
    garbage-collected stops capturing.
    """

    def __init__(self, taps: Sequence[tuple[str, nn.Module, Sequence[str]]]) -> None:
        self._models = tuple(model for _, model, _ in taps)
        self._keys: list[tuple[int, str]] = []
        self._captured: dict[tuple[int, str], Tensor] = {}
        self._handles: list[Any] = []
        ref = weakref.ref(self)
        for index, (who, model, names) in enumerate(taps):
            for name, module in zip(names, _resolve(model, names, who), strict=True):
                key = (index, name)
                self._keys.append(key)
                self._handles.append(module.register_forward_hook(_Capture(ref, key)))

    def store(self, key: tuple[int, str], output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = next((o for o in output if isinstance(o, Tensor)), None)
        if isinstance(output, Tensor):
            self._captured[key] = output

    @property
    def hooked(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Remove the hooks; afterwards no features can be read."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    def features(self, x: Tensor) -> list[Tensor]:
        """The tapped features for the batch ``x``, in the order of the taps (see the class docstring)."""
        if not self._handles:
            raise RuntimeError("the policy's hooks were removed; build a new policy to use it again")
        fresh = all(k in self._captured and self._captured[k].shape[0] == x.shape[0] for k in self._keys)
        if not fresh:
            self._captured.clear()
            for model in self._models:
                model(x)
        feats = [self._captured[k] for k in self._keys]
        self._captured.clear()
        keep = [x.requires_grad or any(p.requires_grad for p in m.parameters()) for m in self._models]
        return [f if keep[index] else f.detach() for (index, _), f in zip(self._keys, feats, strict=True)]


class _Capture:
    """Forward hook storing a module's output in the taps (held weakly, so g/h do not keep them alive)."""

    def __init__(self, taps_ref: weakref.ref, key: tuple[int, str]) -> None:
        self.taps_ref = taps_ref
        self.key = key

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        taps = self.taps_ref()
        if taps is not None:
            taps.store(self.key, output)


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
