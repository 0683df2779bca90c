"""The model card: ``README.md`` with YAML metadata (``library_name: robustmix``, tags, datasets, metrics /
model-index, as the Hugging Face Hub reads them) and a summary of the mixture."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CARD_NAME", "model_card"]

CARD_NAME = "README.md"


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
        "from robustmix import AdaptiveSmoothing",
        "",
        f'model = AdaptiveSmoothing.from_pretrained("{name}")',
        "```",
        "",
        "Weights are stored with safetensors; the config names architectures from robustmix's registry.",
        "",
    ]
    return "\n".join(lines)


