"""Boxes cut to an l_2 ball (``robustmix.certify.regions``), the regions of l_2 input splitting.

The dual minimum of a linear form over box ∩ ball is checked against an independent solver (scipy's SLSQP
on the primal problem) and against points of the region; whole-network bounds over such regions must
contain 10,000 sampled points of the region."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from torch import nn

from robustmix import AdaptiveSmoothing
from robustmix.certify import certified_radius
from robustmix.certify.bounds import compile_network
from tests.test_bounds import values_and_grads
from tests.test_certify_fuzz import margin_fn, pgd_min_margin
from tests.test_linear_bounds import compiled_at_random_point

BoxInBall = importlib.import_module("robustmix.certify.regions").BoxInBall
torch.set_num_threads(1)
F64 = torch.float64


def _region(seed: int, d: int, B: int = 1) -> BoxInBall:
    """Random boxes and balls that meet: the ball's centre lies at most its radius from the box."""
    gen = torch.Generator().manual_seed(seed)
    halves = torch.rand(B, d, generator=gen, dtype=F64) * 0.8 + 0.05
    offset = torch.randn(B, d, generator=gen, dtype=F64) * 0.6
    gap = (offset.abs() - halves).clamp(min=0).norm(dim=1)
    radius = torch.maximum(torch.rand(B, generator=gen, dtype=F64) * 1.5 + 0.05, gap * 1.05 + 0.01)
    return BoxInBall(halves, offset, radius)


def _points(region: BoxInBall, n: int, seed: int) -> torch.Tensor:
    """Up to ``n`` points ``δ`` of one region (the first), by rejection from the box and from the ball, and
    the box's point nearest the ball's centre (always in the region)."""
    gen = torch.Generator().manual_seed(seed)
    h, o, r = region.halves[0], region.offset[0], float(region.radius[0])
    box = (torch.rand(20 * n, h.numel(), generator=gen, dtype=F64) * 2 - 1) * h
    direction = torch.randn(20 * n, h.numel(), generator=gen, dtype=F64)
    scale = torch.rand(20 * n, 1, generator=gen, dtype=F64) ** (1 / h.numel()) * r
    ball = o + direction / direction.norm(dim=1, keepdim=True) * scale
    cand = torch.cat([torch.minimum(torch.maximum(o, -h), h)[None], box, ball])
    inside = ((cand - o).norm(dim=1) <= r) & (cand.abs() <= h).all(1)
    return cand[inside][:n]


def _primal_min(a: np.ndarray, h: np.ndarray, o: np.ndarray, r: float) -> tuple[float, bool]:
    """``min a·δ`` over the box and the ball by a general-purpose constrained solver, and whether it
    converged; the value is that of a point of the region (checked), so never below the true minimum."""
    start = np.clip(o, -h, h)
    res = minimize(
        lambda z: a @ z, start, jac=lambda z: a, bounds=list(zip(-h, h, strict=True)), method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: r**2 - ((z - o) ** 2).sum(), "jac": lambda z: -2 * (z - o)}],
        options={"ftol": 1e-13, "maxiter": 1000},
    )
    z = np.clip(res.x, -h, h)
    z = o + (z - o) * min(1.0, r / max(np.linalg.norm(z - o), 1e-300))  # onto the ball, for rounding
    feasible = bool((np.abs(z) <= h + 1e-12).all())
    return (float(a @ z), bool(res.success)) if feasible else (float(a @ start), False)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), d=st.sampled_from([1, 2, 5, 10]), sparse=st.booleans())
