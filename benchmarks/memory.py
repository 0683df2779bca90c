"""Peak memory of jacobian mode with and without class chunking (c = 100, 1000).

Each configuration runs in a fresh subprocess so peak resident memory (CPU) or peak allocated memory
(CUDA) belongs to that configuration alone; the models' own footprint is subtracted.
Usage: ``python benchmarks/memory.py [--batch 8]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

CONFIGS = [  # (classes, method, chunk_size): chunk_size=classes means "no chunking"
    (100, "vmap", 100),
    (100, "vmap", 16),
    (100, "loop", None),
    (1000, "vmap", 16),
    (1000, "loop", None),
]


def child(classes: int, method: str, chunk: int | None, batch: int, device: str) -> None:
    from torchvision.models import resnet18

    from robustmix.sensitivity import class_gradient_norms

    dev = torch.device(device)
    model = resnet18(num_classes=classes).to(dev).eval()
    x = torch.rand(batch, 3, 32, 32, device=dev)
    with torch.no_grad():
        model(x)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    class_gradient_norms(model, x, method=method, chunk_size=chunk)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"classes": classes, "method": method, "chunk": chunk, "peak_mb": peak / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", nargs=4, metavar=("CLASSES", "METHOD", "CHUNK", "DEVICE"))
    args = parser.parse_args()
    if args.child:
        classes, method, chunk, device = args.child
        child(int(classes), method, None if chunk == "None" else int(chunk), args.batch, device)
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for classes, method, chunk in CONFIGS:
            cmd = [sys.executable, __file__, "--batch", str(args.batch), "--child", str(classes), method, str(chunk), device]
            line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            row = json.loads(line)
            print(
                f"[{device}] c={classes:>4} {method:>4} chunk={str(chunk):>4}: extra peak memory "
                f"{row['peak_mb']:.0f} MB (batch {args.batch}, ResNet-18, 32x32)"
            )
            print(json.dumps(row | {"device": device}))


if __name__ == "__main__":
    main()
