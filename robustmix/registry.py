"""Architecture registry: configs name the base models g and h by a registered name plus JSON kwargs.

A saved model's ``config.json`` never names an importable path; :func:`build_architecture` looks the
name up in this registry and calls the factory registered under it. Nothing from a config is imported
or executed, so a config can only choose among the factories the running program registered.

Pre-registered (the heavy imports happen only when a factory is called):

* ``"digits_cnn"`` — the demo's 3-conv CNN for 8x8 digits (:func:`robustmix.demo_models.digits_cnn`);
* ``"torchvision_resnet18"`` — ``torchvision.models.resnet18(weights=None, num_classes=...)``;
* ``"cifar_resnet18"`` — the same network with the usual CIFAR stem (3x3 stride-1 first conv, no max-pool);
* ``"wide_resnet"`` — the TRADES/RobustBench WideResNet of :mod:`robustmix.adapters` (WRN-34-10 with
  ``sub_block1=True`` loads TRADES' ``Zhang2019Theoretically`` checkpoint);
* ``"bit_resnetv2"`` / ``"dm_wide_resnet"`` — the base models of the authors' later release
  (:mod:`robustmix.release`).

Policies (eq. 7, Fig. 1) are registered the same way, by class name: ``"PolicyNet"`` and ``"LogitPolicy"``
from :mod:`robustmix.policy` and ``"MixingNetPolicy"`` from :mod:`robustmix.release` (imported when first
built); :func:`register_policy` adds others.

Models built here remember how they were built (:func:`architecture_spec`), so
:meth:`~robustmix.smoothing.AdaptiveSmoothing.save_pretrained` can write their names into the config.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapters.normalize import Normalized

__all__ = [
    "register_architecture",
    "build_architecture",
    "list_architectures",
    "architecture_spec",
    "tag_architecture",
    "tag_if_json",
    "Normalized",
    "register_policy",
    "build_policy",
    "list_policies",
    "policy_name",
]

ArchitectureFactory = Callable[..., nn.Module]

_ARCHITECTURES: dict[str, ArchitectureFactory] = {}
_SPEC_ATTR = "robustmix_architecture"


def register_architecture(name: str, factory: ArchitectureFactory, overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> nn.Module`` under ``name`` (a non-empty string without ``/`` or ``:``).

    Re-registering an existing name needs ``overwrite=True``, so a library cannot silently replace one.
    """
    if not isinstance(name, str) or not name or any(ch in name for ch in "/:\\ "):
        raise ValueError(f"architecture names must be non-empty strings without '/', ':', '\\' or spaces, got {name!r}")
    if not callable(factory):
        raise ValueError(f"the factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _ARCHITECTURES and not overwrite and _ARCHITECTURES[name] is not factory:
        raise ValueError(f"architecture {name!r} is already registered; pass overwrite=True to replace it")
    _ARCHITECTURES[name] = factory


def list_architectures() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_ARCHITECTURES)


def _factory(name: object) -> ArchitectureFactory:
    if not isinstance(name, str) or name not in _ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {name!r}; registered architectures: {', '.join(list_architectures())}. "
            "Register your own with robustmix.registry.register_architecture(name, factory) before loading."
        )
    return _ARCHITECTURES[name]


