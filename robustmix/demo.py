"""``robustmix demo``: a standard CNN ``g`` and a K-NN oracle ``h`` on digits, mixed by eq. 2 at several α."""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from .data import load_digits_split
from .knn import KNNClassifier
from .smoothing import AdaptiveSmoothing


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer epochs (for tests)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    data = load_digits_split(seed=args.seed)
    g = small_cnn()
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    for _ in range(2 if args.quick else 8):
        for idx in torch.randperm(len(data.y_train)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(g(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    g.eval()
    h = KNNClassifier(data.x_train, data.y_train, k=5)
    print(f"{'alpha':>8} {'clean acc':>10}")
    for alpha in (0.0, 1.0, 10.0, 100.0, math.inf):
        model = AdaptiveSmoothing(g, h, alpha=alpha, mode="jacobian")
        with torch.no_grad():
            acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        print(f"{alpha:>8} {acc:>10.3f}")
    return 0
