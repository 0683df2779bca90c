"""The weights file: one flat safetensors state dict with the prefixes ``g.``, ``h.`` and ``policy.``.

A file is accepted as safetensors only when its header parses (:func:`safetensors_header`); a pickle or a
zip (``torch.save``) in its place is named and refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["WEIGHTS_NAME", "PREFIXES", "safetensors_header", "state_tensors", "read_safetensors", "load_weights"]

WEIGHTS_NAME = "model.safetensors"
PREFIXES = ("g", "h", "policy")


def _parts(model: Any) -> dict[str, nn.Module]:
    parts: dict[str, nn.Module] = {"g": model.g, "h": model.h}
    if model.policy is not None:
        parts["policy"] = model.policy
    return parts


def state_tensors(model: Any) -> dict[str, Tensor]:
    """The tensors to save: g's, h's and the policy's state dicts under their prefixes (shared storage copied)."""
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for prefix, module in _parts(model).items():
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


def read_safetensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The tensors of a safetensors file, after checking that it is one (pickles and zips are refused by name,
    never unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    if safetensors_header(path) is None:
        _refuse_non_safetensors(path)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt") from None


def load_weights(model: Any, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
    """Load ``model.safetensors`` into ``model`` after checking every key and shape (clear errors, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} at {path}; robustmix reads weights only from safetensors files")
    tensors = read_safetensors(path, device)
    parts = _parts(model)
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
        raise ConfigError(f"weights in {path} do not match the architecture in the config: " + "; ".join(problems))
    for prefix, module in parts.items():
        module.load_state_dict(grouped[prefix], strict=True)


def _short(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


