"""Our linear bounds against auto_LiRPA's CROWN on the same networks (issue 16, item 4).

auto_LiRPA's PyPI release (0.3) needs torch < 1.13 and Python <= 3.10, so it runs in its own interpreter
(``lirpa_reference.py``): set ``ROBUSTMIX_LIRPA_PYTHON`` to it (tests/optional/README.md has the recipe).
auto_LiRPA 0.3 bounds ReLU, tanh and sigmoid only (not ELU, softplus or GELU), so those are compared.

The tolerance: our value bounds may be looser than CROWN's by at most ``REL_TOL`` of CROWN's interval width
plus ``ABS_TOL`` (auto_LiRPA computes in float32). Our intermediate intervals come from forward linear bounds
intersected with intervals, CROWN's from a backward pass per layer, and our smooth-activation lines are
chords shifted by the interpolation error rather than tangents, so neither side dominates everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from robustmix.certify.bounds import compile_network

PYTHON = os.environ.get("ROBUSTMIX_LIRPA_PYTHON")
REFERENCE = Path(__file__).with_name("lirpa_reference.py")
REL_TOL = 0.05
ABS_TOL = 1e-5


def _reference_available() -> str | None:
    if not PYTHON:
        return "set ROBUSTMIX_LIRPA_PYTHON to an interpreter with auto_LiRPA (tests/optional/README.md)"
    probe = subprocess.run([PYTHON, "-c", "import auto_LiRPA"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"auto_LiRPA does not import in {PYTHON}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


pytestmark = pytest.mark.skipif(_reference_available() is not None, reason=str(_reference_available()))


def _mlp(d: int, act: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    act_cls = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]
    return nn.Sequential(nn.Linear(d, 32), act_cls(), nn.Linear(32, 32), act_cls(), nn.Linear(32, 5)).eval()


def _cnn(act: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    act_cls = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, 1, 1), act_cls(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 16), act_cls(),
        nn.Linear(16, 10),
    ).eval()


def _spec(net: nn.Sequential) -> list[dict]:
    layers = []
    for m in net:
        if isinstance(m, nn.Linear):
            layers.append({"type": "linear", "weight": m.weight.tolist(), "bias": m.bias.tolist()})
        elif isinstance(m, nn.Conv2d):
            layers.append({"type": "conv", "weight": m.weight.tolist(), "bias": m.bias.tolist(),
                           "stride": m.stride[0], "padding": m.padding[0]})
        elif isinstance(m, nn.AvgPool2d):
            layers.append({"type": "avgpool", "kernel": m.kernel_size})
        elif isinstance(m, nn.Flatten):
            layers.append({"type": "flatten"})
        else:
            layers.append({"type": type(m).__name__.lower()})
    return layers


def _cases() -> list[tuple[str, nn.Sequential, tuple[int, ...], torch.Tensor, float, str]]:
    cases = []
    for act in ("relu", "tanh", "sigmoid"):
        for seed in range(3):
            for d in (2, 10):
                net = _mlp(d, act, seed)
                x = torch.rand(d, generator=torch.Generator().manual_seed(100 + seed))
                for norm, radii in (("linf", (0.01, 0.1, 0.5)), ("l2", (0.02, 0.2, 1.0))):
                    cases += [(f"mlp d={d} {act} seed={seed} {norm} eps={e}", net, (d,), x, e, norm) for e in radii]
            net = _cnn(act, seed)
            x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(200 + seed))
            for norm, radii in (("linf", (0.005, 0.05)), ("l2", (0.05, 0.5))):
                cases += [(f"cnn {act} seed={seed} {norm} eps={e}", net, (1, 8, 8), x, e, norm) for e in radii]
    return cases


def _crown(cases, tmp_path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    request = {"cases": [{"layers": _spec(net), "input_shape": list(shape), "x": x.reshape(-1).tolist(),
                          "eps": eps, "norm": norm} for _, net, shape, x, eps, norm in cases]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    subprocess.run([PYTHON, str(REFERENCE), str(tmp_path / "request.json"), str(tmp_path / "response.json")],
                   check=True, capture_output=True, text=True)
    results = json.loads((tmp_path / "response.json").read_text())["results"]
    return [(torch.tensor(r["lower"], dtype=torch.float64), torch.tensor(r["upper"], dtype=torch.float64))
            for r in results]


def test_linear_bounds_are_never_much_looser_than_crown(tmp_path):
    cases = _cases()
    reference = _crown(cases, tmp_path)
    worst, report = 0.0, []
    for (name, net, shape, x, eps, norm), (ref_lo, ref_hi) in zip(cases, reference, strict=True):
        ours = compile_network(net, shape).bounds(x.reshape(1, *shape), eps, norm, method="linear")
        with torch.no_grad():
            value = net(x.reshape(1, *shape))[0].to(torch.float64)
        # both are sound: each must contain the network's value at the centre
        assert bool((ours.value_lo <= value + 1e-9).all() and (ours.value_hi >= value - 1e-9).all()), name
        assert bool((ref_lo <= value + ABS_TOL).all() and (ref_hi >= value - ABS_TOL).all()), name
        width = ref_hi - ref_lo
        excess = torch.maximum(ref_lo - ours.value_lo, ours.value_hi - ref_hi)  # > 0: ours looser on that side
        ratio = float(((excess - ABS_TOL) / width.clamp(min=1e-12)).max())
        ours_width, ref_width = float((ours.value_hi - ours.value_lo).mean()), float(width.mean())
        report.append(f"{name}: mean width ours {ours_width:.4g}, CROWN {ref_width:.4g}, worst excess {ratio:+.3f}")
        worst = max(worst, ratio)
    print("\n".join(report))
    assert worst <= REL_TOL, "\n".join(report)
