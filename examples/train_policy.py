"""Train the adaptive policy β(x) (Fig. 1, eq. 7) with PolicyTrainer (eq. 9) on digits; resumable.

    python examples/train_policy.py --checkpoint-dir runs/policy [--epochs 8] [--resume] [--smoke]

Each step attacks the batch with PGD at several fixed α_t (eq. 6) and adaptively through the policy
(section 5.1), then takes one Adam step on the policy alone. Kill the run at any time and start it again
with ``--resume``: it continues from the last checkpoint exactly as if it had not stopped. At the end the
mixture is compared with g and h under the same attacks it was trained against, plus PGD with restarts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from _digits import digits_models

from robustmix.demo.models import DEMO_EPS
from robustmix.evaluate import AttackSuite, evaluate_models, format_table
from robustmix.nn.policies import PolicyNet
from robustmix.smoothing import AdaptiveSmoothing
from robustmix.training import PolicyTrainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="where checkpoints are written")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint there")
    parser.add_argument("--epochs", type=float, default=8.0, help="training epochs of the policy")
    parser.add_argument("--beta0", type=float, default=0.5, help="threshold β0 = log α0 of eq. 9")
    parser.add_argument("--cache-dir", type=Path, default=None, help="store/reuse the trained g and h here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds-long CI run: 2 steps, then 1 resumed")
    args = parser.parse_args(argv)

    g, h, split = digits_models(args.smoke, args.seed, args.cache_dir)
    torch.manual_seed(args.seed)
    # Fig. 1: the policy reads the second conv block of each model; mix probabilities with R = 1.
    policy = PolicyNet(g, h, g_layers=["act2"], h_layers=["act2"], output_bn=True, beta_range=(-1.0, 3.0))
    model = AdaptiveSmoothing(g, h, policy=policy, mode="none", space="prob")

    alphas = (0.0, 1.0, math.inf) if args.smoke else (0.0, 0.3, 1.0, 3.0, 10.0, math.inf)

    def trainer(resume: bool) -> PolicyTrainer:
        return PolicyTrainer(
            model,
            split.x_train,
            split.y_train,
            eps=DEMO_EPS,
            alphas=alphas,
            beta0=args.beta0,
            attack_steps=2 if args.smoke else 10,
            adaptive_steps=2 if args.smoke else 10,
            alphas_per_batch=2 if args.smoke else 3,
            batch_size=16 if args.smoke else 64,
            seed=args.seed,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=1 if args.smoke else 25,
            resume=resume,
            progress=not args.smoke,
        )

    if args.smoke:
        # Two steps, then a fresh trainer resumes from the checkpoint and takes a third.
        trainer(args.resume).fit(steps=2)
        history = trainer(True).fit(steps=3)
    else:
        history = trainer(args.resume).fit(epochs=args.epochs)
    print(f"trained {history[-1]['step']} steps; last loss {history[-1]['loss']:.3f}, "
          f"mean β on clean inputs {history[-1]['beta_clean']:.2f}; checkpoints in {args.checkpoint_dir}")

    model.eval()
    n = 30 if args.smoke else len(split.y_test)
    suite = AttackSuite(
        eps=DEMO_EPS,
        steps=2 if args.smoke else 20,
        restarts=1 if args.smoke else 3,
        alphas=alphas,
        adaptive=True,
        autoattack=False,
        seed=args.seed,
    )
    models = {"g (standard)": g, "h (PGD-trained)": h, "adaptive mixture": model}
    print(format_table(evaluate_models(models, split.x_test[:n], split.y_test[:n], suite, progress=False)))


if __name__ == "__main__":
    main()
