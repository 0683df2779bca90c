"""Bound propagation: every bound contains the values seen at 10,000 random points of the ball."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustmix.certify.bounds import compile_network

torch.set_num_threads(1)
ACTS = [nn.Tanh, nn.Softplus, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU]
F64 = torch.float64


def sample_ball(x: torch.Tensor, eps: float, norm: str, n: int, gen: torch.Generator) -> torch.Tensor:
    d = x.numel()
    if norm == "linf":
        delta = (torch.rand(n, d, generator=gen, dtype=F64) * 2 - 1) * eps
        delta[: n // 4] = torch.sign(delta[: n // 4]) * eps  # vertices
    else:
        u = torch.randn(n, d, generator=gen, dtype=F64)
        u = u / u.norm(dim=1, keepdim=True)
        delta = u * eps * torch.rand(n, 1, generator=gen, dtype=F64) ** (1 / d)
        delta[: n // 4] = u[: n // 4] * eps  # sphere
    return x.reshape(1, -1) + delta


def values_and_grads(net: nn.Module, pts: torch.Tensor, prob: bool, shape) -> tuple[torch.Tensor, torch.Tensor]:
    pts = pts.clone().requires_grad_(True)
    out = net(pts.reshape(-1, *shape))
    out = out.softmax(-1) if prob else out
    grads = torch.stack([torch.autograd.grad(out[:, k].sum(), pts, retain_graph=True)[0] for k in range(out.shape[1])], 1)
    return out.detach(), grads


@settings(max_examples=12, deadline=None)
@given(
    act=st.sampled_from(ACTS),
    norm=st.sampled_from(["linf", "l2"]),
    prob=st.booleans(),
    eps=st.floats(0.01, 1.0),
    seed=st.integers(0, 10_000),
)
def test_bounds_contain_10000_samples(act, norm, prob, eps, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, 3)).to(F64)
    x = torch.randn(3, dtype=F64)
    b = compile_network(net, (3,), "prob" if prob else "logit").bounds(x, eps, norm)
    pts = sample_ball(x, eps, norm, 10_000, torch.Generator().manual_seed(seed))
    vals, grads = values_and_grads(net, pts, prob, (3,))
    assert b.smooth
    assert (vals >= b.value_lo).all() and (vals <= b.value_hi).all()
    assert (grads >= b.grad_lo).all() and (grads <= b.grad_hi).all()
    dual = (lambda v: v.abs().sum(-1)) if norm == "linf" else (lambda v: v.norm(dim=-1))
    primal = (lambda v: v.abs().amax(-1)) if norm == "linf" else (lambda v: v.norm(dim=-1))
    norms = dual(grads)
    assert (norms <= b.grad_norm_max()).all() and (norms >= b.grad_norm_min()).all()
    # gradient Lipschitz constant: difference quotients between random pairs of points
    a, c = grads[:5000], grads[5000:]
    q = dual(a - c) / primal(pts[:5000] - pts[5000:])[:, None]
    assert (q <= b.grad_lipschitz()).all()


def test_hessian_bound_dominates_exact_hessians_conv_avgpool():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ELU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)
    ).to(F64)
    x = torch.rand(1, 4, 4, dtype=F64)
    b = compile_network(net, (1, 4, 4)).bounds(x, 0.1, "linf")
    pts = sample_ball(x.reshape(-1), 0.1, "linf", 40, torch.Generator().manual_seed(1))
    for p in pts:
        for k in range(3):
            H = torch.autograd.functional.hessian(lambda z, k=k: net(z.reshape(1, 1, 4, 4))[0, k], p)
            assert (H.abs() <= b.hess[k] + 1e-12).all()
    vals, grads = values_and_grads(net, sample_ball(x.reshape(-1), 0.1, "linf", 10_000, torch.Generator()), False, (1, 4, 4))
    assert (vals >= b.value_lo).all() and (vals <= b.value_hi).all()
    assert (grads >= b.grad_lo).all() and (grads <= b.grad_hi).all()


def test_linear_model_is_exact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3)).to(F64)
    x = torch.randn(4, dtype=F64)
    b = compile_network(net, (4,)).bounds(x, 0.3, "l2")
    W = net[0].weight.detach()
    assert torch.allclose(b.grad_lo, W) and torch.allclose(b.grad_hi, W)
    z = net(x[None])[0]
    assert torch.allclose(b.value_hi, z + 0.3 * W.norm(dim=1), atol=1e-9)
    assert (b.grad_lipschitz() < 1e-9).all()


def test_relu_stable_and_unstable():
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).to(F64)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([5.0, -5.0]))
    cn = compile_network(net, (1,))
    assert cn.bounds(torch.zeros(1, dtype=F64), 1.0, "linf").smooth
    assert not cn.bounds(torch.zeros(1, dtype=F64), 6.0, "linf").smooth


def test_unsupported_layer_is_named():
    with pytest.raises(NotImplementedError, match="MaxPool2d"):
        compile_network(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 8, 8))
    with pytest.raises(NotImplementedError, match="tanh"):
        compile_network(nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh"), nn.Linear(2, 2)), (2,)).bounds(
            torch.zeros(2), 0.1, "linf"
        )


def test_compile_does_not_touch_the_callers_model():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    compile_network(net, (2,))
    assert next(net.parameters()).dtype == torch.float32