def _check_json_value(value: object, where: str) -> None:
    """Only JSON data (numbers, strings, booleans, None, lists, string-keyed dicts) may reach a factory."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_value(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}")
            _check_json_value(v, f"{where}.{k}")
        return
    raise ValueError(f"{where} must be JSON data (numbers, strings, lists, dicts), got {type(value).__name__}")


def _check_kwargs(name: str, factory: ArchitectureFactory, kwargs: Mapping[str, Any]) -> None:
    _check_json_value(dict(kwargs), f"kwargs of {name!r}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        accepted = ", ".join(p.name for p in params) or "none"
        raise ValueError(f"bad kwargs {sorted(kwargs)} for architecture {name!r} ({err}); it accepts: {accepted}") from None


def tag_architecture(
    model: nn.Module, name: str, kwargs: Mapping[str, Any] | None = None, normalization: Mapping[str, Any] | None = None
) -> nn.Module:
    """Record on ``model`` that it is ``build_architecture(name, **kwargs)`` (for models built by hand)."""
    _factory(name)
    kwargs = dict(kwargs or {})
    _check_json_value(kwargs, f"kwargs of {name!r}")
    spec = {"name": name, "kwargs": kwargs, "normalization": None if normalization is None else dict(normalization)}
    object.__setattr__(model, _SPEC_ATTR, spec)
    return model


def tag_if_json(
    model: nn.Module, name: str, kwargs: Mapping[str, Any], normalization: Mapping[str, Any] | None = None
) -> nn.Module:
    """:func:`tag_architecture` when ``kwargs`` are JSON data; otherwise ``model`` untagged (it then cannot be
    saved by name, and ``save_pretrained`` says so)."""
    try:
        return tag_architecture(model, name, kwargs, normalization)
    except ValueError:
        return model


def architecture_spec(model: nn.Module) -> dict[str, Any] | None:
    """``{"name", "kwargs", "normalization"}`` describing how to rebuild ``model``, or None when unknown.

    Known are models built by :func:`build_architecture` (or tagged with :func:`tag_architecture`), and models
    of the common families built without robustmix: ``timm.create_model`` classifiers (their
    ``pretrained_cfg`` names the architecture; ``num_classes`` and ``in_chans`` are read off the model), and
    torchvision classification models (``torchvision.models.resnet18(num_classes=...)`` and the like) — each
    recognised only when a fresh build from the inferred spec has exactly the model's layers and shapes —
    possibly wrapped in :class:`Normalized`.
    """
    spec = getattr(model, _SPEC_ATTR, None)
    if spec is not None:
        return {**spec, "kwargs": dict(spec["kwargs"])}
    if isinstance(model, Normalized):
        inner = architecture_spec(model.model)
        if inner is None or inner["normalization"] is not None:
            return None
        stats = {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}
        return {**inner, "normalization": stats}
    for infer in (_infer_timm, _infer_torchvision):
        found = infer(model)
        if found is not None:
            return {"name": found[0], "kwargs": found[1], "normalization": None}
    return None


def _same_structure(model: nn.Module, candidate: nn.Module) -> bool:
    """Same module tree (types and hyper-parameters, as ``repr`` shows them) and the same tensor shapes."""
    if repr(candidate) != repr(model):
        return False
    ours, theirs = model.state_dict(), candidate.state_dict()
    return ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours)


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if conv is None else int(conv.in_channels)


def _infer_timm(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    if not type(model).__module__.startswith("timm."):
        return None
    import timm

    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(arch, str) or not timm.is_model(arch) or not isinstance(num_classes, int):
        return None
    kwargs: dict[str, Any] = {"model_name": arch, "num_classes": num_classes}
    channels = _first_conv_channels(model)
    if channels is not None and channels != 3:
        kwargs["in_chans"] = channels
    with torch.device("meta"):
        candidate = timm.create_model(arch, pretrained=False, **{k: v for k, v in kwargs.items() if k != "model_name"})
    return ("timm", kwargs) if _same_structure(model, candidate) else None


def _infer_torchvision(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    module = type(model).__module__
    if not module.startswith("torchvision.models."):
        return None
    import torchvision

    biases = [v for k, v in model.state_dict().items() if k.endswith("bias") and v.dim() == 1]
    if not biases:
        return None
    num_classes = int(biases[-1].shape[0])  # the classifier comes last in every torchvision classifier
    matches = []
    for name in torchvision.models.list_models(module=torchvision.models):
        builder = torchvision.models.get_model_builder(name)
        if builder.__module__ != module:
            continue
        try:
            with torch.device("meta"):
                candidate = builder(weights=None, num_classes=num_classes)
        except (TypeError, ValueError):
            continue
        if _same_structure(model, candidate):
            matches.append(name)
    if len(matches) != 1:
        return None
    return "torchvision", {"model_name": matches[0], "num_classes": num_classes}


def build_architecture(name: str, normalization: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` with JSON ``kwargs`` (random weights).

    ``normalization={"mean": [...], "std": [...]}`` wraps the model in :class:`Normalized`. Unknown names
    and kwargs the factory does not accept raise a ``ValueError`` listing what is available.
    """
    factory = _factory(name)
    _check_kwargs(name, factory, kwargs)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"the factory of {name!r} returned {type(model).__name__}, not an nn.Module")
    if normalization is not None:
        extra = set(normalization) - {"mean", "std"}
        if extra or set(normalization) != {"mean", "std"}:
            raise ValueError(f"normalization must have exactly the keys 'mean' and 'std', got {sorted(normalization)}")
        _check_json_value(dict(normalization), "normalization")
        model = Normalized(model, normalization["mean"], normalization["std"])
    return tag_architecture(model, name, kwargs, normalization)


