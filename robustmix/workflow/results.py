"""The JSON record every command run writes (``--out``): versions, model, data, threat model, suite, the
numbers, timings and the per-example results; and a RobustBench-style summary line."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._utils.version import __version__

__all__ = ["run_record", "write_json", "summary_line"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def run_record(command: str, **fields: Any) -> dict[str, Any]:
    """``{"command", "versions", **fields}`` as JSON data (inf as the string "inf")."""
    versions = {"robustmix": __version__, "torch": torch.__version__, "python": platform.python_version()}
    return _jsonable({"command": command, "versions": versions, **fields})


def write_json(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``path`` (parents created), strict JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def summary_line(model: str, dataset: str, norm: str, eps: float, clean: float, robust: float, n: int) -> str:
    """One line in the style RobustBench prints: model, threat model, clean and robust accuracy."""
    return (f"{model} | {dataset} | {norm} eps={eps:g} | clean accuracy: {100 * clean:.2f}% | "
            f"robust accuracy: {100 * robust:.2f}% | n={n}")
