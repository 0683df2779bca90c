"""``robustmix train``: train the demo's policy (section 5.3, eq. 9) on digits, with checkpoints and resume.

Writes ``OUT/policy.safetensors`` (the policy's weights) and ``OUT/policy.json`` (how to rebuild it: policy
type and config, the mixture's settings and the base models' temperatures); checkpoints go to
``OUT/checkpoints`` and ``--resume`` continues a killed run exactly where its last checkpoint left off.
Under ``torchrun --nproc_per_node=N`` the recipe's global batch is split over the N processes and the policy
update runs in DistributedDataParallel; rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (policy + checkpoints)")
    parser.add_argument("--quick", action="store_true", help="small models and few steps (for tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, models and training")
    parser.add_argument("--steps", type=int, default=None, help="policy training steps (default: the demo's)")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--cache-dir", type=Path, default=None, help="reuse/store trained g and h here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from ..demo import (
        DEMO_MIX,
        accuracy,
        build_demo_mixture,
        demo_steps,
        demo_trainer,
        get_demo_models_on_every_rank,
    )
    from ..distributed import init_from_env
    from ..registry import policy_name

    ctx = init_from_env(device="cpu")  # one process, or one rank under torchrun (gloo)
    torch.manual_seed(args.seed)
    progress = not args.no_progress and ctx.is_main
    g, h, split = get_demo_models_on_every_rank(
        ctx, quick=args.quick, seed=args.seed, cache_dir=args.cache_dir, progress=progress
    )
    model = build_demo_mixture(g, h, seed=args.seed)
    trainer = demo_trainer(
        model,
        split,
        quick=args.quick,
        seed=args.seed,
        checkpoint_dir=args.out / "checkpoints",
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=progress,
        ctx=ctx,
    )
    if args.resume and trainer.step and ctx.is_main:
        print(f"resumed at step {trainer.step}")
    trainer.fit(steps=args.steps if args.steps is not None else demo_steps(trainer, args.quick))
    if not ctx.is_main:  # every rank holds the same policy; rank 0 writes it
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    save_file(state, str(args.out / "policy.safetensors"))
    meta = {
        "policy": {"type": policy_name(model.policy), "config": model.policy.get_config()},
        "mixture": DEMO_MIX,
        "temperatures": {"g": model.g.scale, "h": model.h.scale},
        "seed": args.seed,
        "quick": args.quick,
        "steps": trainer.step,
    }
    (args.out / "policy.json").write_text(json.dumps(meta, indent=2))
    clean = accuracy(model, split.x_test, split.y_test)
    print(f"trained {trainer.step} steps; clean test accuracy of the mixture {100 * clean:.1f}%")
    print(f"wrote {args.out / 'policy.safetensors'} and {args.out / 'policy.json'}")
    return 0
