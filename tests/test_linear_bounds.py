"""Linear bound propagation (issue 16): the lines of every activation, and the linear bounds of whole
networks, contain the values at 10,000 sampled points; they are never looser than the interval bounds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustmix import AdaptiveSmoothing
from robustmix.certify import certified_radii, certified_radius
from robustmix.certify.bounds import activation_ranges, compile_network, slope_lines
from robustmix.certify.linear import LinearForm, product, relax
from tests.test_bounds import sample_ball, values_and_grads

torch.set_num_threads(1)
F64 = torch.float64
ACTS = [nn.Tanh, nn.Softplus, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.ReLU, lambda: nn.ELU(alpha=0.5)]
# the networks the sampling tests draw
NET_ACTS = st.sampled_from([nn.Tanh, nn.Softplus, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.ReLU])
KINDS, NORMS, RADII = st.sampled_from(["mlp", "conv"]), st.sampled_from(["linf", "l2"]), st.floats(0.01, 0.5)


def _intervals_and_points(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """200 intervals of widths from 0 to 8 and 50 points of each (both ends included): 10,000 points."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(200, generator=gen, dtype=F64) * 4
    width = torch.rand(200, generator=gen, dtype=F64) * torch.tensor([0.0, 1e-10, 0.1, 1.0, 8.0], dtype=F64).repeat(40)
    lo, hi = centre - width / 2, centre + width / 2
    t = torch.rand(50, 200, generator=gen, dtype=F64)
    t[0], t[1] = 0.0, 1.0  # both ends
    return lo, hi, lo + t * (hi - lo)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: repr(a()))
def test_activation_lines_contain_10000_points_of_each_interval(act):
    layer = act()
    lo, hi, z = _intervals_and_points(seed=0)
    values, _, d2, kink = activation_ranges(layer, lo, hi)
    r = relax(layer, lo, hi, values, d2, kink)
    y = layer(z)
    slack = 1e-12 * (1 + y.abs())
    assert (y >= r.s_lo * z + r.b_lo - slack).all()
    assert (y <= r.s_hi * z + r.b_hi + slack).all()


def test_elu_units_on_its_identity_stretch_get_exact_lines_and_the_others_their_own_fit():
    # ELU is z on [0, ∞): those units skip the grid fit; the rest must get the lines fitted on them alone
    layer = nn.ELU()
    lo, hi, _ = _intervals_and_points(seed=2)
    straight = lo >= 0
    assert 0 < int(straight.sum()) < len(lo)
    values, slopes, d2, kink = activation_ranges(layer, lo, hi)
    lines = relax(layer, lo, hi, values, d2, kink), slope_lines(layer, lo, hi, slopes, kink)
    c = ~straight
    alone = (
        relax(layer, lo[c], hi[c], (values[0][c], values[1][c]), (d2[0][c], d2[1][c]), kink[c]),
        slope_lines(layer, lo[c], hi[c], (slopes[0][c], slopes[1][c]), kink[c]),
    )
    for r, own, exact in zip(lines, alone, ((1.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 1.0)), strict=True):
        for name, value in zip(("s_lo", "b_lo", "s_hi", "b_hi"), exact, strict=True):
            assert (getattr(r, name)[straight] == value).all()
            assert torch.equal(getattr(r, name)[c], getattr(own, name))


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_elu_slope_lines_at_zero_take_torchs_slope_alpha(alpha):
    # at z = 0 itself torch's ELU has slope α: a unit whose interval is [0, 0] is not on the identity
    # stretch of σ' (found by review: the lines said 1 there)
    layer = nn.ELU(alpha=alpha)
    lo = hi = torch.zeros(3, dtype=F64)
    _, slopes, _, kink = activation_ranges(layer, lo, hi)
    r = slope_lines(layer, lo, hi, slopes, kink)
    z = torch.zeros(3, dtype=F64, requires_grad=True)
    (y,) = torch.autograd.grad(layer(z).sum(), z)
    assert bool((~kink).all())
    assert (r.s_lo * 0 + r.b_lo <= y).all() and (y <= r.s_hi * 0 + r.b_hi).all()


