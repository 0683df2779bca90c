"""Finding the intermediate layers the policy reads (Fig. 1) in an arbitrary image classifier.

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
:class:`~robustmix.policy.PolicyNet` explicitly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustmix.policy import PolicyNet

__all__ = ["default_taps", "auto_policy"]

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


def auto_policy(g: nn.Module, h: nn.Module, **policy_kwargs: Any) -> PolicyNet:
    """A Fig. 1 :class:`~robustmix.policy.PolicyNet` reading :func:`default_taps` of ``g`` and ``h``.

    ``policy_kwargs`` (``width``, ``depth``, ``hidden``, ``output_bn``, ``beta_range``, ...) go to PolicyNet.
    """
    return PolicyNet(g, h, default_taps(g), default_taps(h), **policy_kwargs)
