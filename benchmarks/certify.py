"""How tight and how fast the certificates are: certified radius / attack radius, and seconds per image.

For each setting, on the same models and inputs in one run, with ``propagation="interval"`` (the old
bounds: interval arithmetic and the theorems' conditions), ``"linear"`` (the new ones: linear bound
propagation for the constants, and linear bounds on the mixture's margin) and, on the MLPs, ``"linear"``
with input splitting (``split_budget``: the ball covered by up to that many l_inf boxes, for l_2 each cut
to the ball), prints

- the median over the inputs of ``certified radius / attack radius``, where the attack radius is the
  smallest ε at which PGD (200 steps, 8 random restarts, on the margin against every rival) flips the
  prediction, found by bisection on ε (12 halvings); the certified radius is sound, so a ratio above 1
  would be a bug (counted and printed);
- the seconds per image of ``certified_radius`` (against every other class), compilation included.

Settings: (a) small smooth MLPs (softplus g, tanh h, two hidden layers of 16) with 2-D and 10-D inputs, 3
classes, jacobian mode α = 1 (Theorem 2); (b) the demo's digits CNN (8x8 digits, 10 classes, ELU) for g and
h, jacobian mode α = 1. The models are randomly initialised: the bounds do not depend on training, and
the attack radius is measured on the same models. Targets (issue 16): median ratio ≥ 0.5 on (a);
Theorem 2 on (b) ≤ 1 s per image.

Usage: ``python benchmarks/certify.py [--mlp-inputs 40] [--cnn-inputs 4]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn

from robustmix import AdaptiveSmoothing
from robustmix.certify import certified_radius
from robustmix.demo.data import load_digits_split
from robustmix.nn.architectures import digits_cnn

F64 = torch.float64
#: Boxes the input-splitting check may use per radius tried (``certified_radius(split_budget=...)``).
SPLIT_BUDGET = 1024


def smooth_mlp(d: int, c: int, act: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, c)).to(F64).eval()


def min_margin(model: AdaptiveSmoothing, x: torch.Tensor, label: int, eps: float, norm: str) -> float:
    """Smallest ``out_label - max_{j != label} out_j`` PGD finds in the ball (8 restarts, 200 steps)."""
    gen = torch.Generator().manual_seed(0)
    restarts = 8
    start = (torch.rand(restarts, *x.shape[1:], generator=gen, dtype=x.dtype) * 2 - 1) * eps
    start[0] = 0
    if norm == "l2":
        flat = start.flatten(1)
        start = (flat * (eps / flat.norm(dim=1, keepdim=True).clamp_min(eps))).reshape(start.shape)
    delta = start.requires_grad_(True)
    step = 2.5 * eps / 200
    best = math.inf
    for _ in range(201):
        out = model(x + delta)
        rival = out.clone()
        rival[:, label] = -math.inf
        margin = out[:, label] - rival.max(1).values
        best = min(best, float(margin.detach().min()))
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                delta -= step * grad.sign()
                delta.clamp_(-eps, eps)
            else:
                g = grad.flatten(1)
                delta -= step * (g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape(delta.shape)
                flat = delta.flatten(1)
                delta *= (eps / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0).reshape(-1, *[1] * (x.dim() - 1))
    return best


def attack_radius(model: AdaptiveSmoothing, x: torch.Tensor, label: int, norm: str, hi: float = 4.0) -> float:
    """Smallest ε (bisection, 12 halvings) at which PGD flips the prediction; ``hi`` doubled until it does."""
    while min_margin(model, x, label, hi, norm) > 0:
        hi *= 2
        if hi > 1e3:
            return math.inf
    lo = 0.0
    for _ in range(12):
        mid = (lo + hi) / 2
        if min_margin(model, x, label, mid, norm) > 0:
            lo = mid
        else:
            hi = mid
    return hi


#: The certificates compared: the old bounds, the new ones, and the new ones with input splitting.
CONFIGS = {
    "interval": {"propagation": "interval"},
    "linear": {"propagation": "linear"},
    f"linear + splitting ({SPLIT_BUDGET} boxes)": {"propagation": "linear", "split_budget": SPLIT_BUDGET},
}


def measure(name: str, model: AdaptiveSmoothing, xs: torch.Tensor, norm: str, configs: dict[str, dict]) -> dict:
    rows = {}
    attack = []
    for x in xs:
        x = x[None]
        label = int(model(x).argmax())
        attack.append(attack_radius(model, x, label, norm))
    for config, options in configs.items():
        ratios, seconds = [], []
        for x, r_attack in zip(xs, attack, strict=True):
            x = x[None]
            label = int(model(x).argmax())
            start = time.perf_counter()
            res = certified_radius(model, x, label, **options)
            seconds.append(time.perf_counter() - start)
            ratios.append(res.radius / r_attack)
        rows[config] = {
            "median_ratio": statistics.median(ratios),
            "ratio_above_1": sum(r > 1 for r in ratios),
            "seconds_per_image": statistics.mean(seconds),
        }
        row = rows[config]
        print(
            f"{name} ({norm}, {len(xs)} inputs), {config}: median certified / attack radius "
            f"{row['median_ratio']:.3f}; s/image {row['seconds_per_image']:.2f}; ratios above 1: {row['ratio_above_1']}",
            flush=True,
        )
    return {"setting": name, "norm": norm, "inputs": len(xs), **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp-inputs", type=int, default=40)
    parser.add_argument("--cnn-inputs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    results = []
    for d in (2, 10):
        g, h = smooth_mlp(d, 3, nn.Softplus, seed=d), smooth_mlp(d, 3, nn.Tanh, seed=d + 100)
        xs = torch.randn(args.mlp_inputs, d, generator=torch.Generator().manual_seed(d), dtype=F64)
        for norm in ("linf", "l2"):
            model = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", norm=norm)
            results.append(measure(f"smooth MLP d={d}", model, xs, norm, CONFIGS))
    torch.manual_seed(0)
    g, h = digits_cnn().to(F64).eval(), digits_cnn().to(F64).eval()
    xs = load_digits_split().x_test[: args.cnn_inputs].to(F64)
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", norm="linf")
    results.append(measure("digits CNN (Theorem 2)", model, xs, "linf", dict(list(CONFIGS.items())[:2])))
    print("targets: median ratio >= 0.5 on the smooth MLPs; digits CNN <= 1 s per image")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
