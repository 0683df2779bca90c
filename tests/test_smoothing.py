"""AdaptiveSmoothing contract (the README and docs/guide.md), against a naive reference where possible."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from robustmix import AdaptiveSmoothing, KNNClassifier, mix
from tests.conftest import make_cnn, make_mlp
from tests.reference import naive_class_gradient_norms, naive_mixture

MODES = ["jacobian", "argmax", "none"]
SPACES = ["logit", "prob"]


def pair(kind: str, c: int, seed: int):
    if kind == "mlp":
        return make_mlp(12, c, seed), make_mlp(12, c, seed + 100), torch.randn(5, 12, generator=torch.Generator().manual_seed(seed))
    g, h = make_cnn(c, seed), make_cnn(c, seed + 100)
    return g, h, torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def endpoints(g, h, x, space):
    with torch.no_grad():
        go, ho = g(x), h(x)
    if space == "prob":
        return go.log_softmax(1), ho.log_softmax(1)
    return go, ho


case = st.tuples(st.sampled_from(["mlp", "cnn"]), st.integers(2, 12), st.integers(0, 10_000))


@given(case, st.sampled_from(MODES), st.sampled_from(SPACES), st.sampled_from(["linf", "l2"]))
def test_alpha_zero_and_infinity_return_the_models_exactly(c_, mode, space, norm):
    g, h, x = pair(*c_)
    go, ho = endpoints(g, h, x, space)
    model = AdaptiveSmoothing(g, h, alpha=0.0, mode=mode, space=space, norm=norm)
    with torch.no_grad():
        assert torch.equal(model(x), go)
        model.alpha = math.inf
        assert torch.equal(model(x), ho)


@given(case, st.sampled_from(MODES), st.sampled_from(SPACES), st.floats(1e-3, 1e3))
def test_output_between_g_and_h_and_monotone_in_alpha(c_, mode, space, alpha):
    g, h, x = pair(*c_)
    go, ho = endpoints(g, h, x, space)
    lo, hi = torch.minimum(go, ho), torch.maximum(go, ho)
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode=mode, space=space)
    with torch.no_grad():
        out = model(x)
        model.alpha = alpha * 3
        further = model(x)
    if not (space == "prob" and mode == "jacobian"):  # per-class weights there are renormalised
        assert bool(((out >= lo) & (out <= hi)).all())
        toward_h = torch.sign(ho - go)
        assert bool(((further - out) * toward_h >= -1e-6).all())
    if space == "prob":
        torch.testing.assert_close(out.exp().sum(1), torch.ones(x.shape[0]), atol=1e-5, rtol=0)


@given(case, st.sampled_from(MODES), st.sampled_from(["linf", "l2"]), st.floats(1e-2, 1e2))
def test_matches_naive_reference_formula(c_, mode, norm, alpha):
    g, h, x = pair(*c_)
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode=mode, norm=norm, jacobian_method="vmap")
    with torch.no_grad():
        ours = model(x)
    torch.testing.assert_close(ours, naive_mixture(g, h, x, alpha, mode, norm), atol=1e-5, rtol=1e-5)


@given(case, st.sampled_from(MODES), st.sampled_from(SPACES))
def test_large_alpha_approaches_h(c_, mode, space):
    g, h, x = pair(*c_)
    _, ho = endpoints(g, h, x, space)
    model = AdaptiveSmoothing(g, h, alpha=1e6, mode=mode, space=space)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ho, atol=1e-4, rtol=0)


@given(case, st.sampled_from(MODES), st.sampled_from(SPACES))
def test_per_sample_alpha_equals_looping_fixed_alpha(c_, mode, space):
    g, h, x = pair(*c_)
    alphas = torch.tensor([0.0, 0.3, 2.0, 50.0, math.inf])
    batched = AdaptiveSmoothing(g, h, alpha=alphas, mode=mode, space=space)
    with torch.no_grad():
        out = batched(x)
        for b in range(x.shape[0]):
            single = AdaptiveSmoothing(g, h, alpha=float(alphas[b]), mode=mode, space=space)
            torch.testing.assert_close(out[b : b + 1], single(x[b : b + 1]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_no_grad_equals_grad_enabled(mode, space):
    g, h, x = pair("cnn", 6, 1)
    model = AdaptiveSmoothing(g, h, alpha=2.0, mode=mode, space=space)
    with torch.no_grad():
        a = model(x)
    with torch.inference_mode():
        b = model(x)
    xg = x.clone().requires_grad_(True)
    c = model(xg)
    assert c.requires_grad and not a.requires_grad
    assert torch.equal(a, c.detach()) and torch.equal(a, b)


def smooth_double_pair():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    h = nn.Sequential(nn.Linear(3, 5), nn.Softplus(), nn.Linear(5, 4)).double()
    return g, h


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_gradcheck_through_R(mode, space, norm):
    g, h = smooth_double_pair()
    model = AdaptiveSmoothing(g, h, alpha=0.7, mode=mode, space=space, norm=norm)
    x = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5)


def test_detach_R_stops_gradient_through_R_only():
    g, h = smooth_double_pair()
    x = torch.randn(3, 3, dtype=torch.double, requires_grad=True)
    attached = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian")
    detached = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", detach_R=True)
    details = detached.forward_details(x)
    assert not details.R.requires_grad
    (grad_detached,) = torch.autograd.grad(details.output.sum(), x)
    # Reference: eq. 5 with R held constant, differentiated by autograd.
    R = details.R.detach()
    out_ref = mix(g(x), h(x), 1.0, R)
    (grad_ref,) = torch.autograd.grad(out_ref.sum(), x)
    torch.testing.assert_close(grad_detached, grad_ref)
    (grad_attached,) = torch.autograd.grad(attached(x).sum(), x)
    assert not torch.allclose(grad_attached, grad_detached)


def test_model_parameter_gradients_flow_for_training_loops():
    g, h = make_mlp(12, 4, 0), make_mlp(12, 4, 1)
    for p in h.parameters():
        p.requires_grad_(True)
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax")
    loss = nn.functional.cross_entropy(model(torch.randn(6, 12)), torch.randint(0, 4, (6,)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in h.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_training_h_through_the_mixture_with_g_frozen(mode):
    g, h = make_mlp(12, 4, 0), make_mlp(12, 4, 1)
    g.requires_grad_(False)
    x, y = torch.randn(6, 12), torch.randint(0, 4, (6,))
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode=mode)
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in h.parameters())
    assert all(p.grad is None for p in g.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm_eval_batch_of_one_equals_batch_of_eight(mode):
    g, h = make_cnn(5, 0, batchnorm=True), make_cnn(5, 1, batchnorm=True)
    model = AdaptiveSmoothing(g, h, alpha=3.0, mode=mode)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        batched = model(x)
        singles = torch.cat([model(x[b : b + 1]) for b in range(8)])
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=1e-6)
    assert not g.training and not h.training


def test_wrapper_never_flips_train_eval_mode():
    g, h = make_cnn(5, 0), make_cnn(5, 1)
    g.train()
    model = AdaptiveSmoothing(g, h, alpha=1.0)
    with torch.no_grad():
        model(torch.rand(2, 1, 8, 8))
    assert g.training and not h.training


def test_gradients_at_alpha_extremes_are_finite():
    g, h = smooth_double_pair()
    for space in SPACES:
        for alpha in (0.0, math.inf):
            model = AdaptiveSmoothing(g, h, alpha=alpha, mode="jacobian", space=space)
            x = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
            (grad,) = torch.autograd.grad(model(x).sum(), x)
            assert torch.isfinite(grad).all()


def test_knn_oracle_uses_gradient_of_g_only():
    g = make_mlp(12, 3, seed=4)
    train_x, train_y = torch.randn(40, 12), torch.randint(0, 3, (40,))
    h = KNNClassifier(train_x, train_y, k=3, num_classes=3)
    x = torch.randn(4, 12)
    alpha = 0.5
    model = AdaptiveSmoothing(g, h, alpha=alpha, mode="jacobian")
    with torch.no_grad():
        ours, go, ho = model(x), g(x), h(x)
    norms = naive_class_gradient_norms(g, x, "linf")
    eq2 = (go + alpha * ho * norms) / (1 + alpha * norms)
    torch.testing.assert_close(ours, eq2, atol=1e-6, rtol=1e-6)


def test_policy_beta_is_clamped():
    g, h, x = pair("mlp", 4, 0)

    class Constant(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x, g_out, h_out):
            return torch.full((x.shape[0],), self.value)

    for value, expected in ((100.0, 14.0), (-100.0, -14.0), (0.5, 0.5)):
        details = AdaptiveSmoothing(g, h, policy=Constant(value)).forward_details(x)
        assert torch.all(details.beta == expected)
        torch.testing.assert_close(details.alpha, torch.full((5,), math.exp(expected)))


class TestBadInput:
    def setup_method(self):
        self.g, self.h = make_mlp(12, 4, 0), make_mlp(12, 4, 1)

    def test_class_count_mismatch(self):
        model = AdaptiveSmoothing(self.g, make_mlp(12, 5, 2), alpha=1.0)
        with pytest.raises(ValueError, match="g predicts 4 classes but h predicts 5"):
            model(torch.randn(2, 12))

    def test_unbatched_input(self):
        with pytest.raises(ValueError, match="batched"):
            AdaptiveSmoothing(self.g, self.h, alpha=1.0)(torch.randn(12))

    def test_input_rank_mismatch_for_cnn(self):
        model = AdaptiveSmoothing(make_cnn(4, 0), make_cnn(4, 1), alpha=1.0)
        with pytest.raises(ValueError, match=r"shape \(1, 8, 8\)"):
            model(torch.rand(1, 8, 8))

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_input(self, bad):
        x = torch.randn(3, 12)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            AdaptiveSmoothing(self.g, self.h, alpha=1.0)(x)

    def test_integer_input(self):
        with pytest.raises(ValueError, match="floating-point"):
            AdaptiveSmoothing(self.g, self.h, alpha=1.0)(torch.ones(2, 12, dtype=torch.uint8))

    @pytest.mark.parametrize("alpha", [-0.1, math.nan, torch.tensor([1.0, -2.0])])
    def test_negative_or_nan_alpha(self, alpha):
        with pytest.raises(ValueError, match="alpha must be >= 0"):
            AdaptiveSmoothing(self.g, self.h, alpha=alpha)

    def test_per_sample_alpha_length(self):
        with pytest.raises(ValueError, match="3 entries but the batch has 2"):
            AdaptiveSmoothing(self.g, self.h, alpha=torch.ones(3))(torch.randn(2, 12))

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            ({"mode": "exact"}, "unknown mode 'exact'"),
            ({"norm": "l1"}, "unknown norm 'l1'"),
            ({"space": "softmax"}, "unknown space 'softmax'"),
        ],
    )
    def test_unknown_options(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            AdaptiveSmoothing(self.g, self.h, alpha=1.0, **kwargs)

    def test_alpha_and_policy_exclusive(self):
        with pytest.raises(ValueError, match="exactly one of alpha"):
            AdaptiveSmoothing(self.g, self.h)
