"""Certified radii: closed forms on hand-computed cases, tie/monotonicity/α=∞ properties, K-NN constancy."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from robustmix.certify import (
    Theorem1Constants,
    Theorem2Constants,
    certified_radius,
    knn_constant_on_ball,
    theorem1_radius,
    theorem2_radius,
)
from robustmix.knn import KNNClassifier
from robustmix.smoothing import AdaptiveSmoothing

torch.set_num_threads(1)
F64 = torch.float64


def linear(weight, bias) -> nn.Module:
    lin = nn.Linear(len(weight[0]), len(weight)).to(F64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=F64))
        lin.bias.copy_(torch.tensor(bias, dtype=F64))
    return nn.Sequential(lin).eval()


# -- the theorems as pure functions, on numbers worked out by hand ----------------------------------------
def test_theorem1_hand_cases():
    # L = 0, M = 1, alpha = 1: b = 1/2 + 1/2 = 1, radius = margin / b
    c = Theorem1Constants(M=1.0, L=0.0, g_x=3.0, grad_norm_x=1.0)
    assert theorem1_radius(c, c, alpha=1.0, margin=0.7) == pytest.approx(0.7)
    # alpha = 0, M = 0, L = 1: b = 0, radius = sqrt(4 * 2 * 2) / (2 * 2) = 1
    c = Theorem1Constants(M=0.0, L=1.0, g_x=5.0, grad_norm_x=0.0)
    assert theorem1_radius(c, c, alpha=0.0, margin=2.0) == pytest.approx(1.0)
    # alpha = 1, L = 1, M = 1, |g| = 1, grad norm 1: each class adds 1/2 + 2 + 1/2 = 3, b = 6
    # eps = (sqrt(36 + 4*2*1) - 6) / 4 = (sqrt(44) - 6) / 4
    c = Theorem1Constants(M=1.0, L=1.0, g_x=-1.0, grad_norm_x=1.0)
    assert theorem1_radius(c, c, alpha=1.0, margin=-1.0) == pytest.approx((math.sqrt(44) - 6) / 4)
    assert theorem1_radius(c, c, alpha=1.0, margin=0.0) == 0.0


def test_theorem2_hand_cases():
    one = Theorem2Constants(K_g=1, m_g=1, M_g=1, L_g=0, K_h=1, m_h=1, M_h=1, L_h=0, R_x=1)
    # den = (1 + 1)(1 + 1) = 4; C1 = (1 * 2) / 4; C2 = (1 * 1 * 2) / 4; C1 + C2 = 1 per class
    assert theorem2_radius(one, one, alpha=1.0, margin=0.5) == pytest.approx(0.25)
    # alpha = 0: C1 = M_g, so radius = margin / (M_g,i + M_g,j)
    a = Theorem2Constants(K_g=9, m_g=0.1, M_g=2, L_g=5, K_h=3, m_h=0.2, M_h=1, L_h=7, R_x=4)
    b = Theorem2Constants(K_g=9, m_g=0.1, M_g=3, L_g=5, K_h=3, m_h=0.2, M_h=1, L_h=7, R_x=4)
    assert theorem2_radius(a, b, alpha=0.0, margin=1.0) == pytest.approx(1 / 5)
    # Lipschitz gradients only add: L > 0 gives a smaller radius
    lip = Theorem2Constants(K_g=1, m_g=1, M_g=1, L_g=1, K_h=1, m_h=1, M_h=1, L_h=1, R_x=1)
    assert theorem2_radius(lip, lip, 1.0, 0.5) < theorem2_radius(one, one, 1.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        theorem2_radius(one, one, math.inf, 1.0)


# -- end to end, closed forms -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_alpha_inf_linear_h_is_exact_margin_over_dual_norm(norm):
    g = linear([[1.0, 2.0], [0.5, -1.0], [0.0, 0.3]], [0.0, 0.1, 0.2])
    h = linear([[1.5, -0.5], [-1.0, 0.25], [0.2, 0.2]], [0.3, -0.2, 0.0])
    x = torch.tensor([[0.4, -0.3]], dtype=F64)
    model = AdaptiveSmoothing(g, h, alpha=math.inf, mode="jacobian", norm=norm)
    i, j = 0, 1
    Wh = torch.tensor([[1.5, -0.5], [-1.0, 0.25]], dtype=F64)
    margin = float((Wh[0] - Wh[1]) @ x[0] + 0.3 - (-0.2))
    diff = Wh[0] - Wh[1]
    dual = float(diff.abs().sum() if norm == "linf" else diff.norm())
    res = certified_radius(model, x, i, j, steps=40)
    assert res.certified and res.radius <= margin / dual
    assert res.radius == pytest.approx(margin / dual, rel=1e-6)


def test_theorem2_linear_1d_closed_form_and_sound():
    # 1-D, two classes, linear g and h: gradients are constant (L = 0, m = M), R constant, the mix is linear.
    # Hand derivation: C1 = M_g / (1 + αR), C2 = M_g (M_h + e)/(m_h + e) / (1 + αR) = M_g / (1 + αR).
    wg, wh, alpha, e = [2.0, -1.0], [0.5, -0.25], 0.7, 1e-6
    g = linear([[wg[0]], [wg[1]]], [0.1, 0.0])
    h = linear([[wh[0]], [wh[1]]], [0.2, -0.1])
    x = torch.tensor([[0.3]], dtype=F64)
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode="jacobian", norm="linf", eps_c=e)
    R = [abs(wg[k]) / (abs(wh[k]) + e) for k in range(2)]
    out = [((wg[k] * 0.3 + [0.1, 0.0][k]) + alpha * R[k] * (wh[k] * 0.3 + [0.2, -0.1][k])) / (1 + alpha * R[k]) for k in range(2)]
    margin = out[0] - out[1]
    expected = abs(margin) / sum(abs(wg[k]) * (1 + alpha) / (1 + alpha * R[k]) for k in range(2))
    res = certified_radius(model, x, 0, 1, steps=40)
    slopes = [(wg[k] + alpha * R[k] * wh[k]) / (1 + alpha * R[k]) for k in range(2)]
    true_radius = abs(margin) / abs(slopes[0] - slopes[1])  # the true robust radius of a linear margin
    # at least Theorem 2's radius, at most the truth; R is constant here, so the bounds on the mixture's
    # margin itself are exact up to rounding and bisection
    assert expected * (1 - 1e-6) <= res.radius <= true_radius
    assert res.radius == pytest.approx(true_radius, rel=1e-6)


def test_radius_zero_at_tie_and_monotone_in_margin():
    x = torch.tensor([[0.2, -0.1]], dtype=F64)
    radii = []
    for shift in [0.0, 0.2, 0.5, 1.0, 2.0]:
        torch.manual_seed(0)
        g = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 2)).to(F64).eval()
        with torch.no_grad():  # identical rows: g_0 = g_1 + shift
            g[2].weight[1] = g[2].weight[0]
            g[2].bias[1] = g[2].bias[0] - shift
        model = AdaptiveSmoothing(g, g, alpha=1.0, mode="jacobian", norm="l2")  # g mixed with itself
        radii.append(certified_radius(model, x, 0, 1).radius)
    assert radii[0] == 0.0
    assert all(b > a for a, b in zip(radii, radii[1:], strict=False))


def test_refused_configurations():
    g = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[0.3, 0.1]], dtype=F64)
    with pytest.raises(ValueError, match="argmax"):
        certified_radius(AdaptiveSmoothing(g, g, alpha=1.0, mode="argmax"), x, 0, 1)

    class Policy(nn.Module):
        def forward(self, x, gl, hl):
            return x.sum(1)

    with pytest.raises(ValueError, match="policy"):
        certified_radius(AdaptiveSmoothing(g, g, policy=Policy(), mode="jacobian"), x, 0, 1)
    with pytest.raises(ValueError, match="method"):
        certified_radius(AdaptiveSmoothing(g, g, alpha=1.0, mode="jacobian"), x, 0, 1, method="guess")
    bad = nn.Sequential(nn.Linear(2, 2), nn.Hardtanh(), nn.Linear(2, 2)).to(F64)
    with pytest.raises(NotImplementedError, match="Hardtanh"):
        certified_radius(AdaptiveSmoothing(bad, g, alpha=1.0, mode="jacobian"), x, 0, 1)


def test_empirical_mode_is_flagged():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64).eval()
    model = AdaptiveSmoothing(g, g, alpha=1.0, mode="jacobian", norm="l2")
    x = torch.tensor([[0.2, -0.1]], dtype=F64)
    i = int(model(x).argmax())
    res = certified_radius(model, x, i, method="empirical")
    assert not res.certified and "NOT a certificate" in repr(res)
    assert "NOT a certificate" not in repr(certified_radius(model, x, i))


# -- K-NN oracle --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,p,k", [("linf", 2.0, 1), ("l2", 2.0, 3), ("l2", math.inf, 2), ("linf", 1.0, 3)])
def test_knn_constancy_check_against_sampling(norm, p, k):
    gen = torch.Generator().manual_seed(0)
    tx = torch.rand(30, 2, generator=gen, dtype=F64)
    ty = (tx[:, 0] > 0.5).long() + (tx[:, 1] > 0.7).long()
    knn = KNNClassifier(tx, ty, k=k, p=p)
    for _ in range(20):
        x = torch.rand(1, 2, generator=gen, dtype=F64)
        for eps in (0.01, 0.05, 0.1):
            if knn_constant_on_ball(knn, x, eps, norm):
                d = torch.rand(400, 2, generator=gen, dtype=F64) * 2 - 1
                if norm == "l2":
                    d = d / d.norm(dim=1, keepdim=True).clamp_min(1) * torch.rand(400, 1, generator=gen, dtype=F64)
                votes = knn(x + eps * d)
                assert (votes == knn(x)).all()


def test_knn_gap_condition_1d():
    # training points at 0 and 1 (labels 0, 1), K = 1, x = 0.3: nearest changes at 0.5, so the vote is
    # constant exactly for eps < 0.2 (gap d2 - d1 = 0.4 > 2 eps)
    knn = KNNClassifier(torch.tensor([[0.0], [1.0]], dtype=F64), torch.tensor([0, 1]), k=1)
    x = torch.tensor([[0.3]], dtype=F64)
    assert knn_constant_on_ball(knn, x, 0.19, "linf")
    assert not knn_constant_on_ball(knn, x, 0.21, "linf")
    # the vote-level condition: both neighbours share a label, so it never changes
    same = KNNClassifier(torch.tensor([[0.0], [1.0]], dtype=F64), torch.tensor([1, 1]), k=1, num_classes=2)
    assert knn_constant_on_ball(same, x, 5.0, "linf")


@pytest.mark.parametrize("rows", [None, [4, 0, 2]])
def test_output_gradients_by_repeated_inputs_equal_autograds_jacobian(rows, monkeypatch):
    # one backward pass per chunk of rows (the input repeated per row): with 3 points and 6 inputs a pass,
    # 2 rows a chunk, so the test crosses chunk boundaries
    radius = importlib.import_module("robustmix.certify.radius")
    monkeypatch.setattr(radius, "_GRADIENT_ROWS_PER_PASS", 6)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 5)).double().eval()
    pts = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    out, grads = radius._outputs_and_gradients(net, pts, rows)
    torch.testing.assert_close(out, net(pts))
    for n in range(3):
        jac = torch.autograd.functional.jacobian(lambda z: net(z[None])[0], pts[n]).reshape(5, -1)
        torch.testing.assert_close(grads[n], jac if rows is None else jac[rows])
