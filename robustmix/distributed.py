"""Multi-process training and evaluation on ``torch.distributed`` (launch with ``torchrun``).

``torchrun --nproc_per_node=N`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``;
:func:`init_from_env` reads them, picks ``nccl`` on CUDA and ``gloo`` on CPU, and returns a
:class:`DistContext`. A single process (no ``WORLD_SIZE`` in the environment) gets a context with
``world_size == 1`` and nothing is initialised, so the same script runs both ways.

Multi-node: run the same command on every node, e.g. on 2 nodes with 8 GPUs each::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK \
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD_NODE_IP:29500 examples/train_policy.py ...
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistContext",
    "init_from_env",
    "broadcast_module",
    "require_process_group",
    "all_reduce",
    "close_process_group",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, computing on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None, device: str | None = None) -> DistContext:
    """Initialise the default process group from torchrun's environment (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size == 1:
        return DistContext(device=dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev)


def _comm_device() -> torch.device:
    nccl = dist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0, buffers_only: bool = False) -> nn.Module:
    """Copy rank ``src``'s parameters and buffers (only the buffers with ``buffers_only``) into ``module``
    on every rank (no-op without a process group), so frozen models such as g and h are bit-identical
    everywhere; returns ``module``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return module
    for tensor in module.buffers() if buffers_only else module.state_dict().values():
        buffer = tensor.to(_comm_device(), copy=True)
        dist.broadcast(buffer, src=src)
        tensor.copy_(buffer)
    return module


def require_process_group(what: str) -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; a clear error when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"{what} with distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun and call robustmix.distributed.init_from_env() first"
        )
    return dist.get_rank(), dist.get_world_size()


def all_reduce(tensor: Tensor, op: str = "sum") -> Tensor:
    """Element-wise ``"sum"`` or ``"max"`` of ``tensor`` over all ranks, returned on ``tensor``'s device.

    The reduction runs where the backend can do it (a CUDA device for nccl, the CPU for gloo).
    """
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    buffer = tensor.to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=ops[op])
    return buffer.to(tensor.device)


def close_process_group() -> None:
    """Leave the default process group at the end of a script (no-op when none is initialised).

    Call it on every rank once communication is over, after dropping objects that hold the group (a
    ``PolicyTrainer`` drops its DistributedDataParallel wrapper when ``fit`` returns). Garbage that still
    refers to the group is collected first, so ``destroy_process_group`` really stops the backend's worker
    threads: gloo threads that outlive the interpreter's shutdown can abort the process after a
    successful run ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