# -- pre-registered architectures --------------------------------------------------------------------
def _digits_cnn(num_classes: int = 10, channels: Sequence[int] = (16, 32, 64)) -> nn.Module:
    from .demo_models import digits_cnn

    return digits_cnn(num_classes=num_classes, channels=tuple(int(c) for c in channels))


def _timm(model_name: str, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, ...)``: any timm classifier, by its registered name."""
    import timm

    if not isinstance(model_name, str) or not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}; list the choices with timm.list_models()")
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _torchvision(model_name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(model_name, weights=None, ...)``: a torchvision classifier by name."""
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if model_name not in available:
        raise ValueError(f"unknown torchvision classification model {model_name!r}; expected one of {', '.join(available)}")
    return torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)


def _torchvision_resnet18(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


def _cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 with the CIFAR stem: a 3x3 stride-1 first conv and no max-pool (32x32 inputs)."""
    model = _torchvision_resnet18(num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _bit_resnetv2(depth: str = "r152", width: int = 2, num_classes: int = 10, input_size: int | None = 128) -> nn.Module:
    from .release import bit_resnetv2

    return bit_resnetv2(depth=depth, width=width, num_classes=num_classes, input_size=input_size)


def _dm_wide_resnet(
    num_classes: int = 10,
    depth: int = 70,
    width: int = 16,
    activation: str = "silu",
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
    std: Sequence[float] = (0.2471, 0.2435, 0.2616),
) -> nn.Module:
    from .release import dm_wide_resnet

    return dm_wide_resnet(num_classes=num_classes, depth=depth, width=width, activation=activation, mean=mean, std=std)


def _wide_resnet(
    depth: int = 28,
    widen_factor: int = 10,
    num_classes: int = 10,
    drop_rate: float = 0.0,
    sub_block1: bool = False,
    bias_last: bool = True,
) -> nn.Module:
    from robustmix.adapters.torchvision import WideResNet

    return WideResNet(
        depth=depth, widen_factor=widen_factor, num_classes=num_classes, drop_rate=drop_rate,
        sub_block1=sub_block1, bias_last=bias_last,
    )


register_architecture("digits_cnn", _digits_cnn)
register_architecture("wide_resnet", _wide_resnet)
register_architecture("bit_resnetv2", _bit_resnetv2)
register_architecture("dm_wide_resnet", _dm_wide_resnet)
register_architecture("torchvision_resnet18", _torchvision_resnet18)
register_architecture("cifar_resnet18", _cifar_resnet18)
register_architecture("timm", _timm)
register_architecture("torchvision", _torchvision)


# -- policies ----------------------------------------------------------------------------------------
#: name -> (factory(g, h, **config) -> policy, the callable whose signature the config must fit)
PolicyFactory = Callable[..., nn.Module]
_POLICIES: dict[str, Callable[[], tuple[PolicyFactory, Callable[..., Any]]]] = {}
#: registered class -> its name, so saving finds the name whatever the class is called
_POLICY_NAMES: dict[type, str] = {}


def register_policy(
    name: str, factory: PolicyFactory, overwrite: bool = False, policy_class: type[nn.Module] | None = None
) -> None:
    """Register a policy class (or ``factory(g, h, **config)`` building instances of ``policy_class``) as ``name``.

    Saving a model whose policy is an instance of the registered class writes ``{"type": name, "config":
    policy.get_config()}``, so the class must define ``get_config()`` (checked here). Classes and factories
    with a ``g`` parameter receive g and h when the policy is rebuilt.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"policy names must be Python identifiers, got {name!r}")
    if name in _POLICIES and not overwrite:
        raise ValueError(f"policy {name!r} is already registered; pass overwrite=True to replace it")
    cls = factory if isinstance(factory, type) else policy_class
    if cls is None:
        raise ValueError(
            f"register_policy({name!r}, factory): a factory function needs policy_class=, the class of the "
            "policies it builds, so that saved models can name their policy"
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"a policy must be an nn.Module subclass, got {cls!r}")
    if not callable(getattr(cls, "get_config", None)):
        raise ValueError(
            f"policy class {cls.__name__} has no get_config() method: saving needs it to record the constructor "
            "arguments (other than g and h) as JSON"
        )
    _POLICIES[name] = lambda: (factory, factory)
    _POLICY_NAMES[cls] = name


