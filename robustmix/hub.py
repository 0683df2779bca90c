"""Save, load and share :class:`~robustmix.smoothing.AdaptiveSmoothing` models (Hugging Face Hub layout).

A saved model is a directory (or Hub repository) with three files:

* ``config.json`` — g and h by registered architecture name + JSON kwargs (:mod:`robustmix.registry`),
  the policy by registered type + ``get_config()``, the mixture's settings (α, mode, norm, eps_c, space,
  the release-form options), β0 of eq. 9, dataset, threat model, metrics and versions;
* ``model.safetensors`` — one flat state dict with the prefixes ``g.``, ``h.`` and ``policy.``;
* ``README.md`` — a model card with YAML metadata (``library_name: robustmix``, tags, datasets, metrics).

Loading is safe by construction: the config is plain JSON checked against a fixed schema (unknown keys
are errors), names are looked up in registries (nothing is imported or executed because a config says
so), and weights are read only with safetensors — a pickle (``torch.load``/``.bin``/``.pt``) file is
recognised and refused, never unpickled. ``from_pretrained`` accepts a local directory, a Hub repo id
(resolved through the Hugging Face cache; ``HF_HUB_OFFLINE=1`` and ``local_files_only`` keep it offline),
or a name of :mod:`robustmix.zoo`. ``huggingface_hub`` is imported only when a repo id is downloaded or a
model is pushed.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import registry
from .smoothing import AdaptiveSmoothing

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "FORMAT_VERSION",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "build_config",
    "model_from_config",
    "load_weights",
    "safetensors_header",
    "model_card",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
PREFIXES = ("g", "h", "policy")
_MAX_CONFIG_BYTES = 1 << 20

# Config schema: key -> (accepted Python types, required). Anything else in a config is an error.
_NUMBER = (int, float)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "format_version": ((int,), True),
    "g": ((dict,), True),
    "h": ((dict,), True),
    "policy": ((dict, type(None)), False),
    "alpha": ((int, float, str, type(None)), False),
    "mode": ((str,), False),
    "norm": ((str,), False),
    "eps_c": (_NUMBER, False),
    "space": ((str,), False),
    "detach_R": ((bool,), False),
    "logit_scales": ((list,), False),
    "alpha_transform": ((str,), False),
    "alpha_range": ((list,), False),
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
#: Options of AdaptiveSmoothing that are not part of a saved model; from_pretrained accepts them.
_RUNTIME_OPTIONS = ("jacobian_method", "chunk_size", "validate")


# -- config ------------------------------------------------------------------------------------------
def _model_spec(model: nn.Module, given: Mapping[str, Any] | None, who: str) -> dict[str, Any]:
    spec = dict(given) if given is not None else registry.architecture_spec(model)
    if spec is None:
        raise ValueError(
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
        raise ValueError(f"config entry {who!r} must be an object with keys {sorted(_SPEC_KEYS)}")
    extra = set(spec) - _SPEC_KEYS
    if extra or "name" not in spec:
        raise ValueError(
            f"config entry {who!r} has keys {sorted(spec)}; allowed keys are {sorted(_SPEC_KEYS)} ('name' required)"
        )
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(f"config entry {who!r}: 'kwargs' must be an object")
    registry._factory(spec["name"])  # unknown names fail here, listing the registered ones


def _encode_alpha(alpha: float | Tensor | None) -> float | str | None:
    if alpha is None:
        return None
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise ValueError("a per-sample alpha tensor cannot be saved; set a scalar alpha before saving")
        alpha = float(alpha.item())
    return "inf" if math.isinf(alpha) else float(alpha)


def _check_metrics(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in metrics:
        if not isinstance(m, Mapping) or set(m) - _METRIC_KEYS or not {"name", "value"} <= set(m):
            raise ValueError(f"each metric must be {{'name', 'value', optional 'attack'}}, got {m!r}")
        if not isinstance(m["value"], _NUMBER) or isinstance(m["value"], bool) or not math.isfinite(m["value"]):
            raise ValueError(f"metric {m['name']!r} needs a finite number as value, got {m['value']!r}")
        out.append({"name": str(m["name"]), "value": float(m["value"]), "attack": m.get("attack")})
    return out


def build_config(
    model: AdaptiveSmoothing,
    g_architecture: Mapping[str, Any] | None = None,
    h_architecture: Mapping[str, Any] | None = None,
    beta0: float | None = None,
    dataset: str | None = None,
    threat_model: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ``config.json`` content describing ``model`` (see the module docstring)."""
    import robustmix

    policy = None
    if model.policy is not None:
        name = registry.policy_name(model.policy)
        policy = {"type": name, "config": model.policy.get_config()}
        registry._check_json_value(policy["config"], f"config of policy {name!r}")
    if threat_model is not None:
        threat_model = dict(threat_model)
        if set(threat_model) != _THREAT_KEYS:
            raise ValueError(f"threat_model must have exactly the keys {sorted(_THREAT_KEYS)}, got {sorted(threat_model)}")
    return {
        "format": "robustmix",
        "format_version": FORMAT_VERSION,
        "g": _model_spec(model.g, g_architecture, "g"),
        "h": _model_spec(model.h, h_architecture, "h"),
        "policy": policy,
        "alpha": _encode_alpha(model.alpha),
        "mode": model.mode,
        "norm": model.norm,
        "eps_c": model.eps_c,
        "space": model.space,
        "detach_R": bool(model.detach_R),
        "logit_scales": list(model.logit_scales),
        "alpha_transform": model.alpha_transform,
        "alpha_range": list(model.alpha_range),
        "beta0": None if beta0 is None else float(beta0),
        "dataset": dataset,
        "threat_model": threat_model,
        "metrics": _check_metrics(metrics),
        "versions": {"robustmix": getattr(robustmix, "__version__", "unknown"), "torch": torch.__version__},
    }


