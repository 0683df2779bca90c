"""Affine runs applied through their layers (``robustmix.certify.operators``) give the same four operators
as the dense matrix, computed independently here as the Jacobian of the run; bounds do not change."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import Tensor, nn

from robustmix.certify.bounds import compile_network
from tests.test_bounds import sample_ball, values_and_grads

operators = importlib.import_module("robustmix.certify.operators")
torch.set_num_threads(1)
F64 = torch.float64


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-2, 2)  # negative scales too
    return bn


RUNS = {
    "conv": (lambda: [nn.Conv2d(2, 4, 3, padding=1)], (2, 6, 6)),
    "strided, dilated, grouped": (lambda: [nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)], (4, 7, 7)),
    "pool then conv": (lambda: [nn.AvgPool2d(2), nn.Conv2d(3, 5, 3, padding=1)], (3, 8, 8)),
    # windows that leave rows and columns out, a rectangular window, a divisor of its own
    "uneven pool then conv": (lambda: [nn.AvgPool2d((2, 3), divisor_override=4), nn.Conv2d(3, 2, 2)], (3, 7, 8)),
    # below, |W| is not the layers with absolute weights (paths through the layers meet: overlapping pools,
    # two convolutions in a row, pooled convolution outputs mixed by a linear layer)
    "overlapping pool then conv": (lambda: [nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(2, 3, 3)], (2, 6, 6)),
    "conv then conv": (lambda: [nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)], (2, 5, 5)),
    "conv, batchnorm, pool, flatten, linear": (
        lambda: [nn.Conv2d(2, 3, 3), _bn(3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)], (2, 6, 6)
    ),
}
EXACT_ABS = ("conv", "strided, dilated, grouped", "pool then conv", "uneven pool then conv")


def _jacobian(run: list[nn.Module], shape: tuple[int, ...]) -> Tensor:
    seq = nn.Sequential(*run).to(F64).eval()
    x = torch.zeros(1, *shape, dtype=F64)
    return torch.autograd.functional.jacobian(lambda z: seq(z.reshape(1, *shape)).reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("name", list(RUNS))
def test_layer_maps_give_the_runs_matrix_and_its_transpose(name, monkeypatch):
    monkeypatch.setattr(operators, "_LAYER_MAP_MIN_ENTRIES", 0)
    torch.manual_seed(0)
    make, shape = RUNS[name]
    run = make()
    W = _jacobian(run, shape)
    ops = operators.operators(W, [m.to(F64).eval() for m in run], shape)
    overlapping = name not in EXACT_ABS
    assert isinstance(ops[0], operators.LayerMap) and isinstance(ops[2], operators.LayerMap)
    assert isinstance(ops[1], Tensor) == overlapping and isinstance(ops[3], Tensor) == overlapping
    m, n = W.shape
    gen = torch.Generator().manual_seed(1)
    for op, M in zip(ops, (W, W.abs(), W.T, W.abs().T), strict=True):
        X = torch.randn(3, M.shape[1], generator=gen, dtype=F64)
        torch.testing.assert_close(operators.apply(op, X), X @ M.T, rtol=1e-12, atol=1e-12)
        X3 = torch.randn(2, M.shape[1], 5, generator=gen, dtype=F64)
        torch.testing.assert_close(operators.apply(op, X3), M @ X3, rtol=1e-12, atol=1e-12)
    assert (m, n) == tuple(ops[0].shape) == tuple(reversed(ops[2].shape))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ELU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, padding=1), _bn(6), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 3),
    ).to(F64).eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bounds_through_layer_maps_equal_the_matrix_bounds_and_contain_10000_samples(norm, monkeypatch):
    torch.manual_seed(2)
    net, shape = _cnn(), (1, 8, 8)
    x = torch.randn(1, *shape, dtype=F64)
    eps = 0.05
    dense = compile_network(net, shape).bounds(x, eps, norm)
    monkeypatch.setattr(operators, "_LAYER_MAP_MIN_ENTRIES", 0)
    compiled = compile_network(net, shape)
    assert any(isinstance(getattr(st, "op", None), operators.LayerMap) for st in compiled.stages)
    b = compiled.bounds(x, eps, norm)
    for name in ("value_lo", "value_hi", "grad_lo", "grad_hi", "hess"):
        torch.testing.assert_close(getattr(b, name), getattr(dense, name), rtol=1e-9, atol=1e-12)
    pts = sample_ball(x, eps, norm, 10_000, torch.Generator().manual_seed(3))
    vals, grads = values_and_grads(net, pts, False, shape)
    assert (vals >= b.value_lo).all() and (vals <= b.value_hi).all()
    assert (grads >= b.grad_lo).all() and (grads <= b.grad_hi).all()