def _net(kind: str, act: type[nn.Module]) -> tuple[nn.Module, tuple[int, ...]]:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 8), act(), nn.Linear(8, 3)).to(F64).eval(), (4,)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), bn, act(), nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, padding=1), act(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    )
    return net.to(F64).eval(), (1, 4, 4)


@settings(max_examples=16, deadline=None)
@given(
    act=NET_ACTS, kind=KINDS, norm=NORMS, eps=RADII,
    seed=st.integers(0, 10_000),
)
def test_linear_bounds_contain_10000_samples_and_are_within_the_intervals(act, kind, norm, eps, seed):
    torch.manual_seed(seed)
    net, shape = _net(kind, act)
    x = torch.randn(shape, dtype=F64)
    compiled = compile_network(net, shape)
    new = compiled.bounds(x, eps, norm)
    old = compiled.bounds(x, eps, norm, method="interval")
    assert (new.value_lo >= old.value_lo).all() and (new.value_hi <= old.value_hi).all()
    pts = sample_ball(x, eps, norm, 10_000, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        vals = net(pts.reshape(-1, *shape))
    assert (vals >= new.value_lo).all() and (vals <= new.value_hi).all()
    # a backward pass for margins and weighted combinations of the logits (what the certificate uses)
    C = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    form = new.logit_form(C)
    lines_lo = pts @ form.A_lo.T + form.c_lo
    lines_hi = pts @ form.A_hi.T + form.c_hi
    combos = vals @ C.T
    tol = 1e-9 * (1 + combos.abs())
    assert (combos >= lines_lo - tol).all() and (combos <= lines_hi + tol).all()
    assert (combos >= new.ball_lower(form)).all()


def test_linear_bounds_are_tighter_than_intervals_on_a_deeper_net():
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(10, 10), nn.Tanh())], nn.Linear(10, 3)).to(F64)
    compiled = compile_network(net, (10,))
    x = torch.randn(10, dtype=F64)
    new, old = compiled.bounds(x, 0.2, "linf"), compiled.bounds(x, 0.2, "linf", method="interval")
    # the exact range is unknown; the width must shrink by a clear factor
    assert ((new.value_hi - new.value_lo) < 0.8 * (old.value_hi - old.value_lo)).all()