def _reject_constant(name: str) -> float:
    raise ValueError(f"config.json contains the non-JSON constant {name}; write infinity as the string \"inf\"")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path.parent}; is this a robustmix model directory?")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; not a robustmix config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def _validate_config(config: Mapping[str, Any]) -> None:
    unknown = sorted(set(config) - set(_SCHEMA))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed keys: {', '.join(sorted(_SCHEMA))}")
    for key, (types, required) in _SCHEMA.items():
        if key not in config:
            if required:
                raise ValueError(f"config is missing the required key {key!r}")
            continue
        value = config[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"config key {key!r} has the wrong type {type(value).__name__}")
    if config["format"] != "robustmix" or config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"unsupported model format {config['format']!r} version {config['format_version']!r}; "
            f"this robustmix reads 'robustmix' version {FORMAT_VERSION}"
        )
    _check_spec(config["g"], "g")
    _check_spec(config["h"], "h")
    policy = config.get("policy")
    if policy is not None and (set(policy) != _POLICY_KEYS or not isinstance(policy["config"], dict)):
        raise ValueError(f"config entry 'policy' must have exactly the keys {sorted(_POLICY_KEYS)}, got {sorted(policy)}")
    threat = config.get("threat_model")
    if threat is not None and set(threat) != _THREAT_KEYS:
        raise ValueError(f"config entry 'threat_model' must have exactly the keys {sorted(_THREAT_KEYS)}")
    _check_metrics(config.get("metrics", []))
    alpha = config.get("alpha")
    if isinstance(alpha, str) and alpha != "inf":
        raise ValueError(f"config 'alpha' must be a number or the string 'inf', got {alpha!r}")
    if (alpha is None) == (policy is None):
        raise ValueError("config must give exactly one of 'alpha' (fixed trade-off) and 'policy'")


def model_from_config(config: Mapping[str, Any], **runtime: Any) -> AdaptiveSmoothing:
    """Build an :class:`AdaptiveSmoothing` with random weights from a validated config."""
    _validate_config(config)
    bad = sorted(set(runtime) - set(_RUNTIME_OPTIONS))
    if bad:
        raise ValueError(f"unknown option(s) {bad}; from_pretrained accepts {', '.join(_RUNTIME_OPTIONS)}")

    def build(spec: Mapping[str, Any]) -> nn.Module:
        return registry.build_architecture(spec["name"], normalization=spec.get("normalization"), **spec.get("kwargs", {}))

    g, h = build(config["g"]), build(config["h"])
    policy = None
    if config.get("policy") is not None:
        policy = registry.build_policy(config["policy"]["type"], config["policy"]["config"], g, h)
    alpha = config.get("alpha")
    options = {k: config[k] for k in ("mode", "norm", "eps_c", "space", "detach_R", "alpha_transform") if k in config}
    for key in ("logit_scales", "alpha_range"):
        if key in config:
            options[key] = tuple(config[key])
    return AdaptiveSmoothing(
        g,
        h,
        alpha=math.inf if alpha == "inf" else alpha,
        policy=policy,
        **options,
        **runtime,
    )


