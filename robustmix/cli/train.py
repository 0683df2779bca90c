"""``robustmix train``: train a policy (section 5.3, eq. 9) for a pair of models, with checkpoints and resume.

With ``--g``/``--h`` (or ``--model``, whose g and h are used) the policy is a Fig. 1 ``PolicyNet`` on the
models' default taps, trained on ``--dataset`` (``--split train``); the trained mixture is saved with
``save_pretrained`` to ``OUT/model`` and the run's record to ``OUT/run.json``. Without them, the digits
demo's recipe: it writes ``OUT/policy.safetensors`` (the policy's weights) and ``OUT/policy.json`` (how to rebuild it: policy
type and config, the mixture's settings and the base models' temperatures); checkpoints go to
``OUT/checkpoints`` and ``--resume`` continues a killed run exactly where its last checkpoint left off.
Under ``torchrun --nproc_per_node=N`` the recipe's global batch is split over the N processes and the policy
update runs in DistributedDataParallel; rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _options as opt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (checkpoints, model, record)")
    opt.add_model_arguments(parser)
    opt.add_data_arguments(parser, split="train")
    group = parser.add_argument_group("training")
    group.add_argument("--norm", choices=("linf", "l2"), default="linf", help="attack norm")
    group.add_argument("--eps", type=opt.number, default=None,
                       help="attack radius, e.g. 8/255 (default: 0.3 on digits, 8/255 otherwise)")
    group.add_argument("--steps", type=int, default=None,
                       help="policy training steps (default: the demo's, or one epoch for --g/--h)")
    group.add_argument("--beta0", type=float, default=4.0, help="β0 of eq. 9 (--g/--h)")
    group.add_argument("--policy", choices=("auto", "PolicyNet", "LogitPolicy"), default="auto",
                       help="--g/--h: PolicyNet on the models' feature stages (Fig. 1), LogitPolicy on their "
                            "outputs, or auto: PolicyNet when the stages are found")
    group.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints")
    group.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    group.add_argument("--seed", type=int, default=0, help="seed of data split, models and training")
    group.add_argument("--quiet", action="store_true", help="print only the result line")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_pair(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..distributed import init_from_env
    from ..nn.policies import LogitPolicy, auto_policy
    from ..smoothing import AdaptiveSmoothing
    from ..training import PolicyTrainer
    from ..workflow import resolve_device, run_record, write_json

    start = time.perf_counter()
    ctx = init_from_env(device=resolve_device(args.device).type)
    data = opt.load_data(args)
    pair = opt.load_model(args, data, ctx.device)
    torch.manual_seed(args.seed)
    policy: torch.nn.Module
    if args.policy == "LogitPolicy":
        policy = LogitPolicy(data.num_classes)
    else:
        try:
            policy = auto_policy(pair.g, pair.h)
        except ValueError as err:  # no conv stages to tap: fall back to the policy on the outputs
            if args.policy == "PolicyNet":
                raise
            opt.say(args, f"policy: LogitPolicy ({err.args[0].split(';')[0]})")
            policy = LogitPolicy(data.num_classes)
    model = AdaptiveSmoothing(pair.g, pair.h, policy=policy.to(ctx.device), mode=pair.mode, norm=args.norm,
                              space=pair.space)
    eps = opt.default_eps(args)
    trainer = PolicyTrainer(
        model, data.x.to(ctx.device), data.y.to(ctx.device), eps=eps, norm=args.norm, beta0=args.beta0,
        batch_size=max(1, min(64, len(data.y)) // ctx.world_size), seed=args.seed,
        checkpoint_dir=args.out / "checkpoints", checkpoint_every=args.checkpoint_every, resume=args.resume,
        progress=opt.progress_of(args) and ctx.is_main, rank=ctx.rank, world_size=ctx.world_size,
    )
    if args.resume and trainer.step:
        opt.say(args, f"resumed at step {trainer.step}")
    trainer.fit(steps=args.steps if args.steps is not None else trainer.batches_per_epoch)
    if not ctx.is_main:
        return 0
    model.eval()
    with torch.no_grad():
        clean = torch.cat([
            model(data.x[i:i + args.batch_size].to(ctx.device)).argmax(1).cpu() == data.y[i:i + args.batch_size]
            for i in range(0, len(data.y), args.batch_size)
        ]).double().mean().item()
    where = f"{data.name} {data.split}[:{len(data.y)}]"
    directory = model.save_pretrained(
        args.out / "model", beta0=args.beta0, dataset=data.name, threat_model={"norm": args.norm, "eps": eps},
        metrics=[{"name": f"clean accuracy ({where}, the training data)", "value": 100 * clean, "attack": "none"}],
    )
    print(f"trained {trainer.step} steps; clean accuracy of the mixture on {where}: {100 * clean:.2f}%")
    opt.say(args, f"saved the trained mixture to {directory}")
    write_json(args.out / "run.json", run_record(
        "train", model=opt.model_spec(args), dataset={"name": data.name, "split": data.split, "n": len(data.y)},
        threat_model={"norm": args.norm, "eps": eps}, steps=trainer.step, clean=clean, saved=str(directory),
        seconds=time.perf_counter() - start,
    ))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model or args.g or args.h or args.dataset != "digits":
        return _train_pair(args)
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
