"""PolicyTrainer step time, split into attack generation and the policy update (eq. 9 step).

Uses the demo's recipe (digits CNN pair, PolicyNet, PGD-10 at 3 random α_t per batch plus the adaptive
attack, batch 64). For each batch the attacks are generated once on their own and timed, then the
trainer's random generator is rewound and the full ``training_step`` runs: it regenerates exactly the
same attacks, so ``update = step - attacks`` is the policy's forward/backward/Adam time on the same work.
Prints the shares of a step and a JSON line. Usage: ``python benchmarks/training.py [--steps 5]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustmix.demo import TRAIN_CONFIG, build_demo_mixture, demo_trainer
from robustmix.demo.data import load_digits_split
from robustmix.nn.architectures.digits import digits_cnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    trainer = demo_trainer(build_demo_mixture(digits_cnn().eval(), digits_cnn().eval()), split, quick=False,
                           progress=False)
    batches = trainer.batch_indices(0)[: args.steps + 1]
    t_attack = t_step = 0.0
    for i, idx in enumerate(batches):
        x, y = split.x_train[idx], split.y_train[idx]
        state = trainer.generator.get_state()
        start = time.perf_counter()
        trainer.attack_batch(x, y)
        attack = time.perf_counter() - start
        trainer.generator.set_state(state)  # the step below draws the same attacks again
        start = time.perf_counter()
        trainer.training_step(x, y)
        step = time.perf_counter() - start
        if i:  # the first batch warms up
            t_attack, t_step = t_attack + attack, t_step + step
    update = max(t_step - t_attack, 0.0)
    n = len(batches) - 1
    print(
        f"PolicyTrainer step (demo recipe, batch {TRAIN_CONFIG['batch_size']}, {TRAIN_CONFIG['alphas_per_batch']} "
        f"fixed-α_t PGD-{TRAIN_CONFIG['attack_steps']} + adaptive, CPU, {torch.get_num_threads()} threads): "
        f"{t_step / n * 1e3:.0f} ms; attack generation {t_attack / t_step:.0%}, policy update {update / t_step:.0%}"
    )
    print(json.dumps({"step_s": t_step / n, "attack_s": t_attack / n, "update_s": update / n,
                      "batch": TRAIN_CONFIG["batch_size"], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
