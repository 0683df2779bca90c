"""Channels-last vs NCHW weights for the demo's digits CNN on CPU: forward + input-gradient time per batch,
interleaved repetitions in one run; prints the ratio (docstring of robustmix.nn.architectures.digits)."""

from __future__ import annotations

import time

import torch

from robustmix.nn.architectures.digits import digits_cnn


def _seconds(model: torch.nn.Module, x: torch.Tensor, iters: int = 60) -> float:
    for _ in range(3):
        model(x).sum().backward()
    start = time.perf_counter()
    for _ in range(iters):
        model(x).sum().backward()
    return (time.perf_counter() - start) / iters


def main() -> None:
    torch.manual_seed(0)
    channels_last = digits_cnn().eval()
    nchw = digits_cnn().eval().to(memory_format=torch.contiguous_format)
    for batch in (50, 539):
        x = torch.rand(batch, 1, 8, 8, requires_grad=True)
        times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
        for _ in range(6):
            times["nchw"].append(_seconds(nchw, x))
            times["channels_last"].append(_seconds(channels_last, x))
        best = {k: min(v) for k, v in times.items()}
        print(f"batch {batch}: NCHW {1e3 * best['nchw']:.2f} ms, channels-last {1e3 * best['channels_last']:.2f} ms "
              f"-> channels-last time = {best['channels_last'] / best['nchw']:.2f}x NCHW")


if __name__ == "__main__":
    main()