def test_dual_minimum_equals_the_solvers_and_holds_at_points_of_the_region(seed, d, sparse):
    region = _region(seed, d)
    A = torch.randn(4, d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    if sparse:
        A[:, ::2] = 0  # coordinates the form does not move
    low = region.lowest(A)[0]
    h, o, r = region.halves[0].numpy(), region.offset[0].numpy(), float(region.radius[0])
    for k in range(4):
        found, converged = _primal_min(A[k].numpy(), h, o, r)
        assert float(low[k]) <= found + 1e-9 * (1 + abs(found))
        if converged:
            assert float(low[k]) >= found - 1e-6 * (1 + float(A[k].norm()))
    pts = _points(region, 2000, seed)
    assert (low <= (pts @ A.T).min(0).values + 1e-12).all()
    # never looser than the box's or the ball's own bound
    box = -(A.abs() * region.halves).sum(1)
    ball = A @ region.offset[0] - region.radius * A.norm(dim=1)
    assert (low >= torch.maximum(box, ball) - 1e-12).all()
    reach = region.reach(A)[0]
    assert ((pts @ A.T).abs() <= reach + 1e-12).all()


def test_dual_minimum_is_batched_row_by_row():
    region = _region(3, 6, B=5)
    A = torch.randn(5, 7, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    together = region.lowest(A)
    for b in range(5):
        alone = BoxInBall(region.halves[b : b + 1], region.offset[b : b + 1], region.radius[b : b + 1]).lowest(A[b])
        torch.testing.assert_close(together[b], alone[0], rtol=1e-12, atol=1e-12)
    shared = region.lowest(A[0])  # one matrix for every region
    for b in range(5):
        alone = BoxInBall(region.halves[b : b + 1], region.offset[b : b + 1], region.radius[b : b + 1]).lowest(A[0][None])
        torch.testing.assert_close(shared[b], alone[0], rtol=1e-12, atol=1e-12)


def test_bad_regions_are_refused():
    h = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="radius \\[B\\]"):
        BoxInBall(h, h, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=">= 0"):
        BoxInBall(-h, h, torch.ones(2, dtype=F64))
    net = compile_network(nn.Sequential(nn.Linear(3, 2)).to(F64), (3,))
    with pytest.raises(ValueError, match="norm='l2'"):
        net.batch_bounds(torch.zeros(2, 3, dtype=F64), BoxInBall(h, h, torch.ones(2, dtype=F64)), "linf")


@settings(max_examples=12, deadline=None)
@given(
    act=st.sampled_from([nn.Tanh, nn.Softplus, nn.GELU, nn.ELU, nn.ReLU]),
    kind=st.sampled_from(["mlp", "conv"]),
    seed=st.integers(0, 10_000),
)
def test_box_in_ball_bounds_contain_10000_samples_of_the_region(act, kind, seed):
    net, shape, compiled, x, gen = compiled_at_random_point(kind, act, seed)
    # a box around x, and a ball whose centre is within the box: their intersection is thick enough to sample
    halves = torch.rand(1, compiled.d, generator=gen, dtype=F64) * 0.2 + 0.05
    offset = (torch.rand(1, compiled.d, generator=gen, dtype=F64) * 2 - 1) * halves
    radius = float(halves.norm()) * (0.3 + 0.5 * float(torch.rand(1, generator=gen)))
    region = BoxInBall(halves, offset, torch.tensor([radius], dtype=F64))
    b = compiled.batch_bounds(x, region, "l2")
    pts = x + _points(region, 10_000, seed)
    vals, grads = values_and_grads(net, pts, False, shape)
    assert (vals >= b.value_lo).all() and (vals <= b.value_hi).all()
    if bool(b.smooth[0]):
        assert (grads >= b.grad_lo - 1e-12).all() and (grads <= b.grad_hi + 1e-12).all()
        norms = grads.norm(dim=-1)
        assert (norms >= b.grad_norm_min("l2")).all() and (norms <= b.grad_norm_max("l2")).all()


def test_l2_splitting_in_five_dimensions_certifies_more_and_stays_sound():
    # covering an l_2 ball with whole boxes gains about 1% in 5-D within 64 boxes; cut to the ball, over 20%
    torch.manual_seed(0)
    d = 5
    g = nn.Sequential(nn.Linear(d, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, 3)).to(F64)
    h = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(F64)
    model = AdaptiveSmoothing(g.eval(), h.eval(), alpha=1.0, mode="jacobian", norm="l2")
    xs = torch.randn(2, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    plain = split = 0.0
    for x in xs:
        x = x[None]
        i = int(model(x).argmax())
        res = certified_radius(model, x, i, steps=6, split_budget=64)
        plain, split = plain + certified_radius(model, x, i, steps=6).radius, split + res.radius
        for j in (k for k in range(3) if k != i):
            assert pgd_min_margin(margin_fn(model, i, j), x, res.radius, "l2", 1.0) >= 0
    assert split > 1.1 * plain > 0
