"""Soundness fuzzing: inside the returned radius, neither a strong attack nor a dense grid flips i vs j.

Models and inputs are float64 so that rounding (~1e-16) cannot be mistaken for a flip.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustmix.certify import certified_radius
from robustmix.knn import KNNClassifier
from robustmix.smoothing import AdaptiveSmoothing

torch.set_num_threads(1)
F64 = torch.float64


def tiny_mlp(d: int, c: int, seed: int, act: type[nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 5), act(), nn.Linear(5, c)).to(F64).eval()


def margin_fn(model: AdaptiveSmoothing, i: int, j: int):
    def f(z: torch.Tensor) -> torch.Tensor:
        out = model(z)
        return out[:, i] - out[:, j]

    return f


def pgd_min_margin(f, x: torch.Tensor, r: float, norm: str, sign: float, steps: int = 200, restarts: int = 6) -> float:
    """Smallest ``sign * margin`` found by PGD with random restarts inside ``||δ||_p <= r``."""
    gen = torch.Generator().manual_seed(0)
    d = x.shape[1]
    start = torch.rand(restarts, d, generator=gen, dtype=F64) * 2 - 1
    start[0] = 0
    if norm == "l2":
        start = start / start.norm(dim=1, keepdim=True).clamp_min(1.0)
    delta = (start * r).requires_grad_(True)
    step = 2.5 * r / steps
    best = math.inf
    for _ in range(steps + 1):
        val = sign * f(x + delta)
        best = min(best, float(val.detach().min()))
        (grad,) = torch.autograd.grad(val.sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                delta -= step * grad.sign()
                delta.clamp_(-r, r)
            else:
                delta -= step * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
                delta *= (r / delta.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
    return best


def grid_ball(x: torch.Tensor, r: float, norm: str, n: int = 81) -> torch.Tensor:
    d = x.shape[1]
    axes = [torch.linspace(-r, r, n if d == 2 else 4001, dtype=F64)] * d
    pts = torch.cartesian_prod(*axes).reshape(-1, d)
    if norm == "l2":
        pts = pts * (r / pts.norm(dim=1, keepdim=True).clamp_min(r))  # pull onto the ball (incl. its sphere)
    return x + pts


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 1000),
    d=st.sampled_from([1, 2]),
    norm=st.sampled_from(["linf", "l2"]),
    space=st.sampled_from(["logit", "prob"]),
    mode_alpha=st.sampled_from([("jacobian", 0.3), ("jacobian", 3.0), ("jacobian", math.inf), ("none", 1.0)]),
)
def test_no_flip_inside_certified_radius(seed, d, norm, space, mode_alpha):
    mode, alpha = mode_alpha
    g = tiny_mlp(d, 3, seed, nn.Softplus)
    h = tiny_mlp(d, 3, seed + 1, nn.Tanh)
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode=mode, norm=norm, space=space)
    x = torch.randn(1, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    i = int(model(x).argmax())
    for j in (k for k in range(3) if k != i):
        res = certified_radius(model, x, i, j, steps=12)
        assert res.certified
        if res.radius == 0:
            continue
        sign = 1.0 if res.margin > 0 else -1.0
        f = margin_fn(model, i, j)
        assert pgd_min_margin(f, x, res.radius, norm, sign) >= 0
        with torch.no_grad():
            assert float((sign * f(grid_ball(x, res.radius, norm))).min()) >= 0


def test_theorem1_knn_no_flip_on_grid():
    gen = torch.Generator().manual_seed(3)
    tx = torch.rand(25, 2, generator=gen, dtype=F64) * 4 - 2
    ty = (tx[:, 0] + tx[:, 1] > 0).long() + (tx[:, 0] > 1).long()
    knn = KNNClassifier(tx, ty, k=3, p=2.0)
    g = tiny_mlp(2, 3, 7, nn.Softplus)
    checked = 0
    for norm in ("linf", "l2"):
        model = AdaptiveSmoothing(g, knn, alpha=2.0, mode="jacobian", norm=norm)
        for _ in range(6):
            x = torch.rand(1, 2, generator=gen, dtype=F64) * 4 - 2
            i = int(model(x).argmax())
            res = certified_radius(model, x, i, steps=12)
            assert res.certified and res.method == "theorem1"
            if res.radius == 0:
                continue
            checked += 1
            with torch.no_grad():
                out = model(grid_ball(x, res.radius, norm))
            assert (out.argmax(1) == i).all() or (out[:, i][:, None] >= out).all()
    assert checked > 0


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 1000),
    d=st.sampled_from([1, 2]),
    norm=st.sampled_from(["linf", "l2"]),
    space=st.sampled_from(["logit", "prob"]),
    alpha=st.sampled_from([0.3, 3.0]),
)
def test_input_splitting_is_sound_and_never_certifies_less(seed, d, norm, space, alpha):
    g = tiny_mlp(d, 3, seed, nn.Softplus)
    h = tiny_mlp(d, 3, seed + 1, nn.Tanh)
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode="jacobian", norm=norm, space=space)
    x = torch.randn(1, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    i = int(model(x).argmax())
    for j in (k for k in range(3) if k != i):
        plain = certified_radius(model, x, i, j, steps=10)
        split = certified_radius(model, x, i, j, steps=10, split_budget=64)
        assert split.radius >= plain.radius  # the split check only runs where the whole-ball check failed
        if split.radius == 0:
            continue
        f = margin_fn(model, i, j)
        assert pgd_min_margin(f, x, split.radius, norm, 1.0) >= 0
        with torch.no_grad():
            assert float(f(grid_ball(x, split.radius, norm)).min()) >= 0


def test_input_splitting_certifies_several_times_more_on_a_2d_mixture():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, 3)).to(F64)
    h = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(F64)
    model = AdaptiveSmoothing(g.eval(), h.eval(), alpha=1.0, mode="jacobian", norm="linf")
    xs = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    plain = split = 0.0
    for x in xs:
        i = int(model(x[None]).argmax())
        plain += certified_radius(model, x[None], i, steps=8).radius
        split += certified_radius(model, x[None], i, steps=8, split_budget=64).radius
    assert split > 2 * plain > 0


def test_split_budget_must_be_a_nonnegative_integer():
    model = AdaptiveSmoothing(tiny_mlp(2, 3, 0, nn.Softplus), tiny_mlp(2, 3, 1, nn.Tanh), alpha=1.0, mode="jacobian")
    with pytest.raises(ValueError, match="split_budget"):
        certified_radius(model, torch.zeros(1, 2, dtype=F64), 0, split_budget=-1)


@pytest.mark.parametrize("mode_alpha", [("none", 1.0), ("jacobian", 0.0), ("jacobian", 1.0)])
def test_a_unit_far_from_zero_cannot_inflate_the_radius(mode_alpha):
    # a hidden unit 1e-9 x + 1e7: its interval is far narrower than the spacing of floats near 1e7
    # (found by review: NaN lines once let the Lipschitz certificate accept an unverified radius)
    def net() -> nn.Module:
        m = nn.Sequential(nn.Linear(1, 2), nn.Softplus(), nn.Linear(2, 2), nn.Softplus(), nn.Linear(2, 3)).to(F64)
        with torch.no_grad():
            m[0].weight[:] = torch.tensor([[1e-9], [1.0]])
            m[0].bias[:] = torch.tensor([1e7, 0.0])
            m[2].weight[:] = torch.eye(2)
            m[2].bias.zero_()
            m[4].weight[:] = torch.tensor([[0.0, -5.0], [0.0, 0.0], [0.0, 0.0]])
            m[4].bias[:] = torch.tensor([0.0, -1.0, -100.0])
            m[4].bias[0] = 5 * float(m[:4](torch.zeros(1, 1, dtype=F64))[0, 1])
        return m.eval()

    mode, alpha = mode_alpha
    model = AdaptiveSmoothing(net(), net(), alpha=alpha, mode=mode, norm="linf")
    x = torch.zeros(1, 1, dtype=F64)
    res = certified_radius(model, x, 0, 1, steps=12, split_budget=16 if mode == "jacobian" and alpha else 0)
    assert res.certified and res.radius > 0
    f = margin_fn(model, 0, 1)
    with torch.no_grad():
        assert float(f(grid_ball(x, res.radius, "linf")).min()) >= 0


def test_split_halves_cover_their_box_in_exact_arithmetic():
    # the bounds treat a box (c, r) as the real box [c - r, c + r]: the two halves' real boxes, with their
    # centres and half-widths as rounded, must cover the parent's (checked exactly, with fractions)
    from fractions import Fraction

    from robustmix.certify.splitting import _split

    gen = torch.Generator().manual_seed(0)
    centres = (torch.rand(200, 3, generator=gen, dtype=F64) - 0.5) * 2e3
    halves = torch.rand(200, 3, generator=gen, dtype=F64) * 1e-7 + 1e-12
    kids_c, kids_h = _split(centres, halves, torch.rand(200, 3, generator=gen, dtype=F64))
    for n in range(200):
        for a in range(3):
            c, r = Fraction(float(centres[n, a])), Fraction(float(halves[n, a]))
            (c1, r1), (c2, r2) = [(Fraction(float(kids_c[m, a])), Fraction(float(kids_h[m, a]))) for m in (n, n + 200)]
            assert c1 - r1 <= c - r and c2 + r2 >= c + r and c1 + r1 >= c2 - r2
