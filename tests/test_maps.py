"""Output maps (the MixedNUTS form): naive reference, order preservation, exact endpoints, saving, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_mlp
from hypothesis import given
from hypothesis import strategies as st

from robustmix import AdaptiveSmoothing, ConfigError, LogitPolicy, certified_radius
from robustmix.nn.maps import (
    GELU_MONOTONE_FROM,
    HardMax,
    LayerNormMap,
    NonlinearMap,
    TemperatureMap,
    map_config,
    map_from_config,
)

logits = st.lists(
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=6, max_size=6), min_size=1, max_size=4
).map(lambda rows: torch.tensor(rows, dtype=torch.float64))
params = st.tuples(st.floats(0.05, 10), st.floats(0.25, 5), st.floats(-3, 1))
clamps = st.sampled_from(["gelu", "relu", "softplus", "identity"])


def naive_nonlinear(z: np.ndarray, s: float, p: float, c: float, k: int | None, clamp: str) -> np.ndarray:
    """M(z) = s·sign(u)·|u|^p, u = clamp(LN_k(z) + c), written out element by element (LN_k: the unbiased
    standard deviation of the top k, with 1e-8 added to the variance)."""
    out = np.empty_like(z)
    for b, row in enumerate(z):
        top = sorted(row, reverse=True)[: (k or len(row))]
        mean = sum(top) / len(top)
        std = math.sqrt(sum((t - mean) ** 2 for t in top) / (len(top) - 1) + 1e-8)
        for i, v in enumerate(row):
            a = (v - mean) / std + c
            u = {
                "gelu": 0.5 * a * (1 + math.erf(a / math.sqrt(2))),
                "relu": max(a, 0.0),
                "softplus": math.log1p(math.exp(a)) if a < 30 else a,
                "identity": a,
            }[clamp]
            out[b, i] = s * math.copysign(1.0, u) * max(abs(u), 1e-12) ** p if u != 0 else 0.0
    return out


@given(z=logits, prm=params, clamp=clamps, k=st.sampled_from([None, 2, 4]))
def test_nonlinear_map_matches_a_naive_reference(z, prm, clamp, k):
    s, p, c = prm
    ours = NonlinearMap(s, p, c, k=k, clamp=clamp)(z).numpy()
    np.testing.assert_allclose(ours, naive_nonlinear(z.numpy(), s, p, c, k, clamp), rtol=1e-9, atol=1e-9)


@given(z=logits, prm=params, clamp=clamps)
def test_maps_preserve_the_order_of_logits_where_the_clamp_increases(z, prm, clamp):
    s, p, c = prm
    out = NonlinearMap(s, p, c, clamp=clamp)(z)
    ln = LayerNormMap(1.0)(z)
    for b in range(z.shape[0]):
        for i in range(z.shape[1]):
            for j in range(z.shape[1]):
                inside = clamp != "gelu" or min(ln[b, i], ln[b, j]) + c >= GELU_MONOTONE_FROM
                if z[b, i] > z[b, j] and inside:
                    assert out[b, i] >= out[b, j]
    for order_preserving in (TemperatureMap(0.3), LayerNormMap(5.0)):
        mapped = order_preserving(z)
        bigger = z[:, :, None] > z[:, None, :]
        assert (mapped[:, :, None] >= mapped[:, None, :])[bigger].all()


@given(z=logits, prm=params)
def test_temperature_and_nonlinear_maps_are_monotone_in_the_normalised_logit(z, prm):
    """Raising one normalised logit never lowers its mapped value (relu clamp, any s, p, c)."""
    s, p, c = prm
    grid = torch.linspace(-5, 5, 201, dtype=torch.float64)
    values = s * torch.sign(torch.relu(grid + c)) * torch.relu(grid + c).clamp_min(1e-12).pow(p)
    assert (values.diff() >= 0).all()
    t = TemperatureMap(2.0)
    bumped = z.clone()
    bumped[:, 0] += 1.0
    assert (t(bumped)[:, 0] > t(z)[:, 0]).all()


@given(z=logits)
def test_hard_max_is_exactly_one_hot(z):
    for logits in (z, z.float()):
        probs = HardMax()(logits).softmax(dim=1)
        assert torch.equal(probs, torch.nn.functional.one_hot(logits.argmax(1), z.shape[1]).to(logits.dtype))


def _mixture(mode, space, alpha, g_map, h_map, policy=False):
    g, h = make_mlp(12, 6, seed=0), make_mlp(12, 6, seed=1)
    kw = {"policy": LogitPolicy(6)} if policy else {"alpha": alpha}
    return AdaptiveSmoothing(g, h, mode=mode, space=space, g_map=g_map, h_map=h_map, **kw)


@pytest.mark.parametrize("mode", ["none", "argmax", "jacobian"])
@pytest.mark.parametrize("space", ["prob", "logit"])
@given(prm=params, clamp=clamps, seed=st.integers(0, 5))
def test_weight_zero_and_one_give_each_models_mapped_output_exactly(mode, space, prm, clamp, seed):
    torch.manual_seed(seed)
    x = torch.rand(5, 12)
    g_map, h_map = TemperatureMap(0.7), NonlinearMap(*prm, clamp=clamp)
    for alpha, model, out_map in ((0.0, "g", g_map), (math.inf, "h", h_map)):
        m = _mixture(mode, space, alpha, g_map, h_map)
        expected = out_map(getattr(m, model)(x))
        if space == "prob":
            expected = expected.log_softmax(dim=1)
        assert torch.equal(m(x), expected)


@given(prm=params, w=st.floats(0.01, 0.99), seed=st.integers(0, 5))
def test_probability_mixture_is_the_convex_mix_of_mapped_softmaxes(prm, w, seed):
    torch.manual_seed(seed)
    x = torch.rand(4, 12, dtype=torch.float64)
    m = _mixture("none", "prob", w / (1 - w), HardMax(), NonlinearMap(*prm))
    m = m.double()
    naive = (1 - w) * HardMax()(m.g(x)).softmax(1) + w * NonlinearMap(*prm)(m.h(x)).softmax(1)
    torch.testing.assert_close(m(x).exp(), naive, rtol=1e-9, atol=1e-12)


def test_maps_work_with_a_policy_and_gradients_flow_through_h_map():
    m = _mixture("argmax", "prob", None, HardMax(), NonlinearMap(2.0, 2.0, -0.5), policy=True)
    x = torch.rand(3, 12, requires_grad=True)
    out = m(x)
    assert out.shape == (3, 6) and torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_surrogate_shares_the_models_and_relaxes_the_maps():
    m = _mixture("none", "prob", 3.0, HardMax(), NonlinearMap(5.0, 4.0, -1.1))
    twin = m.surrogate()
    assert twin.g is m.g and twin.h is m.h and twin is not m
    assert isinstance(twin.g_map, LayerNormMap) and isinstance(twin.h_map, LayerNormMap)
    assert isinstance(m.g_map, HardMax)  # the deployed model is unchanged
    plain = _mixture("none", "prob", 3.0, None, None)
    assert plain.surrogate() is plain


@given(prm=params, clamp=clamps, k=st.sampled_from([None, 3]))
def test_map_configs_round_trip(prm, clamp, k):
    for m in (NonlinearMap(*prm, k=k, clamp=clamp), HardMax(3.0), TemperatureMap(prm[0]), LayerNormMap(prm[1], k)):
        again = map_from_config(map_config(m))
        assert type(again) is type(m) and again.get_config() == m.get_config()


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "os.system", "config": {}},
        {"type": "nonlinear", "config": {"s": -1.0}},
        {"type": "nonlinear", "config": {"s": 1.0, "eval": "x"}},
        {"type": "hard_max"},
        "hard_max",
    ],
)
def test_bad_map_configs_are_refused(entry):
    with pytest.raises(ConfigError):
        map_from_config(entry)


def test_a_mixture_with_maps_saves_and_loads_back(tmp_path):
    from robustmix.registry import build_architecture

    torch.manual_seed(0)
    g, h = build_architecture("digits_cnn").eval(), build_architecture("digits_cnn").eval()
    m = AdaptiveSmoothing(g, h, alpha=5.0, mode="none", space="prob", g_map=HardMax(4.0),
                          h_map=NonlinearMap(5.0, 4.0, -1.1, k=5))
    m.save_pretrained(tmp_path)
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path)
    assert isinstance(loaded.h_map, NonlinearMap) and loaded.h_map.get_config() == m.h_map.get_config()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(x), m(x))


def test_certificates_refuse_mixtures_with_maps():
    m = _mixture("none", "logit", 1.0, None, TemperatureMap(2.0))
    with pytest.raises(ValueError, match="output maps"):
        certified_radius(m, torch.rand(1, 12), 0)


def test_a_map_that_changes_the_shape_is_named():
    m = _mixture("none", "prob", 1.0, None, lambda z: z[:, :3])
    with pytest.raises(ValueError, match="h_map returned"):
        m(torch.rand(2, 12))