# -- weights -----------------------------------------------------------------------------------------
def _state_tensors(model: AdaptiveSmoothing) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    parts = [("g", model.g), ("h", model.h)] + ([("policy", model.policy)] if model.policy is not None else [])
    for prefix, module in parts:
        for key, value in module.state_dict().items():
            if isinstance(value, nn.parameter.UninitializedParameter | nn.parameter.UninitializedBuffer):
                raise ValueError(
                    f"{prefix}.{key} is not initialised yet (a lazy layer); run one batch through the model first"
                )
            t = value.detach().cpu().contiguous()
            ident = t.untyped_storage().data_ptr()
            if ident in seen:  # safetensors refuses tensors sharing storage (tied weights, views, g is h)
                t = t.clone()
            seen.add(ident)
            tensors[f"{prefix}.{key}"] = t
    return tensors


_MAX_HEADER_BYTES = 100 << 20  # the limit safetensors itself enforces


def safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed header of a well-formed safetensors file, or ``None`` when ``path`` is not one.

    A safetensors file starts with an 8-byte little-endian header length ``n``, then ``n`` bytes of a JSON
    object mapping tensor names to ``{"dtype", "shape", "data_offsets"}`` (plus optional ``__metadata__``),
    then the tensor bytes. The file is accepted only when all of that parses and every tensor's offsets lie
    inside the file; nothing but JSON is ever decoded.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if not 2 <= n <= min(size - 8, _MAX_HEADER_BYTES):
            return None
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                return None
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            return None
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            return None
    return header


def _refuse_non_safetensors(path: Path) -> None:
    """Raise a clear error for a file that is not valid safetensors, naming pickles and zips as such."""
    with path.open("rb") as f:
        head = f.read(2)
    if head[:2] == b"PK":
        kind = "a zip archive (torch.save format, pickle inside)"
    elif head[:1] == b"\x80":
        kind = "a Python pickle"
    else:
        raise ValueError(
            f"{path} is not a valid safetensors file ({path.stat().st_size} bytes; its header does not parse: "
            "truncated or corrupt)"
        )
    raise ValueError(
        f"{path} is {kind}, not safetensors; robustmix never unpickles weights. Convert the checkpoint "
        "with `robustmix convert` (which reads it with torch.load(weights_only=True)) and load the result."
    )


