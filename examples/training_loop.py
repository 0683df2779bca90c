"""AdaptiveSmoothing inside your own training loop: fine-tune h through the mixture (eq. 5).

    python examples/training_loop.py [--alpha 3.0] [--epochs 2] [--cache-dir .cache] [--smoke]

The mixture is an ordinary differentiable module, so it can sit in a loss. Here g stays frozen and h is
fine-tuned on PGD examples crafted against the *mixture* (gradients flow through h, and through R unless
``detach_R=True``), with the loss taken on the mixture's output: h learns to cover the inputs on which the
combination, not h alone, is weak. Any optimiser, scheduler or AMP setup of your own works the same way.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from _digits import digits_models

from robustmix.attacks import pgd
from robustmix.demo.models import DEMO_EPS
from robustmix.evaluate import AttackSuite, evaluate_models, format_table
from robustmix.smoothing import AdaptiveSmoothing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=3.0, help="the fixed trade-off α of eq. 5")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of h")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cache-dir", type=Path, default=None, help="store/reuse the trained g and h here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds-long CI run (2 batches)")
    args = parser.parse_args(argv)

    g, h_before, split = digits_models(args.smoke, args.seed, args.cache_dir)
    h = copy.deepcopy(h_before)
    g.requires_grad_(False)  # only h is trained
    model = AdaptiveSmoothing(g, h, alpha=args.alpha, detach_R=True)  # R as a constant: no double backward
    optimizer = torch.optim.Adam(h.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)

    x_train, y_train = split.x_train, split.y_train
    batches = 2 if args.smoke else None
    for epoch in range(1 if args.smoke else args.epochs):
        order = torch.randperm(len(y_train), generator=generator).split(16 if args.smoke else 64)
        for i, idx in enumerate(order[:batches]):
            x, y = x_train[idx], y_train[idx]
            h.eval()  # attack the deployed mixture (no BN/Dropout here, but keep the habit)
            x_adv = pgd(model, x, y, DEMO_EPS, steps=2 if args.smoke else 7, generator=generator)
            h.train()
            # The mixture keeps a model's graph only when its input or its weights need gradients; g is
            # frozen, so the inputs are marked: the loss then reaches h through both sides of the mix.
            both = torch.cat([x, x_adv]).requires_grad_(True)
            loss = F.cross_entropy(model(both), torch.cat([y, y]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i % 10 == 0:
                print(f"epoch {epoch} batch {i}: loss {loss.item():.3f}")
    h.eval()

    n = 20 if args.smoke else len(split.y_test)
    suite = AttackSuite(
        eps=DEMO_EPS, steps=2 if args.smoke else 20, restarts=1 if args.smoke else 3,
        alphas=(args.alpha,), adaptive=False, autoattack=False, seed=args.seed,
    )
    models = {
        f"mixture α={args.alpha:g}, h before": AdaptiveSmoothing(g, h_before, alpha=args.alpha),
        f"mixture α={args.alpha:g}, h fine-tuned": AdaptiveSmoothing(g, h, alpha=args.alpha),
    }
    print(format_table(evaluate_models(models, split.x_test[:n], split.y_test[:n], suite, progress=False)))


if __name__ == "__main__":
    main()
