"""Shared test fixtures: small random model pairs (MLP and CNN) with smooth activations."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def make_mlp(d: int, c: int, seed: int, hidden: int = 16, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, c)).to(dtype).eval()


def make_cnn(c: int, seed: int, channels: int = 1, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(channels, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, c)]
    model = nn.Sequential(*layers)
    if batchnorm:  # give the running statistics non-trivial values
        model.train()
        with torch.no_grad():
            model(torch.randn(16, channels, 8, 8))
    return model.eval()


@pytest.fixture
def mlp_pair():
    return make_mlp(12, 5, seed=0), make_mlp(12, 5, seed=1)
