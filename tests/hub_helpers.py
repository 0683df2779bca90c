"""Helpers for the Hub tests: a hand-built Hugging Face cache directory and small registered model pairs."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from robustmix.registry import build_architecture


def fake_hf_cache(cache_dir: Path, repo_id: str, src: Path, commit: str, ref: str | None = "main") -> Path:
    """Lay out ``src``'s files as the HF cache does: ``models--org--name/snapshots/<commit>/...`` + ``refs/<ref>``."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, snapshot / f.name)
    if ref is not None:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm running statistics non-default values, so that buffers matter for the round trip."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model


def digits_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    g = build_architecture("digits_cnn", channels=[4, 8, 8]).eval()
    h = build_architecture("digits_cnn", channels=[4, 8, 8]).eval()
    return g, h


def resnet_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    g = randomise_batchnorm(build_architecture("torchvision_resnet18", num_classes=10), seed).eval()
    h = randomise_batchnorm(build_architecture("torchvision_resnet18", num_classes=10), seed + 1).eval()
    return g, h