def test_cached_compilation_follows_changed_weights():
    """The certificate must never reuse bounds of weights that have since changed (even through .data)."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 2)).to(F64).eval()
    h = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64).eval()
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian")
    x = torch.tensor([[0.3, -0.2]], dtype=F64)
    i = int(model(x).argmax())
    first = certified_radius(model, x, i).radius
    g[2].weight.data.mul_(5.0)  # .data: no version bump
    i2 = int(model(x).argmax())
    fresh = AdaptiveSmoothing(
        nn.Sequential(*[m for m in g]).to(F64), h, alpha=1.0, mode="jacobian"
    )  # a new module object: certainly compiled afresh
    again, reference = certified_radius(model, x, i2).radius, certified_radius(fresh, x, i2).radius
    assert again == reference and again != first


def test_interval_propagation_is_the_previous_certificate_and_never_larger():
    torch.manual_seed(1)
    g = nn.Sequential(nn.Linear(3, 6), nn.Softplus(), nn.Linear(6, 3)).to(F64).eval()
    h = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64).eval()
    x = torch.randn(1, 3, dtype=F64)
    for mode, alpha in (("jacobian", 1.0), ("none", 1.0), ("jacobian", float("inf"))):
        model = AdaptiveSmoothing(g, h, alpha=alpha, mode=mode)
        i = int(model(x).argmax())
        new, old = certified_radius(model, x, i), certified_radius(model, x, i, propagation="interval")
        assert new.certified and old.certified
        assert new.radius >= old.radius * (1 - 1e-3)  # bisection grids differ slightly
    with pytest.raises(ValueError, match="propagation"):
        certified_radius(model, x, i, propagation="crown")


@pytest.mark.parametrize("prob", [False, True])
def test_batch_bounds_equal_one_example_at_a_time(prob):
    torch.manual_seed(3)
    net, shape = _net("conv", nn.GELU)
    compiled = compile_network(net, shape, "prob" if prob else "logit")
    xs = torch.randn(5, *shape, dtype=F64)
    radii = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.3], dtype=F64)
    batch = compiled.batch_bounds(xs, radii, "l2")
    for k in range(5):
        one, from_batch = compiled.bounds(xs[k], float(radii[k]), "l2"), batch.example(k)
        for name in ("value_lo", "value_hi", "grad_lo", "grad_hi", "hess"):
            torch.testing.assert_close(getattr(from_batch, name), getattr(one, name), rtol=1e-12, atol=1e-14)
        assert from_batch.smooth == one.smooth


def test_certified_radii_in_lockstep_equal_certifying_each_example_alone():
    torch.manual_seed(4)
    g = nn.Sequential(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 3)).to(F64).eval()
    h = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(F64).eval()
    xs = torch.randn(6, 3, dtype=F64)
    for mode, alpha in (("jacobian", 2.0), ("none", 1.0)):
        model = AdaptiveSmoothing(g, h, alpha=alpha, mode=mode)
        labels = model(xs).argmax(1)
        labels[0] = (labels[0] + 1) % 3  # one example whose class does not lead: radius 0
        together = certified_radii(model, xs, labels)
        alone = [certified_radius(model, xs[k : k + 1], int(labels[k])) for k in range(6)]
        assert [r.radius for r in together] == [r.radius for r in alone]
        assert together[0].radius == 0 and not together[0].certified


def compiled_at_random_point(kind: str, act: type[nn.Module], seed: int):
    """A random network of ``kind`` compiled, a random input ``x`` ``[1, d]``, and the generator that drew it."""
    torch.manual_seed(seed)
    net, shape = _net(kind, act)
    compiled = compile_network(net, shape)
    gen = torch.Generator().manual_seed(seed)
    return net, shape, compiled, torch.randn(1, compiled.d, generator=gen, dtype=F64), gen


@settings(max_examples=15, deadline=None)
@given(
    act=st.sampled_from([nn.Tanh, nn.Softplus, nn.GELU, nn.ELU]),
    kind=st.sampled_from(["mlp", "conv"]),
    seed=st.integers(0, 10_000),
)
def test_box_bounds_contain_10000_samples_of_the_box(act, kind, seed):
    # input splitting bounds boxes with a half-width per coordinate (l_inf)
    net, shape, compiled, x, gen = compiled_at_random_point(kind, act, seed)
    halves = torch.rand(1, compiled.d, generator=gen, dtype=F64) * 0.3
    b = compiled.batch_bounds(x, halves, "linf")
    pts = x + (torch.rand(10_000, compiled.d, generator=gen, dtype=F64) * 2 - 1) * halves
    pts[:2500] = x + torch.sign(pts[:2500] - x) * halves  # vertices
    vals, grads = values_and_grads(net, pts, False, shape)
    assert (vals >= b.value_lo).all() and (vals <= b.value_hi).all()
    if bool(b.smooth[0]):
        assert (grads >= b.grad_lo - 1e-12).all() and (grads <= b.grad_hi + 1e-12).all()
    # a box inside the ball of radius max(halves) gets bounds at least as tight as that ball's
    ball = compiled.batch_bounds(x, halves.max(1).values, "linf")
    assert (b.value_lo >= ball.value_lo - 1e-12).all() and (b.value_hi <= ball.value_hi + 1e-12).all()


@pytest.mark.parametrize("act", [nn.Tanh, nn.Softplus, nn.Sigmoid, nn.GELU, nn.SiLU])
def test_lines_stay_finite_and_sound_where_grid_points_coincide(act):
    # |l| far larger than the width: the grid points round to the same floats and a secant is 0/0
    layer = act()
    lo = torch.tensor([1e7, -1e7, 3.0], dtype=F64)
    hi = lo + torch.tensor([1e-8, 1e-8, 1e-15], dtype=F64) * lo.abs()
    values, _, d2, kink = activation_ranges(layer, lo, hi)
    r = relax(layer, lo, hi, values, d2, kink)
    for t in (r.s_lo, r.b_lo, r.s_hi, r.b_hi):
        assert bool(torch.isfinite(t).all())
    z = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 1001, dtype=F64)
    fz = layer(z)
    tol = 1e-9 * (1 + fz.abs())
    assert bool((fz >= r.s_lo[:, None] * z + r.b_lo[:, None] - tol).all())
    assert bool((fz <= r.s_hi[:, None] * z + r.b_hi[:, None] + tol).all())


def test_softplus_lines_hold_across_torchs_threshold_and_other_thresholds_are_refused():
    layer = nn.Softplus()  # z itself above beta * z = 20: a step down of about 2e-9 there
    lo = torch.tensor([19.0, 19.9999, 15.0], dtype=F64)
    hi = torch.tensor([21.0, 20.0001, 25.0], dtype=F64)
    values, _, d2, kink = activation_ranges(layer, lo, hi)
    r = relax(layer, lo, hi, values, d2, kink)
    z = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 100_001, dtype=F64)
    fz = layer(z)
    assert bool((fz >= r.s_lo[:, None] * z + r.b_lo[:, None]).all())
    assert bool((fz <= r.s_hi[:, None] * z + r.b_hi[:, None]).all())
    assert bool((fz >= values[0][:, None]).all() and (fz <= values[1][:, None]).all())
    with pytest.raises(NotImplementedError, match="threshold"):
        compile_network(nn.Sequential(nn.Linear(2, 3), nn.Softplus(threshold=1.0), nn.Linear(3, 2)), (2,))


@pytest.mark.parametrize("act", ACTS, ids=lambda a: repr(a()))
def test_slope_lines_contain_10000_points_of_each_interval(act):
    # the lines of σ' that the gradient's linear bounds are built from
    layer = act()
    lo, hi, z = _intervals_and_points(seed=1)
    _, slopes, _, kink = activation_ranges(layer, lo, hi)
    r = slope_lines(layer, lo, hi, slopes, kink)
    z = z.requires_grad_(True)
    (y,) = torch.autograd.grad(layer(z).sum(), z)  # σ' as autograd computes it
    z = z.detach()
    slack = 1e-12 * (1 + y.abs())
    smooth = ~kink
    assert (y >= r.s_lo * z + r.b_lo - slack)[:, smooth].all()
    assert (y <= r.s_hi * z + r.b_hi + slack)[:, smooth].all()
    # a smooth stretch of σ' gets lines that follow it, not just its range
    varying = smooth & ((slopes[1] - slopes[0]) > 0.05)
    if bool(varying.any()):
        gap = (r.s_hi * z + r.b_hi - r.s_lo * z - r.b_lo)[:, varying].mean()
        assert gap < 0.75 * (slopes[1] - slopes[0])[varying].mean()


def test_product_bounds_contain_the_product_at_10000_points():
    gen = torch.Generator().manual_seed(2)
    n, d = 30, 4
    x0 = torch.randn(1, d, generator=gen, dtype=F64)
    eps = 0.5
    pts = sample_ball(x0[0], eps, "linf", 10_000, gen)

    def loose_form() -> tuple[LinearForm, torch.Tensor]:
        A = torch.randn(1, n, d, generator=gen, dtype=F64)
        c = torch.randn(1, n, generator=gen, dtype=F64)
        slack = torch.rand(1, n, generator=gen, dtype=F64) * torch.tensor([0.0, 0.3], dtype=F64).repeat(15)
        values = pts @ A[0].T + c[0] + torch.sin(pts.sum(1, keepdim=True)) * slack[0]  # within ±slack of the line
        return LinearForm(A, c - slack, A, c + slack), values

    S, s = loose_form()
    V, v = loose_form()
    s_range = S.concretize(x0, eps, "linf")
    v_range = V.concretize(x0, eps, "linf")
    P, _ = product(S, s_range, V, v_range, x0, eps, "linf")
    lo, hi = pts @ P.A_lo[0].T + P.c_lo[0], pts @ P.A_hi[0].T + P.c_hi[0]
    tol = 1e-9 * (1 + (s * v).abs())
    assert ((s * v) >= lo - tol).all() and ((s * v) <= hi + tol).all()


@settings(max_examples=16, deadline=None)
@given(
    act=NET_ACTS, kind=KINDS, norm=NORMS, eps=RADII,
    pair=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_gradient_linear_bounds_contain_10000_samples(act, kind, norm, eps, pair, seed):
    torch.manual_seed(seed)
    net, shape = _net(kind, act)
    x = torch.randn(shape, dtype=F64)
    compiled = compile_network(net, shape)
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -0.5]], dtype=F64) if pair else None
    new = compiled.bounds(x, eps, norm, functionals=C)
    old = compiled.bounds(x, eps, norm, functionals=C, method="interval")
    pts = sample_ball(x, eps, norm, 10_000, torch.Generator().manual_seed(seed))
    _, grads = values_and_grads(net, pts, False, shape)
    if C is not None:
        grads = torch.einsum("kc,ncd->nkd", C, grads)
    if not new.smooth:
        return  # a kink inside the ball: no gradient bounds are claimed
    # lines of random linear functionals of the gradient, from below and from above
    graph, _ = new.gradients
    K, d = grads.shape[1:]
    lam = torch.randn(1, K, 5, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (A_lo, c_lo), (A_hi, c_hi) = graph.lower(lam), graph.lower(-lam)
    values = torch.einsum("kfd,nkd->nkf", lam[0], grads)
    tol = 1e-9 * (1 + values.abs())
    assert (values >= torch.einsum("kfd,nd->nkf", A_lo[0], pts) + c_lo[0] - tol).all()
    assert (values <= -(torch.einsum("kfd,nd->nkf", A_hi[0], pts) + c_hi[0]) + tol).all()
    assert (grads >= new.grad_lo).all() and (grads <= new.grad_hi).all()
    assert (new.grad_lo >= old.grad_lo).all() and (new.grad_hi <= old.grad_hi).all()
    dual = (lambda g: g.abs().sum(-1)) if norm == "linf" else (lambda g: g.norm(dim=-1))
    norms = dual(grads)
    assert (norms >= new.grad_norm_min()).all() and (norms <= new.grad_norm_max()).all()
    assert (new.grad_norm_min() >= old.grad_norm_min()).all() and (new.grad_norm_max() <= old.grad_norm_max()).all()
    (a_lo, b_lo), (a_hi, b_hi) = new.grad_norm_lines()
    norm_tol = 1e-9 * (1 + norms)
    assert (norms >= pts @ a_lo[0].T + b_lo[0] - norm_tol).all() and (norms <= pts @ a_hi[0].T + b_hi[0] + norm_tol).all()
    # the other norm too (input splitting asks for the certificate's norm on l_inf boxes)
    other = "l2" if norm == "linf" else "linf"
    other_norms = (lambda g: g.abs().sum(-1)) if other == "linf" else (lambda g: g.norm(dim=-1))
    assert (other_norms(grads) >= new.grad_norm_min(other)).all() and (other_norms(grads) <= new.grad_norm_max(other)).all()


def test_gradient_norm_bounds_are_much_tighter_than_from_intervals():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(F64).eval()
    compiled = compile_network(net, (10,))
    x = torch.randn(10, dtype=F64)
    for norm in ("linf", "l2"):
        new, old = compiled.bounds(x, 0.1, norm), compiled.bounds(x, 0.1, norm, method="interval")
        width_new = new.grad_norm_max() - new.grad_norm_min()
        width_old = old.grad_norm_max() - old.grad_norm_min()
        assert (width_new < 0.5 * width_old).all()


def test_networks_too_wide_for_gradient_forms_still_get_sound_norm_lines(monkeypatch):
    from robustmix.certify import bounds as bounds_module

    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Softplus(), nn.Linear(12, 3)).to(F64).eval()
    compiled = compile_network(net, (6,))
    x = torch.randn(6, dtype=F64)
    pts = sample_ball(x, 0.3, "linf", 10_000, torch.Generator().manual_seed(5))
    _, grads = values_and_grads(net, pts, False, (6,))
    norms = grads.abs().sum(-1)
    old = compiled.bounds(x, 0.3, "linf", method="interval")
    monkeypatch.setattr(bounds_module, "MAX_GRADIENT_FORM_ENTRIES", 3 * 6 * 12 - 1)
    lite = compiled.bounds(x, 0.3, "linf")  # no forward bounds of u: planes picked at the centre
    assert lite.gradients is not None
    assert (grads >= lite.grad_lo).all() and (grads <= lite.grad_hi).all()
    assert (norms >= lite.grad_norm_min()).all() and (norms <= lite.grad_norm_max()).all()
    (a_lo, b_lo), (a_hi, b_hi) = lite.grad_norm_lines()
    tol = 1e-9 * (1 + norms)
    assert (norms >= pts @ a_lo[0].T + b_lo[0] - tol).all() and (norms <= pts @ a_hi[0].T + b_hi[0] + tol).all()
    assert (lite.grad_norm_max() <= old.grad_norm_max()).all() and (lite.grad_norm_min() >= old.grad_norm_min()).all()
    assert (lite.grad_norm_max() - lite.grad_norm_min() < 0.8 * (old.grad_norm_max() - old.grad_norm_min())).all()


def test_slope_lines_hold_on_saturated_cells():
    # σ'' barely varies on cells deep in tanh's tail: the error term must not be divided by a clamped spread
    layer = nn.Tanh()
    lo, hi = torch.tensor([2.0935], dtype=F64), torch.tensor([30.1898], dtype=F64)
    _, slopes, _, kink = activation_ranges(layer, lo, hi)
    r = slope_lines(layer, lo, hi, slopes, kink)
    z = torch.linspace(2.0935, 30.1898, 100_001, dtype=F64)
    exact = 1 - torch.tanh(z) ** 2
    assert bool((exact >= r.s_lo * z + r.b_lo - 1e-15).all()) and bool((exact <= r.s_hi * z + r.b_hi + 1e-15).all())


def test_gradient_lower_bound_holds_where_two_saturated_units_cancel():
    # f(x) = S (tanh(x + a) - ρ tanh(b - x)): the lines of both units' slopes nearly cancel over the ball
    eps, a, b, rho, S = 13.733097335349866, 15.996727128334527, 14.513787006192786, 49.435212216483244, 1e9
    net = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1)).to(F64)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([a, b]))
        net[2].weight.copy_(S * torch.tensor([[1.0, -rho]]))
        net[2].bias.zero_()
    bounds = compile_network(net, (1,)).bounds(torch.zeros(1, dtype=F64), eps, "linf")
    x = torch.linspace(-eps, eps, 200_001, dtype=F64)
    exact = S * ((1 - torch.tanh(x + a) ** 2) + rho * (1 - torch.tanh(b - x) ** 2))  # about 0.00315 at its minimum
    assert float(bounds.grad_lo[0, 0]) <= float(exact.min())
    assert float(bounds.grad_norm_min()[0]) <= float(exact.min())


def test_softplus_slope_reaches_one_above_torchs_threshold():
    net = nn.Sequential(nn.Linear(1, 1), nn.Softplus(), nn.Linear(1, 1)).to(F64)
    with torch.no_grad():
        for lin, bias in ((net[0], 20.3), (net[2], 0.0)):
            lin.weight.fill_(1.0)
            lin.bias.fill_(bias)
    x = torch.zeros(1, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x[None]).sum(), x)  # torch's Softplus is z itself here: slope exactly 1
    for method in ("linear", "interval"):
        b = compile_network(net, (1,)).bounds(x.detach(), 0.1, "linf", method=method)
        assert float(b.grad_hi[0, 0]) >= float(grad) and float(b.grad_norm_max()[0]) >= float(grad)


@pytest.mark.parametrize("seed", range(4))
def test_gradient_bounds_hold_on_huge_balls(seed):
    # radii far beyond the network's scale: lines with enormous error terms must give way to the ranges
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1), nn.ELU(), nn.Linear(1, 2)).to(F64)
    x = torch.randn(1, dtype=F64)
    eps = 10.0 ** (9 + seed)
    pts = x + torch.linspace(-eps, eps, 20_001, dtype=F64)[:, None]
    _, grads = values_and_grads(net, pts, False, (1,))
    b = compile_network(net, (1,)).bounds(x, eps, "linf")
    assert (grads >= b.grad_lo).all() and (grads <= b.grad_hi).all()
    norms = grads.abs().sum(-1)
    assert (norms >= b.grad_norm_min()).all() and (norms <= b.grad_norm_max()).all()
