"""CROWN bounds from auto_LiRPA, for ``test_lirpa_reference.py``; runs in auto_LiRPA's own interpreter.

auto_LiRPA's release on PyPI (0.3) needs torch < 1.13, which cannot share robustmix's environment, so the
test writes the networks as JSON (weights as nested lists: no pickles), runs this script with that
interpreter, and reads the bounds back as JSON. Nothing here imports robustmix.

    python lirpa_reference.py REQUEST.json RESPONSE.json

A request is ``{"cases": [{"layers": [...], "input_shape": [...], "x": [...], "eps": e, "norm": "linf"|"l2"}]}``
with layers ``{"type": "linear", "weight", "bias"}``, ``{"type": "conv", "weight", "bias", "stride",
"padding"}``, ``{"type": "avgpool", "kernel"}``, ``{"type": "flatten"}`` or ``{"type": "relu"|"tanh"|"sigmoid"}``;
the response holds each case's ``lower`` and ``upper`` logit bounds (``method="CROWN"``, float32).
"""

from __future__ import annotations

import json
import sys

import torch
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def build(layers: list[dict]) -> nn.Sequential:
    modules: list[nn.Module] = []
    for spec in layers:
        kind = spec["type"]
        if kind == "linear":
            weight = torch.tensor(spec["weight"])
            layer = nn.Linear(weight.shape[1], weight.shape[0])
        elif kind == "conv":
            weight = torch.tensor(spec["weight"])
            layer = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], spec["stride"], spec["padding"])
        elif kind == "avgpool":
            modules.append(nn.AvgPool2d(spec["kernel"]))
            continue
        elif kind == "flatten":
            modules.append(nn.Flatten())
            continue
        else:
            modules.append(ACTIVATIONS[kind]())
            continue
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(torch.tensor(spec["bias"]))
        modules.append(layer)
    return nn.Sequential(*modules).eval()


def crown(case: dict) -> dict:
    net = build(case["layers"])
    x = torch.tensor(case["x"]).reshape(1, *case["input_shape"])
    bounded = BoundedModule(net, torch.zeros_like(x))
    norm = float("inf") if case["norm"] == "linf" else 2.0
    ball = BoundedTensor(x, PerturbationLpNorm(norm=norm, eps=case["eps"]))
    lower, upper = bounded.compute_bounds(x=(ball,), method="CROWN")
    return {"lower": lower[0].tolist(), "upper": upper[0].tolist()}


def main(request_path: str, response_path: str) -> None:
    with open(request_path) as f:
        cases = json.load(f)["cases"]
    with torch.no_grad():
        results = [crown(case) for case in cases]
    with open(response_path, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