def load_weights(model: AdaptiveSmoothing, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
    """Load ``model.safetensors`` into ``model`` after checking every key and shape (clear errors, no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} at {path}; robustmix reads weights only from safetensors files")
    if safetensors_header(path) is None:
        _refuse_non_safetensors(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt") from None
    parts: dict[str, nn.Module] = {"g": model.g, "h": model.h}
    if model.policy is not None:
        parts["policy"] = model.policy
    grouped: dict[str, dict[str, Tensor]] = {p: {} for p in parts}
    stray = []
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix in grouped and rest:
            grouped[prefix][rest] = value
        else:
            stray.append(key)
    problems = []
    if stray:
        problems.append(f"unexpected tensors {_short(stray)} (keys must start with {', '.join(p + '.' for p in parts)})")
    for prefix, module in parts.items():
        expected = module.state_dict()
        got = grouped[prefix]
        missing = [f"{prefix}.{k}" for k in expected if k not in got]
        unexpected = [f"{prefix}.{k}" for k in got if k not in expected]
        shapes = [
            f"{prefix}.{k}: file {tuple(got[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in got and not isinstance(v, nn.parameter.UninitializedParameter | nn.parameter.UninitializedBuffer)
            and tuple(got[k].shape) != tuple(v.shape)
        ]
        if missing:
            problems.append(f"missing tensors {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected tensors {_short(unexpected)}")
        if shapes:
            problems.append(f"wrongly shaped tensors {_short(shapes)}")
    if problems:
        raise ValueError(f"weights in {path} do not match the architecture in the config: " + "; ".join(problems))
    for prefix, module in parts.items():
        module.load_state_dict(grouped[prefix], strict=True)


def _short(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


# -- model card --------------------------------------------------------------------------------------
def _yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for JSON data (scalars are written as JSON, which YAML reads unchanged)."""
    pad = " " * indent
    if isinstance(value, Mapping):
        lines = []
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{k}:\n{_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for v in value:
            if isinstance(v, Mapping) and v:
                body = _yaml(v, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
        return "\n".join(lines)
    return pad + json.dumps(value)


def _metadata(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "library_name": "robustmix",
        "tags": ["robustmix", "adaptive-smoothing", "adversarial-robustness", "image-classification", "safetensors"],
    }
    dataset = config.get("dataset")
    if dataset:
        meta["datasets"] = [dataset]
    metrics = config.get("metrics") or []
    if metrics:
        meta["metrics"] = ["accuracy"]
    if metrics and dataset:
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"name": dataset, "type": dataset},
                        "metrics": [
                            {
                                "type": "accuracy",
                                "name": m["name"] if not m.get("attack") else f"{m['name']} ({m['attack']})",
                                "value": m["value"],
                            }
                            for m in metrics
                        ],
                    }
                ],
            }
        ]
    return meta


def model_card(config: Mapping[str, Any], name: str = "robustmix model") -> str:
    """README.md with YAML metadata (library_name, tags, datasets, metrics / model-index) and a summary."""
    mixing = "a neural-network policy (eq. 7)" if config.get("policy") else f"fixed α = {config.get('alpha')}"
    lines = [
        "---",
        _yaml(_metadata(config, name)),
        "---",
        "",
        f"# {name}",
        "",
        "Adaptive smoothing (Bai, Anderson, Sojoudi): the outputs of an accurate classifier g and a robust",
        f"classifier h are mixed per input (eq. 5) with {mixing}.",
        "",
        f"- g: `{config['g']['name']}` {json.dumps(config['g'].get('kwargs', {}))}",
        f"- h: `{config['h']['name']}` {json.dumps(config['h'].get('kwargs', {}))}",
        f"- mode: `{config.get('mode')}`, norm: `{config.get('norm')}`, space: `{config.get('space')}`",
    ]
    if config.get("threat_model"):
        tm = config["threat_model"]
        lines.append(f"- threat model: {tm['norm']}, ε = {tm['eps']}")
    metrics = config.get("metrics") or []
    if metrics:
        lines += ["", "| metric | value (%) | attack |", "|---|---|---|"]
        lines += [f"| {m['name']} | {m['value']:.2f} | {m.get('attack') or '-'} |" for m in metrics]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from robustmix.smoothing import AdaptiveSmoothing",
        "",
        f'model = AdaptiveSmoothing.from_pretrained("{name}")',
        "```",
        "",
        "Weights are stored with safetensors; the config names architectures from robustmix's registry.",
        "",
    ]
    return "\n".join(lines)


