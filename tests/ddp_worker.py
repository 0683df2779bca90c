"""Worker for tests/test_distributed.py: trains a tiny policy for a few steps, single- or multi-process.

Run as ``python tests/ddp_worker.py OUT GLOBAL_BATCH [bn]`` or under ``torchrun --nproc_per_node=N``; rank 0
writes the trained policy's weights to ``OUT`` and the initial ones to ``OUT.init`` (safetensors). With
``bn`` the policy has an output BatchNorm and every rank writes its whole state to ``OUT.rank{r}``.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from robustmix import AdaptiveSmoothing
from robustmix.distributed import close_process_group, init_from_env
from robustmix.policy import LogitPolicy
from robustmix.training import PolicyTrainer


def main(out: str, global_batch: int, batch_norm: bool = False) -> None:
    ctx = init_from_env(device="cpu")
    torch.manual_seed(0)
    g = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4)).eval()
    h = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Softplus(), torch.nn.Linear(12, 4)).eval()
    policy = LogitPolicy(num_classes=4, hidden=16, output_bn=batch_norm)
    initial = {k: v.clone().contiguous() for k, v in policy.state_dict().items()}
    model = AdaptiveSmoothing(g, h, policy=policy)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(64, 16, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    # Clean inputs only (no attacks with random starts), so both runs see exactly the same examples.
    trainer = PolicyTrainer(
        model, x, y, eps=0.1, alphas=[], adaptive_steps=0, batch_size=global_batch // ctx.world_size,
        rank=ctx.rank, world_size=ctx.world_size, progress=False, lr=1e-2,
    )
    trainer.fit(steps=4)
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, out)
        save_file(initial, out + ".init")
    if batch_norm:  # every rank's state, running statistics included
        save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, f"{out}.rank{ctx.rank}")
    close_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), batch_norm=sys.argv[3:] == ["bn"])
