"""PolicyTrainer step time, split into attack generation and the policy update (eq. 9 step).

Prints the share of a training step spent generating the adversarial inputs (PGD at each α_t plus the
adaptive attack) versus the policy's forward/backward/Adam update, measured in one run on the same batches,
plus a JSON line. Usage: ``python benchmarks/training.py [--batch 64] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustmix import AdaptiveSmoothing
from robustmix.data import load_digits_split
from robustmix.demo_models import DEMO_EPS, digits_cnn
from robustmix.policy import PolicyNet
from robustmix.training import PolicyTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_digits_split()
    g, h = digits_cnn().eval(), digits_cnn().eval()
    policy = PolicyNet(g, h, g_layers=["act2"], h_layers=["act2"])
    model = AdaptiveSmoothing(g, h, policy=policy)
    trainer = PolicyTrainer(model, data.x_train, data.y_train, eps=DEMO_EPS, batch_size=args.batch, progress=False)
    batches = trainer.batch_indices(0)[: args.steps]
    t_attack = t_step = 0.0
    for idx in batches:
        x, y = data.x_train[idx], data.y_train[idx]
        start = time.perf_counter()
        trainer.attack_batch(x, y)
        t_attack += time.perf_counter() - start
        start = time.perf_counter()
        trainer.training_step(x, y)  # generates its own attacks, then updates the policy
        t_step += time.perf_counter() - start
    update = max(t_step - t_attack, 0.0)
    n = len(batches)
    print(
        f"PolicyTrainer step (batch {args.batch}, {len(trainer.alphas)} fixed-α attacks + adaptive, CPU): "
        f"{t_step / n * 1e3:.0f} ms; attack generation {t_attack / t_step:.0%}, policy update {update / t_step:.0%}"
    )
    print(json.dumps({"step_s": t_step / n, "attack_s": t_attack / n, "update_s": update / n, "batch": args.batch}))


if __name__ == "__main__":
    main()
