"""Worker for tests/test_distributed.py: trains a tiny policy for a few steps, single- or multi-process.

Run as ``python tests/ddp_worker.py OUT GLOBAL_BATCH [MODE]`` or under ``torchrun --nproc_per_node=N``.
Every rank builds its policy from its own seed (rank 0's is the single process's), so the run only matches
one process if the trainer starts every rank from rank 0's policy. Rank 0 writes the trained policy to
``OUT`` and its initial weights to ``OUT.init`` (safetensors). Modes:

- ``fit`` (default): ``PolicyTrainer.fit`` on clean inputs, in two calls.
- ``loop``: the same steps through a loop of the caller's own over ``training_step``.
- ``bn``: the policy has an output BatchNorm; every rank writes its whole state to ``OUT.rank{r}`` and
  its state when training starts to ``OUT.rank{r}.init``.
- ``resume``: BatchNorm policy, l2 attacks; rank 0 writes an uninterrupted run to ``OUT`` and a run
  stopped at step 2 and resumed from its checkpoint to ``OUT.resumed``.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from robustmix import AdaptiveSmoothing
from robustmix.distributed import DistContext, close_process_group, init_from_env
from robustmix.nn.policies import LogitPolicy
from robustmix.training import PolicyTrainer

STEPS = 4


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def make_trainer(ctx: DistContext, global_batch: int, mode: str, **kwargs) -> PolicyTrainer:
    torch.manual_seed(0)  # g and h are the same on every rank
    g = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4)).eval()
    h = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Softplus(), torch.nn.Linear(12, 4)).eval()
    torch.manual_seed(100 + ctx.rank)  # the policy is not
    policy = LogitPolicy(num_classes=4, hidden=16, output_bn=mode in ("bn", "resume"))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(64, 16, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    if mode == "resume":  # attacks with random starts from the trainer's generator, eval-mode BatchNorm
        attack = {"eps": 0.5, "norm": "l2", "alphas": [0.5, 4.0], "adaptive_steps": 2, "attack_steps": 2}
    else:  # clean inputs only, so every world size sees exactly the same examples
        attack = {"eps": 0.1, "alphas": [], "adaptive_steps": 0}
    return PolicyTrainer(
        AdaptiveSmoothing(g, h, policy=policy), x, y, batch_size=global_batch // ctx.world_size, rank=ctx.rank,
        world_size=ctx.world_size, progress=False, lr=1e-2, **attack, **kwargs,
    )


def own_loop(trainer: PolicyTrainer, steps: int) -> None:
    while trainer.step < steps:
        epoch, index = divmod(trainer.step, trainer.batches_per_epoch)
        idx = trainer.batch_indices(epoch)[index]
        trainer.training_step(trainer.x_train[idx], trainer.y_train[idx])
    trainer.close()


def main(out: str, global_batch: int, mode: str = "fit") -> None:
    ctx = init_from_env(device="cpu")
    trainer = make_trainer(ctx, global_batch, mode)
    initial = state(trainer.policy)
    if mode == "loop":
        own_loop(trainer, STEPS)
    else:  # in two calls: the second one builds a new DistributedDataParallel wrapper
        trainer.fit(steps=STEPS // 2)
        trainer.fit(steps=STEPS)
    if mode == "resume":  # OUT's folder is on every rank's filesystem
        checkpoints = out + ".checkpoints"
        make_trainer(ctx, global_batch, mode, checkpoint_dir=checkpoints).fit(steps=2)
        resumed = make_trainer(ctx, global_batch, mode, checkpoint_dir=checkpoints, resume=True)
        resumed.fit(steps=STEPS)
        if ctx.is_main:
            save_file(state(resumed.policy), out + ".resumed")
    if ctx.is_main:
        save_file(state(trainer.policy), out)
        save_file(initial, out + ".init")
    if mode == "bn":  # every rank's state, running statistics included, before and after training
        save_file(initial, f"{out}.rank{ctx.rank}.init")
        save_file(state(trainer.policy), f"{out}.rank{ctx.rank}")
    close_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
