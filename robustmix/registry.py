"""One registry of architectures and policies: configs name g, h and the policy by a registered name plus JSON.

A saved model's ``config.json`` never names an importable path; :func:`build_architecture` and
:func:`build_policy` look names up here and call what was registered under them. Nothing from a config is
imported or executed, so a config can only choose among the factories the running program registered.

Architectures and policies are registered where they are defined (:mod:`robustmix.nn.architectures`,
:mod:`robustmix.nn.policies`, both loaded by ``import robustmix``): ``"digits_cnn"``, ``"cifar_resnet18"``,
``"torchvision_resnet18"``, ``"wide_resnet"``, ``"bit_resnetv2"``, ``"dm_wide_resnet"``, ``"timm"``,
``"torchvision"``; ``"PolicyNet"``, ``"LogitPolicy"``, ``"MixingNetPolicy"``. :func:`register_architecture` and
:func:`register_policy` add your own.

Models built here remember how they were built (:func:`architecture_spec`), so
:meth:`~robustmix.smoothing.AdaptiveSmoothing.save_pretrained` can write their names into the config; the
families registered with :func:`register_spec_inference` (timm, torchvision) are recognised without that.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .errors import ConfigError
from .nn.layers import Normalized

__all__ = [
    "register_architecture",
    "build_architecture",
    "architecture_factory",
    "list_architectures",
    "architecture_spec",
    "tag_architecture",
    "tag_if_json",
    "register_spec_inference",
    "register_policy",
    "build_policy",
    "list_policies",
    "policy_name",
    "check_json_value",
]

ArchitectureFactory = Callable[..., nn.Module]
PolicyFactory = Callable[..., nn.Module]
#: ``model -> (name, kwargs)`` for models of a family built without robustmix, or None
SpecInference = Callable[[nn.Module], "tuple[str, dict[str, Any]] | None"]

_ARCHITECTURES: dict[str, ArchitectureFactory] = {}
_INFERENCES: list[SpecInference] = []
_POLICIES: dict[str, PolicyFactory] = {}
#: registered policy class -> its name, so saving finds the name whatever the class is called
_POLICY_NAMES: dict[type, str] = {}
_SPEC_ATTR = "robustmix_architecture"


# -- architectures ---------------------------------------------------------------------------------------
def register_architecture(name: str, factory: ArchitectureFactory, overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> nn.Module`` under ``name`` (a non-empty string without ``/`` or ``:``).

    Re-registering an existing name needs ``overwrite=True``, so a library cannot silently replace one.
    """
    if not isinstance(name, str) or not name or any(ch in name for ch in "/:\\ "):
        raise ConfigError(f"architecture names must be non-empty strings without '/', ':', '\\' or spaces, got {name!r}")
    if not callable(factory):
        raise ConfigError(f"the factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _ARCHITECTURES and not overwrite and _ARCHITECTURES[name] is not factory:
        raise ConfigError(f"architecture {name!r} is already registered; pass overwrite=True to replace it")
    _ARCHITECTURES[name] = factory


def register_spec_inference(infer: SpecInference) -> None:
    """Teach :func:`architecture_spec` a family of models built without robustmix (timm, torchvision):
    ``infer(model)`` returns ``(registered name, JSON kwargs)`` when it recognises ``model``, else None."""
    if infer not in _INFERENCES:
        _INFERENCES.append(infer)


def list_architectures() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_ARCHITECTURES)


def architecture_factory(name: object) -> ArchitectureFactory:
    """The factory registered as ``name``; a :class:`ConfigError` listing the registered names otherwise."""
    if not isinstance(name, str) or name not in _ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {name!r}; registered architectures: {', '.join(list_architectures())}. "
            "Register your own with robustmix.registry.register_architecture(name, factory) before loading."
        )
    return _ARCHITECTURES[name]


