"""Randomized-smoothing certificates: Clopper-Pearson vs exact beta quantiles, radii vs hand derivations and
exact smoothed functions, and an l_2 attack on digits that never succeeds inside the certified radius."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from robustmix.attacks import pgd
from robustmix.certify.randomized import (
    RandomizedSmoothing,
    certify_mixture,
    clopper_pearson_lower,
    clopper_pearson_upper,
    rs_radii,
)
from robustmix.demo.data import load_digits_split
from robustmix.smoothing import AdaptiveSmoothing

torch.set_num_threads(1)


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_beta_quantiles(n, alpha):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        lo, hi = clopper_pearson_lower(k, n, alpha), clopper_pearson_upper(k, n, alpha)
        ref_lo = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        ref_hi = 1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k)
        assert lo <= ref_lo + 1e-12 and lo == pytest.approx(ref_lo, abs=1e-9)
        assert hi >= ref_hi - 1e-12 and hi == pytest.approx(ref_hi, abs=1e-9)
        # the defining property: exact binomial tails at the bounds equal alpha
        if k > 0:
            assert stats.binom.sf(k - 1, n, lo) == pytest.approx(alpha, rel=1e-6)
        if k < n:
            assert stats.binom.cdf(k, n, hi) == pytest.approx(alpha, rel=1e-6)


def test_radii_hand_cases():
    # w = 1: r_rs is Cohen et al.'s sigma/2 (Phi^-1(p_i) - Phi^-1(p_j)); r_lip = (p_i - p_j) sigma / (2 sqrt(2/pi))
    r_lip, r_rs = rs_radii(0.9, 0.05, 1.0, 0.25)
    assert r_rs == pytest.approx(0.125 * (stats.norm.ppf(0.9) - stats.norm.ppf(0.05)))
    assert r_lip == pytest.approx(0.85 * 0.25 / (2 * math.sqrt(2 / math.pi)))
    # w = 0.8: mu = 0.25; the decision needs h_i - h_j > 0.25 at x, else both radii are 0
    assert rs_radii(0.6, 0.4, 0.8, 0.25) == (0.0, 0.0)
    r_lip, r_rs = rs_radii(0.95, 0.05, 0.8, 0.5)
    assert r_lip == pytest.approx((0.8 * 0.9 - 0.2) / (2 * 0.8 * math.sqrt(2 / math.pi) / 0.5))
    assert r_rs == pytest.approx(0.25 * (stats.norm.ppf(0.95 / 1.25) - stats.norm.ppf(0.3 / 1.25)))


@pytest.mark.parametrize("w", [0.6, 0.8, 1.0])
def test_radii_sound_on_exact_smoothed_threshold(w):
    # base f(x) = 1[x_0 > 0]: h_1(x) = Phi(x_0 / sigma) exactly. The worst g gives F_1 - F_0 >= w(h_1 - h_0) - (1-w);
    # moving x_0 towards 0 by the radius must keep it >= 0.
    sigma = 0.5
    checked: list[float] = []
    for x0 in torch.linspace(0.05, 2.0, 40).tolist():
        p1 = stats.norm.cdf(x0 / sigma)
        for r in rs_radii(p1, 1 - p1, w, sigma):
            if r > 0:  # a positive radius claims the decision at every point within it
                q = stats.norm.cdf((x0 - r) / sigma)
                assert w * (q - (1 - q)) - (1 - w) >= -1e-9
                checked.append(r)
    assert len(checked) > 20


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: float, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            xb = x[idx] + noise * torch.randn(x[idx].shape, generator=gen)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_attack_on_digits_never_succeeds_inside_certified_radius():
    torch.manual_seed(0)
    split = load_digits_split()
    g = _train(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)), split.x_train, split.y_train, 0.0, 8)
    base = _train(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)), split.x_train, split.y_train, 0.25, 15)
    sigma, w = 0.25, 0.8
    h = RandomizedSmoothing(base, sigma, n=2000, batch=1000)
    model = AdaptiveSmoothing(g, h, alpha=w / (1 - w), mode="none", space="prob")
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * sigma
    certified = 0
    for x, y in zip(split.x_test[:25], split.y_test[:25], strict=True):
        cert = certify_mixture(model, x[None], label=int(y), confidence=0.999, generator=gen)
        if cert.abstain:
            continue
        certified += 1
        def surrogate(z: torch.Tensor) -> torch.Tensor:  # differentiable stand-in: soft votes on fixed noise
            soft = base((z[:, None] + noise[None]).reshape(-1, 1, 8, 8)).softmax(1).reshape(len(z), 64, 10).mean(1)
            return ((1 - w) * g(z).softmax(1) + w * soft).log()

        adv = pgd(surrogate, x[None], y[None], eps=cert.radius, norm="l2", steps=30, restarts=2, data_range=(-10.0, 10.0), generator=gen)
        assert float((adv - x[None]).norm()) <= cert.radius * (1 + 1e-5)
        votes = h.counts(adv, n=4000, generator=gen)[0].double() / 4000
        mixed = (1 - w) * g(adv).softmax(1)[0].double() + w * votes
        assert int(mixed.argmax()) == int(y)
    assert certified >= 5
