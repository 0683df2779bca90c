"""Attacks that a map cannot fool (surrogate, margin loss, gradient-free) and tables whose rows face the
same attacks (adversarial inputs shared between rows)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_mlp

from robustmix import AdaptiveSmoothing, AttackSuite, evaluate_models, pgd, robust_accuracy, surrogate_pgd
from robustmix.evaluate import format_table
from robustmix.nn.maps import HardMax, NonlinearMap

EPS = 0.25


def _masked_case(seed: int = 0):
    """A mixture whose output is g's hard max (α = 0): its gradient is exactly zero everywhere."""
    g, h = make_mlp(12, 5, seed=seed), make_mlp(12, 5, seed=seed + 1)
    torch.manual_seed(seed)
    x = torch.rand(64, 12)
    with torch.no_grad():
        y = g(x).argmax(1)
    return AdaptiveSmoothing(g, h, alpha=0.0, mode="none", space="prob", g_map=HardMax()), x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_attack_finds_strictly_more_errors_than_the_plain_one_on_a_masked_mixture(seed):
    model, x, y = _masked_case(seed)
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    with torch.no_grad():
        plain = (model(pgd(model, x, y, EPS, steps=10, generator=gen())).argmax(1) != y).sum()
        relaxed = (model(surrogate_pgd(model, x, y, steps=10, eps=EPS, generator=gen())).argmax(1) != y).sum()
    assert relaxed > plain
    assert relaxed >= len(y) // 2


def test_the_suite_attacks_maps_through_the_surrogate_and_reports_the_worst_case():
    model, x, y = _masked_case(0)
    with_surrogate = AttackSuite(eps=EPS, steps=10, restarts=1, alphas=(0.0, math.inf), autoattack=False)
    without = AttackSuite(eps=EPS, steps=10, restarts=1, alphas=(0.0, math.inf), autoattack=False, surrogate=False)
    names = [n for n, _ in with_surrogate.attacks_for(model)]
    assert "surrogate PGD (margin) at deployed" in names and "surrogate PGD (margin) at α_t=0" in names
    assert not any("surrogate" in n for n, _ in with_surrogate.attacks_for(AdaptiveSmoothing(model.g, model.h, alpha=1.0)))
    strong = robust_accuracy(model, x, y, with_surrogate, progress=False).float().mean()
    weak = robust_accuracy(model, x, y, without, progress=False).float().mean()
    assert strong < weak
    assert "surrogate" in with_surrogate.describe()


def test_square_is_added_when_the_autoattack_version_lacks_it():
    pytest.importorskip("pyautoattack", reason="Square comes from pyautoattack")
    model, _, _ = _masked_case(0)
    names = [n for n, _ in AttackSuite(eps=EPS, autoattack=True, autoattack_version="apgd").attacks_for(model)]
    assert names[-2:] == ["AutoAttack", "Square"]
    standard = [n for n, _ in AttackSuite(eps=EPS, autoattack=True).attacks_for(model)]
    assert "Square" not in standard  # standard AutoAttack already runs Square
    assert "Square (gradient-free)" in AttackSuite(eps=EPS, autoattack=True, autoattack_version="apgd").describe(5)


def test_gradient_free_square_breaks_the_masked_mixture():
    pytest.importorskip("pyautoattack", reason="Square comes from pyautoattack")
    from robustmix import autoattack

    model, x, y = _masked_case(0)
    x_adv = autoattack(model, x[:16], y[:16], EPS, version="square")
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y[:16]).sum() >= 4


@pytest.mark.parametrize("seed", [0, 1])
def test_h_and_the_alpha_infinity_mixture_get_the_same_row(seed):
    g, h = make_mlp(12, 5, seed=seed), make_mlp(12, 5, seed=seed + 7)
    torch.manual_seed(seed)
    x = torch.rand(48, 12)
    with torch.no_grad():
        y = (g(x) + h(x)).argmax(1)
    models = {
        "g": g,
        "h": h,
        "α=1": AdaptiveSmoothing(g, h, alpha=1.0, mode="none", space="prob"),
        "α=∞": AdaptiveSmoothing(g, h, alpha=math.inf, mode="none", space="prob"),
    }
    suite = AttackSuite(eps=0.15, steps=5, restarts=1, alphas=(0.0, 1.0, math.inf), autoattack=False)
    fair = evaluate_models(models, x, y, suite, progress=False)
    alone = evaluate_models(models, x, y, suite, progress=False, transfer=False)
    assert fair["h"].robust == fair["α=∞"].robust
    for name in models:
        assert fair[name].robust <= alone[name].robust
        assert fair[name].clean == alone[name].clean
    assert "tried on every other row" in format_table(fair)
    assert "tried on every other row" not in format_table(alone)


def test_a_transferred_example_counts_against_every_row_that_it_fools():
    """An input that broke g is also tried on h: a row can only lose examples by transfer, and an
    example is lost exactly when some other row's breaking input fools this row (checked naively)."""
    g, h = make_mlp(12, 5, seed=3), make_mlp(12, 5, seed=4)
    torch.manual_seed(3)
    x = torch.rand(32, 12)
    with torch.no_grad():
        y = g(x).argmax(1)
    suite = AttackSuite(eps=0.3, steps=5, restarts=1, autoattack=False)
    g_adv = pgd(g, x, y, 0.3, steps=5, restarts=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h_clean = h(x).argmax(1) == y
    idx = h_clean.nonzero().flatten()  # the suite attacks only the examples still right
    h_adv = x.clone()
    h_adv[idx] = pgd(h, x[idx], y[idx], 0.3, steps=5, restarts=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        g_alive = (g(x).argmax(1) == y) & (g(g_adv).argmax(1) == y)
        h_alive = h_clean & (h(h_adv).argmax(1) == y)
        h_fair = h_alive & (g_alive | (h(g_adv).argmax(1) == y))
    report = evaluate_models({"g": g, "h": h}, x, y, suite, progress=False)
    assert report["h"].robust == pytest.approx(float(h_fair.float().mean()))


def test_the_nonlinear_mixture_row_faces_surrogate_attacks_in_a_table():
    g, h = make_mlp(12, 5, seed=5), make_mlp(12, 5, seed=6)
    model = AdaptiveSmoothing(g, h, alpha=9.0, mode="none", space="prob", g_map=HardMax(),
                              h_map=NonlinearMap(5.0, 4.0, -1.0))
    torch.manual_seed(5)
    x = torch.rand(16, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    suite = AttackSuite(eps=0.2, steps=3, restarts=1, alphas=(0.0, math.inf), autoattack=False)
    report = evaluate_models({"nonlinear": model, "h": h}, x, y, suite, progress=False)
    assert 0 <= report["nonlinear"].robust <= report["nonlinear"].clean
