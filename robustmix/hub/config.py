"""``config.json``: what a saved model is — g and h by registered architecture name + JSON kwargs, the policy by
registered type + ``get_config()``, the mixture's own settings, and metadata (β0 of eq. 9, dataset, threat
model, metrics, versions).

The config is plain JSON checked against a fixed schema before anything is built: unknown keys are errors,
names are looked up in :mod:`robustmix.registry` (nothing is imported or executed because a config says so).
The mixture class declares its own settings and their JSON types (``hub_settings_types``), so the hub does
not need to know them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import registry
from .._utils.version import __version__
from ..errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "build_config",
    "read_config",
    "validate_config",
    "build_modules",
]

CONFIG_NAME = "config.json"
FORMAT = "robustmix"
FORMAT_VERSION = 1
_MAX_CONFIG_BYTES = 1 << 20

_NUMBER = (int, float)
#: The hub's own keys: key -> (accepted Python types, required). The mixture's settings come on top.
ENVELOPE: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "format_version": ((int,), True),
    "g": ((dict,), True),
    "h": ((dict,), True),
    "policy": ((dict, type(None)), False),
    "beta0": ((int, float, type(None)), False),
    "dataset": ((str, type(None)), False),
    "threat_model": ((dict, type(None)), False),
    "metrics": ((list,), False),
    "versions": ((dict,), False),
}
_SPEC_KEYS = {"name", "kwargs", "normalization"}
_POLICY_KEYS = {"type", "config"}
_THREAT_KEYS = {"norm", "eps"}
_METRIC_KEYS = {"name", "value", "attack"}


def _model_spec(model: nn.Module, given: Mapping[str, Any] | None, who: str) -> dict[str, Any]:
    spec = dict(given) if given is not None else registry.architecture_spec(model)
    if spec is None:
        raise ConfigError(
            f"{who} was not built by robustmix.registry.build_architecture, so its architecture is unknown; "
            f"build it with build_architecture(name, **kwargs), tag it with registry.tag_architecture, or pass "
            f"{who}_architecture={{'name': ..., 'kwargs': {{...}}}}. Registered: {', '.join(registry.list_architectures())}"
        )
    spec.setdefault("kwargs", {})
    spec.setdefault("normalization", None)
    _check_spec(spec, who)
    return spec


def _check_spec(spec: Mapping[str, Any], who: str) -> None:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"config entry {who!r} must be an object with keys {sorted(_SPEC_KEYS)}")
    extra = set(spec) - _SPEC_KEYS
    if extra or "name" not in spec:
        raise ConfigError(
            f"config entry {who!r} has keys {sorted(spec)}; allowed keys are {sorted(_SPEC_KEYS)} ('name' required)"
        )
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ConfigError(f"config entry {who!r}: 'kwargs' must be an object")
    registry.architecture_factory(spec["name"])  # unknown names fail here, listing the registered ones


def _check_metrics(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in metrics:
        if not isinstance(m, Mapping) or set(m) - _METRIC_KEYS or not {"name", "value"} <= set(m):
            raise ConfigError(f"each metric must be {{'name', 'value', optional 'attack'}}, got {m!r}")
        if not isinstance(m["value"], _NUMBER) or isinstance(m["value"], bool) or not math.isfinite(m["value"]):
            raise ConfigError(f"metric {m['name']!r} needs a finite number as value, got {m['value']!r}")
        out.append({"name": str(m["name"]), "value": float(m["value"]), "attack": m.get("attack")})
    return out


def build_config(
    model: Any,
    g_architecture: Mapping[str, Any] | None = None,
    h_architecture: Mapping[str, Any] | None = None,
    beta0: float | None = None,
    dataset: str | None = None,
    threat_model: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ``config.json`` content describing ``model`` (a mixture with ``g``, ``h``, ``policy`` and
    ``hub_settings()``)."""
    policy = None
    if model.policy is not None:
        name = registry.policy_name(model.policy)
        policy = {"type": name, "config": model.policy.get_config()}
        registry.check_json_value(policy["config"], f"config of policy {name!r}")
    if threat_model is not None:
        threat_model = dict(threat_model)
        if set(threat_model) != _THREAT_KEYS:
            raise ConfigError(f"threat_model must have exactly the keys {sorted(_THREAT_KEYS)}, got {sorted(threat_model)}")
    settings = model.hub_settings()
    registry.check_json_value(settings, "the mixture's settings")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "g": _model_spec(model.g, g_architecture, "g"),
        "h": _model_spec(model.h, h_architecture, "h"),
        "policy": policy,
        **settings,
        "beta0": None if beta0 is None else float(beta0),
        "dataset": dataset,
        "threat_model": threat_model,
        "metrics": _check_metrics(metrics),
        "versions": {"robustmix": __version__, "torch": torch.__version__},
    }


def _reject_constant(name: str) -> float:
    raise ConfigError(f"config.json contains the non-JSON constant {name}; write infinity as the string \"inf\"")


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (at most 1 MiB, no NaN/Infinity constants); not yet validated."""
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path.parent}; is this a robustmix model directory?")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; not a robustmix config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def validate_config(config: Mapping[str, Any], settings_types: Mapping[str, tuple[type, ...]]) -> None:
    """Check ``config`` against the hub's schema plus the mixture's ``settings_types`` (key -> JSON types)."""
    schema = {**ENVELOPE, **{k: (types, False) for k, types in settings_types.items()}}
    unknown = sorted(set(config) - set(schema))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; allowed keys: {', '.join(sorted(schema))}")
    for key, (types, required) in schema.items():
        if key not in config:
            if required:
                raise ConfigError(f"config is missing the required key {key!r}")
            continue
        value = config[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"config key {key!r} has the wrong type {type(value).__name__}")
    if config["format"] != FORMAT or config["format_version"] != FORMAT_VERSION:
        raise ConfigError(
            f"unsupported model format {config['format']!r} version {config['format_version']!r}; "
            f"this robustmix reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    _check_spec(config["g"], "g")
    _check_spec(config["h"], "h")
    policy = config.get("policy")
    if policy is not None and (set(policy) != _POLICY_KEYS or not isinstance(policy["config"], dict)):
        raise ConfigError(f"config entry 'policy' must have exactly the keys {sorted(_POLICY_KEYS)}, got {sorted(policy)}")
    threat = config.get("threat_model")
    if threat is not None and set(threat) != _THREAT_KEYS:
        raise ConfigError(f"config entry 'threat_model' must have exactly the keys {sorted(_THREAT_KEYS)}")
    _check_metrics(config.get("metrics", []))


def build_modules(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """g, h and the policy of a validated config, with random weights."""

    def build(spec: Mapping[str, Any]) -> nn.Module:
        return registry.build_architecture(spec["name"], normalization=spec.get("normalization"), **spec.get("kwargs", {}))

    g, h = build(config["g"]), build(config["h"])
    policy = None
    if config.get("policy") is not None:
        policy = registry.build_policy(config["policy"]["type"], config["policy"]["config"], g, h)
    return g, h, policy