# -- public API --------------------------------------------------------------------------------------
def save_pretrained(
    model: AdaptiveSmoothing,
    save_directory: str | os.PathLike[str],
    g_architecture: Mapping[str, Any] | None = None,
    h_architecture: Mapping[str, Any] | None = None,
    beta0: float | None = None,
    dataset: str | None = None,
    threat_model: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
    card_name: str | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

    ``g_architecture``/``h_architecture`` (``{"name", "kwargs", "normalization"}``) are needed only for
    models not built by :func:`robustmix.registry.build_architecture`. ``metrics`` is a list of
    ``{"name", "value" (percent), "attack"}``; ``threat_model`` is ``{"norm", "eps"}``. Returns the directory.
    """
    from safetensors.torch import save_file

    if not isinstance(model, AdaptiveSmoothing):
        raise ValueError(f"save_pretrained expects an AdaptiveSmoothing model, got {type(model).__name__}")
    config = build_config(model, g_architecture, h_architecture, beta0, dataset, threat_model, metrics)
    tensors = _state_tensors(model)
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "robustmix"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (directory / CARD_NAME).write_text(model_card(config, card_name or directory.name), encoding="utf-8")
    return directory


_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")


def _could_be_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub model repo id ``org/name`` (robustmix models always have an
    owner); paths (``./x``, ``/x``, ``a/b/c``, ``C:\\x``) and bare names do not."""
    return _REPO_ID.fullmatch(name) is not None and ".." not in name and "--" not in name


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None, local_files_only: bool, token: str | None
) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError
    except ImportError:
        raise ImportError(
            f"{repo_id!r} is not a local directory, and downloading from the Hub needs huggingface_hub: "
            "pip install 'robustmix[hub]'"
        ) from None
    files = {}
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            files[filename] = Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=local_files_only,
                    token=token,
                    library_name="robustmix",
                )
            )
        except HFValidationError as err:
            raise ValueError(f"{repo_id!r} is neither a local directory nor a valid Hub repo id ({err})") from None
        except (EntryNotFoundError, FileNotFoundError) as err:
            where = "in the local Hugging Face cache (offline mode)" if local_files_only else "on the Hub"
            raise FileNotFoundError(
                f"could not find {filename} of {repo_id!r} (revision {revision or 'main'}) {where}: {err}. "
                "Download it once online, pass a local directory, or point cache_dir= at the right cache."
            ) from None
        except (HfHubHTTPError, OSError) as err:
            raise OSError(f"could not download {filename} of {repo_id!r}: {err}") from None
    if files[CONFIG_NAME].parent != files[WEIGHTS_NAME].parent:
        raise ValueError(f"{CONFIG_NAME} and {WEIGHTS_NAME} of {repo_id!r} resolved to different snapshots")
    return files[CONFIG_NAME].parent


def from_pretrained(
    name_or_path: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    token: str | None = None,
    device: str | torch.device = "cpu",
    **runtime: Any,
) -> AdaptiveSmoothing:
    """Load a model saved by :func:`save_pretrained`.

    ``name_or_path``: a local directory; a Hub repo id (``org/name``, fetched into / read from the Hugging
    Face cache at ``cache_dir`` for ``revision``; offline when ``local_files_only=True`` or the environment
    sets ``HF_HUB_OFFLINE=1``); or a name from :mod:`robustmix.zoo` (e.g. ``"cifar10-linf"``).
    ``runtime`` takes the non-saved options ``jacobian_method``, ``chunk_size``, ``validate``.
    The model is returned in eval mode on ``device``.
    """
    path = Path(name_or_path)
    if path.is_dir():
        directory = path
    else:
        from . import zoo

        name = str(name_or_path)
        if name in zoo.ZOO:
            return zoo.load(name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token, device=device, **runtime)
        if path.exists():
            raise ValueError(f"{path} is a file; pass the directory that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        if not _could_be_repo_id(name):
            raise FileNotFoundError(
                f"no local directory {name!r} (looked in {Path.cwd()}), and {name!r} is neither a zoo name "
                f"({', '.join(zoo.ZOO)}) nor a Hub repo id of the form 'org/name'; check the path for typos"
            )
        offline = bool(local_files_only) or _offline_env()
        directory = _download(name, revision, cache_dir, offline, token)
    config = _read_config(directory / CONFIG_NAME)
    model = model_from_config(config, **runtime)
    load_weights(model, directory / WEIGHTS_NAME, device=device)
    return model.to(device).eval()


def push_to_hub(
    model: AdaptiveSmoothing,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload robustmix model",
    create_pr: bool = False,
    **save_kwargs: Any,
) -> str:
    """Save ``model`` (see :func:`save_pretrained` for ``save_kwargs``) and upload the folder to ``repo_id``.

    Uses ``huggingface_hub.HfApi.create_repo(exist_ok=True)`` and ``HfApi.upload_folder``; returns the
    commit URL. The tests replace those two methods (the library boundary) to check the upload.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ImportError("push_to_hub needs huggingface_hub: pip install 'robustmix[hub]'") from None
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="robustmix-push-") as tmp:
        save_pretrained(model, tmp, card_name=save_kwargs.pop("card_name", repo_id), **save_kwargs)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
    return str(getattr(info, "commit_url", info))
