"""Cost of computing R: argmax mode (eq. 10) and jacobian mode (eq. 5) against the plain forwards and the floor.

For each batch size (default 1, 32 and 256, all in one run, on the same inputs per size) prints:

- argmax mode / (g fwd + h fwd) and / (g fwd alone), predictions under ``torch.no_grad()`` as deployed; the paper's accelerated model costs 2.15x g alone
  (8.94 s vs 4.16 s, CIFAR-100, V100, batch 250), and the floor is about 2x (g+h): one forward and one
  input-only backward per model;
- argmax mode on the ``torch.func`` path (``jacobian_method="func"``, what runs inside a transform) against
  the default ``autograd.grad`` path;
- jacobian mode with the per-class loop, vmap, the ``torch.func`` path and the automatic choice, each
  divided by its *floor*,
  measured in the same run: for each model, one forward with the input graph and c single-class input
  backwards (``autograd.grad`` with the graph kept), nothing else. Below 1x means batching the backwards
  (vmap) beats the floor's one-class-at-a-time passes.

Every ratio is the median of rounds that time the two sides back to back (see ``timing.interleaved_ratio``);
one JSON line per device closes the output. Model: torchvision ResNet-18 pair at 32x32 (``--arch cifar``:
the CIFAR ResNet-18 of the paper's experiments, ~25x the compute per image; use it on a GPU).
Jacobian configurations whose floor would take more than ``--max-floor-seconds`` per call (c = 100 at
batch 256 on a 2-core CPU: about a minute) are skipped with a line saying so.
Usage: ``python benchmarks/sensitivity.py [--batches 1 32 256] [--classes 10 100] [--arch tv|cifar]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import devices, interleaved_ratio

from robustmix import AdaptiveSmoothing


def model_pair(arch: str, num_classes: int, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    if arch == "cifar":
        from robustmix.adapters import cifar_resnet18

        g, h = cifar_resnet18(num_classes=num_classes), cifar_resnet18(num_classes=num_classes)
    else:
        from torchvision.models import resnet18

        g, h = resnet18(num_classes=num_classes), resnet18(num_classes=num_classes)
    return g.to(device).eval(), h.to(device).eval()


def floor(models: tuple[torch.nn.Module, ...], x: torch.Tensor, classes: int) -> None:
    """Jacobian mode's floor: per model one forward and ``classes`` single-class input backwards."""
    for model in models:
        xr = x.detach().requires_grad_(True)
        out = model(xr)
        for k in range(classes):
            torch.autograd.grad(out[:, k].sum(), xr, retain_graph=k < classes - 1)


def inference(model: torch.nn.Module, x: torch.Tensor) -> None:
    """A prediction as deployed: no graph for the caller (the wrapper takes its input gradients itself)."""
    with torch.no_grad():
        model(x)


def plain_forwards(*models: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for model in models:
            model(x)


def measure_batch(
    device: torch.device, arch: str, batch: int, classes: list[int], repeats: int, max_floor_s: float
) -> dict:
    x = torch.rand(batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(batch))
    g, h = model_pair(arch, 10, device)
    argmax = AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax")
    ratio, t_argmax, base = interleaved_ratio(
        lambda: inference(argmax, x), lambda: plain_forwards(g, h, x=x), device, repeats
    )
    ratio_g, _, t_g = interleaved_ratio(lambda: inference(argmax, x), lambda: plain_forwards(g, x=x), device, repeats)
    argmax_func = AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax", jacobian_method="func")
    ratio_func, _, _ = interleaved_ratio(
        lambda: inference(argmax_func, x), lambda: inference(argmax, x), device, repeats
    )
    result: dict = {"batch": batch, "fwd_g_plus_h_s": base, "fwd_g_s": t_g, "argmax_s": t_argmax,
                    "argmax_vs_g_plus_h": ratio, "argmax_vs_g": ratio_g, "argmax_func_vs_autograd": ratio_func}
    print(f"[{device}] batch {batch}: g fwd + h fwd = {base * 1e3:.1f} ms, argmax mode = {t_argmax * 1e3:.1f} ms")
    print(f"  argmax-mode overhead = {ratio:.2f}x (g fwd + h fwd), {ratio_g:.2f}x (g fwd alone; paper 2.15x)")
    print(f"  argmax mode, torch.func path / autograd path = {ratio_func:.2f}x")
    jacobian_repeats = max(3, repeats // 2)
    for c in classes:
        estimate = base * (1 + c)  # a backward costs about a forward
        if max_floor_s and estimate > max_floor_s:
            print(f"  jacobian c={c}: skipped, its floor would take about {estimate:.0f} s per call "
                  f"(> --max-floor-seconds {max_floor_s:g}; 0 measures it anyway)")
            result[f"jacobian_c{c}"] = {"skipped_floor_estimate_s": estimate}
            continue
        g, h = model_pair(arch, c, device)
        ratios, seconds = {}, {}
        for method in ("loop", "vmap", "func", "auto"):
            model = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", jacobian_method=method)
            ratios[method], seconds[method], t_floor = interleaved_ratio(
                lambda m=model: inference(m, x), lambda g=g, h=h, c=c: floor((g, h), x, c), device, jacobian_repeats
            )
        best = min(ratios["loop"], ratios["vmap"])
        print(
            f"  jacobian c={c}: / floor (fwd + {c} input backwards per model, {t_floor * 1e3:.0f} ms): "
            f"loop {ratios['loop']:.2f}x, vmap {ratios['vmap']:.2f}x, func {ratios['func']:.2f}x, "
            f"auto {ratios['auto']:.2f}x; auto / faster of loop and vmap = {ratios['auto'] / best:.2f}x, "
            f"func / faster of loop and vmap = {ratios['func'] / best:.2f}x"
        )
        result[f"jacobian_c{c}"] = {
            "floor_s": t_floor,
            **{f"{m}_vs_floor": r for m, r in ratios.items()},
            **{f"{m}_s": s for m, s in seconds.items()},
            "auto_vs_best": ratios["auto"] / best,
            "func_vs_best": ratios["func"] / best,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--arch", choices=("tv", "cifar"), default="tv")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-floor-seconds", type=float, default=20.0,
                        help="skip jacobian configurations whose floor would take longer per call (0: no limit)")
    args = parser.parse_args()
    for device in devices():
        runs = [measure_batch(device, args.arch, b, args.classes, args.repeats, args.max_floor_seconds)
                for b in args.batches]
        print(json.dumps({"device": str(device), "arch": args.arch, "threads": torch.get_num_threads(), "runs": runs}))


if __name__ == "__main__":
    main()
