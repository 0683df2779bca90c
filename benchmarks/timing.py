"""Timing helpers shared by the benchmark scripts: warm-up, repeats, median, device sync."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def devices() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


def interleaved_ratio(
    fn: Callable[[], object], baseline: Callable[[], object], device: torch.device, repeats: int = 7
) -> tuple[float, float, float]:
    """Median of per-round ``time(fn) / time(baseline)``, the two run back to back in each round.

    Interleaving cancels most of the drift a shared machine adds. Returns (ratio, fn s, baseline s).
    """
    fn()
    baseline()
    ratios, t_fn, t_base = [], [], []
    for _ in range(repeats):
        t_base.append(median_seconds(baseline, device, repeats=1, warmup=0))
        t_fn.append(median_seconds(fn, device, repeats=1, warmup=0))
        ratios.append(t_fn[-1] / t_base[-1])
    return statistics.median(ratios), statistics.median(t_fn), statistics.median(t_base)