def check_json_value(value: object, where: str) -> None:
    """Only JSON data (numbers, strings, booleans, None, lists, string-keyed dicts) may reach a factory."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json_value(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where} has a non-string key {k!r}")
            check_json_value(v, f"{where}.{k}")
        return
    raise ConfigError(f"{where} must be JSON data (numbers, strings, lists, dicts), got {type(value).__name__}")


def _check_kwargs(name: str, factory: ArchitectureFactory, kwargs: Mapping[str, Any]) -> None:
    check_json_value(dict(kwargs), f"kwargs of {name!r}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        accepted = ", ".join(p.name for p in params) or "none"
        raise ConfigError(f"bad kwargs {sorted(kwargs)} for architecture {name!r} ({err}); it accepts: {accepted}") from None


def tag_architecture(
    model: nn.Module, name: str, kwargs: Mapping[str, Any] | None = None, normalization: Mapping[str, Any] | None = None
) -> nn.Module:
    """Record on ``model`` that it is ``build_architecture(name, **kwargs)`` (for models built by hand)."""
    architecture_factory(name)
    kwargs = dict(kwargs or {})
    check_json_value(kwargs, f"kwargs of {name!r}")
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
    of the families taught with :func:`register_spec_inference` (timm and torchvision classifiers), possibly
    wrapped in :class:`~robustmix.nn.layers.Normalized`.
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
    for infer in _INFERENCES:
        found = infer(model)
        if found is not None:
            return {"name": found[0], "kwargs": found[1], "normalization": None}
    return None


def build_architecture(name: str, normalization: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` with JSON ``kwargs`` (random weights).

    ``normalization={"mean": [...], "std": [...]}`` wraps the model in :class:`Normalized`. Unknown names
    and kwargs the factory does not accept raise a ``ValueError`` listing what is available.
    """
    factory = architecture_factory(name)
    _check_kwargs(name, factory, kwargs)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the factory of {name!r} returned {type(model).__name__}, not an nn.Module")
    if normalization is not None:
        extra = set(normalization) - {"mean", "std"}
        if extra or set(normalization) != {"mean", "std"}:
            raise ConfigError(f"normalization must have exactly the keys 'mean' and 'std', got {sorted(normalization)}")
        check_json_value(dict(normalization), "normalization")
        model = Normalized(model, normalization["mean"], normalization["std"])
    return tag_architecture(model, name, kwargs, normalization)


# -- policies ------------------------------------------------------------------------------------------
def register_policy(
    name: str, factory: PolicyFactory, overwrite: bool = False, policy_class: type[nn.Module] | None = None
) -> None:
    """Register a policy class (or ``factory(g, h, **config)`` building instances of ``policy_class``) as ``name``.

    Saving a model whose policy is an instance of the registered class writes ``{"type": name, "config":
    policy.get_config()}``, so the class must define ``get_config()`` (checked here). Classes and factories
    with a ``g`` parameter receive g and h when the policy is rebuilt.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"policy names must be Python identifiers, got {name!r}")
    if name in _POLICIES and not overwrite and _POLICIES[name] is not factory:
        raise ConfigError(f"policy {name!r} is already registered; pass overwrite=True to replace it")
    cls = factory if isinstance(factory, type) else policy_class
    if cls is None:
        raise ConfigError(
            f"register_policy({name!r}, factory): a factory function needs policy_class=, the class of the "
            "policies it builds, so that saved models can name their policy"
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"a policy must be an nn.Module subclass, got {cls!r}")
    if not callable(getattr(cls, "get_config", None)):
        raise ConfigError(
            f"policy class {cls.__name__} has no get_config() method: saving needs it to record the constructor "
            "arguments (other than g and h) as JSON"
        )
    _POLICIES[name] = factory
    _POLICY_NAMES[cls] = name


def list_policies() -> list[str]:
    """The registered policy names, sorted."""
    return sorted(_POLICIES)


def policy_name(policy: nn.Module) -> str:
    """The name ``policy``'s class is registered under; a :class:`ConfigError` when it is not registered."""
    name = _POLICY_NAMES.get(type(policy))
    if name is None:
        raise ConfigError(
            f"policy class {type(policy).__name__} is not registered; registered policies: {', '.join(list_policies())}. "
            "Register it with robustmix.registry.register_policy(name, cls)."
        )
    if not callable(getattr(policy, "get_config", None)):
        raise ConfigError(f"policy {name} has no get_config() method, so its constructor arguments cannot be saved")
    return name


def build_policy(name: str, config: Mapping[str, Any], g: nn.Module, h: nn.Module) -> nn.Module:
    """Build the policy registered as ``name`` from its JSON ``config`` (g and h given where it taps them)."""
    if not isinstance(name, str) or name not in _POLICIES:
        raise ConfigError(f"unknown policy type {name!r}; registered policies: {', '.join(list_policies())}")
    factory = _POLICIES[name]
    config = dict(config)
    check_json_value(config, f"config of policy {name!r}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_models = "g" in params and "h" in params
    if params:
        _check_kwargs(name, factory, {**config, **({"g": None, "h": None} if takes_models else {})})
    policy = factory(g, h, **config) if takes_models else factory(**config)
    if not isinstance(policy, nn.Module):
        raise ConfigError(f"the factory of policy {name!r} returned {type(policy).__name__}, not an nn.Module")
    return policy


