"""Training-free calibration (MixedNUTS form): the predicted robust fraction holds on the calibration set,
checked against a naive re-computation, and the predicted clean accuracy is the mixture's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from test_maps import naive_nonlinear
from torch import nn

from robustmix import AdaptiveSmoothing, InputError, calibrate, calibrate_mixture, pgd
from robustmix.nn.maps import HardMax

EPS = 0.1


def _train(x, y, adversarial: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 48), nn.Softplus(), nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        xb = x
        if adversarial:
            model.eval()
            xb = pgd(model, x, y, EPS, steps=3, restarts=1)
            model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_pair():
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    g = _train(x[:1000], y[:1000], adversarial=False, seed=0)
    h = _train(x[:1000], y[:1000], adversarial=True, seed=1)
    return g, h, x[1000:1300], y[1000:1300]


def _naive_kept(cal, h, y) -> tuple[np.ndarray, int]:
    """Which calibration examples stay right with h at its attacked input and g fully fooled (every wrong
    one-hot vector), from h's logits through the naive map, in float64."""
    with torch.no_grad():
        z = h(cal.x_attacked).double().numpy()
    cfg = cal.h_map.get_config()
    mapped = naive_nonlinear(z, cfg["s"], cfg["p"], cfg["c"], cfg["k"], cfg["clamp"])
    probs = np.exp(mapped - mapped.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    w = cal.weight
    kept = np.zeros(len(y), dtype=bool)
    for n, label in enumerate(y.tolist()):
        if z[n].argmax() != label:
            continue
        # Right against every fully fooled g, with a relative room of 1e-4 for float32 rounding.
        kept[n] = all(
            w * (probs[n, label] - probs[n, k]) > (1 - w) * (1 + 1e-4)
            for k in range(probs.shape[1]) if k != label
        )
    return kept, int((z.argmax(1) == y.numpy()).sum())


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_predicted_robust_fraction_holds_on_the_calibration_set(digits_pair, target):
    g, h, x, y = digits_pair
    cal = calibrate(g, h, x, y, EPS, target=target, progress=False)
    kept, h_robust = _naive_kept(cal, h, y)
    assert h_robust > 0 and cal.h_robust == pytest.approx(h_robust / len(y))
    assert kept.mean() >= cal.predicted_robust
    assert kept.sum() >= math.floor(target * h_robust) - 1
    # With the real g (not fully fooled) the calibrated mixture is right wherever the bound says so.
    mixture = cal.mixture(g, h)
    with torch.no_grad():
        right = (mixture(cal.x_attacked).argmax(1) == y).numpy()
    assert right[kept].all()
    with torch.no_grad():
        naive = (1 - cal.weight) * HardMax()(g(x)).softmax(1) + cal.weight * cal.h_map(h(x)).softmax(1)
    assert cal.predicted_clean == pytest.approx(float((naive.argmax(1) == y).double().mean()))


def test_a_lower_target_never_lowers_the_predicted_clean_accuracy(digits_pair):
    g, h, x, y = digits_pair
    strict, loose = (calibrate(g, h, x, y, EPS, target=t, progress=False) for t in (1.0, 0.6))
    assert loose.weight <= strict.weight
    assert len(strict.search) == 6 * 4 * 5 and {"s", "p", "c", "cutoff", "fixable"} <= set(strict.search[0])
    assert max(r["fixable"] for r in loose.search) >= max(r["fixable"] for r in strict.search)


def test_calibrate_mixture_applies_the_result_and_it_saves(digits_pair, tmp_path):
    g, h, x, y = digits_pair
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode="none", space="prob")
    cal = calibrate_mixture(model, x, y, eps=EPS, target=0.9, progress=False)
    assert model.alpha == pytest.approx(cal.alpha) and model.h_map is cal.h_map
    assert isinstance(model.g_map, HardMax)
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).double().mean()) == pytest.approx(cal.predicted_clean)


def test_calibration_refuses_bad_input(digits_pair):
    g, h, x, y = digits_pair
    with pytest.raises(InputError, match="target"):
        calibrate(g, h, x, y, EPS, target=0.0)
    with pytest.raises(InputError, match="keeps no calibration example"):
        calibrate(g, h, x, y, 1.0, target=0.9, steps=5)
    with pytest.raises(InputError, match="classes"):
        calibrate(g, nn.Sequential(h, nn.Linear(10, 7)).eval(), x, y, EPS)
    with pytest.raises(InputError, match="mode='none'"):
        cal = calibrate(g, h, x, y, EPS, progress=False)
        cal.apply(AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax"))
