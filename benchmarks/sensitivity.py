"""Cost of computing R: argmax mode (eq. 10) and jacobian mode (eq. 5) vs the two plain forwards.

Prints ratios measured in one run on the same batch (torchvision ResNet-18 pair, 32x32 input) and one
JSON line per device. Usage: ``python benchmarks/sensitivity.py [--batch 32] [--classes 10 100]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import devices, interleaved_ratio

from robustmix import AdaptiveSmoothing


def resnet_pair(num_classes: int, device: torch.device):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    g, h = resnet18(num_classes=num_classes), resnet18(num_classes=num_classes)
    return g.to(device).eval(), h.to(device).eval()


def measure(device: torch.device, batch: int, classes: list[int], repeats: int) -> dict:
    x = torch.rand(batch, 3, 32, 32, device=device)
    result: dict = {"device": str(device), "batch": batch}
    g, h = resnet_pair(10, device)

    def plain():
        with torch.no_grad():
            g(x), h(x)

    def g_only():
        with torch.no_grad():
            g(x)

    argmax = AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax")
    ratio, t_argmax, base = interleaved_ratio(lambda: argmax(x), plain, device, repeats)
    ratio_g, _, t_g = interleaved_ratio(lambda: argmax(x), g_only, device, repeats)
    result.update(fwd_g_plus_h_s=base, fwd_g_s=t_g, argmax_s=t_argmax, argmax_ratio=ratio, argmax_vs_g_ratio=ratio_g)
    print(f"[{device}] batch {batch}: g fwd + h fwd = {base * 1e3:.1f} ms")
    print(f"  argmax-mode overhead = {ratio:.2f}x (g fwd + h fwd), {ratio_g:.2f}x (g fwd alone)")
    for c in classes:
        g, h = resnet_pair(c, device)

        def plain_c(g=g, h=h):
            with torch.no_grad():
                g(x), h(x)

        ratios = {}
        for method in ("loop", "vmap", "auto"):
            model = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", jacobian_method=method)
            ratios[method] = interleaved_ratio(lambda m=model: m(x), plain_c, device, max(3, repeats // 2))[0]
        best = min(ratios["loop"], ratios["vmap"])
        print(
            f"  jacobian c={c}: loop {ratios['loop']:.1f}x, vmap {ratios['vmap']:.1f}x, "
            f"auto {ratios['auto']:.1f}x (floor about {1 + c}x); auto / faster path = {ratios['auto'] / best:.2f}x"
        )
        result[f"jacobian_c{c}"] = ratios | {"auto_vs_best": ratios["auto"] / best}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    for device in devices():
        print(json.dumps(measure(device, args.batch, args.classes, args.repeats)))


if __name__ == "__main__":
    main()