def list_policies() -> list[str]:
    """The registered policy names, sorted."""
    return sorted(_POLICIES)


def policy_name(policy: nn.Module) -> str:
    """The name ``policy``'s class is registered under; a ``ValueError`` when it is not registered."""
    name = _POLICY_NAMES.get(type(policy))
    if name is None and type(policy).__name__ in _BUILTIN_POLICIES and type(policy).__module__.startswith("robustmix."):
        name = type(policy).__name__  # a built-in class, registered lazily by name
    if name is None:
        raise ValueError(
            f"policy class {type(policy).__name__} is not registered; registered policies: {', '.join(list_policies())}. "
            "Register it with robustmix.registry.register_policy(name, cls)."
        )
    if not callable(getattr(policy, "get_config", None)):
        raise ValueError(f"policy {name} has no get_config() method, so its constructor arguments cannot be saved")
    return name


def build_policy(name: str, config: Mapping[str, Any], g: nn.Module, h: nn.Module) -> nn.Module:
    """Build the policy registered as ``name`` from its JSON ``config`` (g and h given where it taps them)."""
    if not isinstance(name, str) or name not in _POLICIES:
        raise ValueError(f"unknown policy type {name!r}; registered policies: {', '.join(list_policies())}")
    factory, target = _POLICIES[name]()
    config = dict(config)
    _check_json_value(config, f"config of policy {name!r}")
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    takes_models = "g" in params and "h" in params
    if params:
        _check_kwargs(name, target, {**config, **({"g": None, "h": None} if takes_models else {})})
    policy = factory(g, h, **config) if takes_models else factory(**config)
    if not isinstance(policy, nn.Module):
        raise ValueError(f"the factory of policy {name!r} returned {type(policy).__name__}, not an nn.Module")
    return policy


def _lazy_policy(class_name: str, module: str = "policy") -> Callable[[], tuple[PolicyFactory, Callable[..., Any]]]:
    def load() -> tuple[PolicyFactory, Callable[..., Any]]:
        from . import policy, release

        cls = getattr({"policy": policy, "release": release}[module], class_name)
        return cls, cls

    return load


_BUILTIN_POLICIES = {"PolicyNet": "policy", "LogitPolicy": "policy", "MixingNetPolicy": "release"}
for _name, _module in _BUILTIN_POLICIES.items():
    _POLICIES[_name] = _lazy_policy(_name, _module)
