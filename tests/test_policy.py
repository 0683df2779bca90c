"""PolicyNet / LogitPolicy (Fig. 1, eq. 7): feature taps, β clamp, frozen base models, config round trip."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_cnn, make_mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from robustmix.nn.policies import LogitPolicy, PolicyNet
from robustmix.registry import build_policy, policy_name
from robustmix.smoothing import AdaptiveSmoothing


def _pair():
    return make_cnn(3, seed=0), make_cnn(3, seed=1)


def _x(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_unknown_layer_names_list_the_available_ones():
    g, h = _pair()
    with pytest.raises(ValueError) as err:
        PolicyNet(g, h, ["0", "conv9"], ["1"])
    message = str(err.value)
    assert "conv9" in message
    for name, _ in g.named_modules():
        if name:
            assert repr(name) in message
    with pytest.raises(ValueError, match="available layers of h"):
        PolicyNet(g, h, ["0"], ["nope"])
    with pytest.raises(ValueError, match="list of layer names"):
        PolicyNet(g, h, "0", ["1"])


def test_base_models_are_not_part_of_the_policy():
    g, h = _pair()
    policy = PolicyNet(g, h, ["1"], ["1"])
    policy(_x())  # materialise the lazy layers
    base = {id(p) for p in [*g.parameters(), *h.parameters()]}
    assert base.isdisjoint(id(p) for p in policy.parameters())
    base_values = [p.detach() for p in [*g.parameters(), *h.parameters()]]
    for value in policy.state_dict().values():
        assert not any(value.shape == b.shape and value.data_ptr() == b.data_ptr() for b in base_values)
    assert not any(k.startswith(("g.", "h.", "_models")) for k in policy.state_dict())


def test_features_are_those_of_the_wrapped_forward():
    """β through the wrapper equals β recomputed from features extracted by slicing the Sequential models."""
    g, h = _pair()
    torch.manual_seed(0)
    policy = PolicyNet(g, h, ["1"], ["2"], width=4, depth=1, hidden=8).eval()
    model = AdaptiveSmoothing(g, h, policy=policy, mode="argmax")
    x = _x(6)
    with torch.no_grad():
        beta = model.forward_details(x).beta
        feats = [g[:2](x), h[:3](x)]  # outputs of g's layer "1" and h's layer "2"
        size = min(f.shape[2] for f in feats)
        outs = [
            torch.nn.functional.adaptive_avg_pool2d(b(f), size) for b, f in zip(policy.branches, feats, strict=True)
        ]
        z = policy.trunk(torch.cat(outs, 1)).mean(dim=(2, 3))
        expected = policy.fc(z).reshape(-1).clamp(-14, 14)
    torch.testing.assert_close(beta, expected)
    # Called on its own, the policy runs g and h itself and gives the same β.
    with torch.no_grad():
        torch.testing.assert_close(policy(x), expected)


@settings(max_examples=10)
@given(scale=st.floats(-1e4, 1e4), bias=st.floats(-100, 100), seed=st.integers(0, 100))
def test_beta_within_clamp(scale, bias, seed):
    g, h = _pair()
    torch.manual_seed(seed)
    policy = PolicyNet(g, h, ["0"], ["0"], width=4, depth=1, hidden=4, output_scale=scale, output_bias=bias)
    model = AdaptiveSmoothing(g, h, policy=policy, mode="none")
    with torch.no_grad():
        details = model.forward_details(_x(4, seed))
    assert details.beta is not None
    assert (details.beta >= -14).all() and (details.beta <= 14).all()
    torch.testing.assert_close(details.alpha, details.beta.exp())


@settings(max_examples=10)
@given(low=st.floats(-13, 0), width=st.floats(0.1, 20), seed=st.integers(0, 100))
def test_beta_range_is_respected(low, width, seed):
    high = min(low + width, 14.0)
    torch.manual_seed(seed)
    policy = LogitPolicy(3, hidden=4, output_scale=50.0, beta_range=(low, high))
    beta = policy(_x(8, seed), torch.randn(8, 3) * 10, torch.randn(8, 3) * 10)
    assert (beta >= low - 1e-5).all() and (beta <= high + 1e-5).all()


def test_adaptive_gradient_flows_through_the_policy():
    """With x requiring gradients, β depends on x through the tapped features (section 5.1)."""
    g, h = _pair()
    torch.manual_seed(0)
    policy = PolicyNet(g, h, ["1"], ["1"], width=4, depth=1, hidden=4).eval()
    model = AdaptiveSmoothing(g, h, policy=policy, mode="argmax")
    x = _x(3).requires_grad_(True)
    beta = model.forward_details(x).beta
    (grad,) = torch.autograd.grad(beta.sum(), x)
    assert grad.abs().sum() > 0


def test_remove_hooks_detaches_from_g_and_h():
    g, h = _pair()
    before = (len(g[1]._forward_hooks), len(h[1]._forward_hooks))
    policy = PolicyNet(g, h, ["1"], ["1"])
    assert (len(g[1]._forward_hooks), len(h[1]._forward_hooks)) == (before[0] + 1, before[1] + 1)
    policy.remove_hooks()
    assert (len(g[1]._forward_hooks), len(h[1]._forward_hooks)) == before
    with pytest.raises(RuntimeError, match="hooks were removed"):
        policy(_x())


@pytest.mark.parametrize("output_bn", [False, True])
def test_config_round_trip(output_bn):
    g, h = _pair()
    torch.manual_seed(0)
    policy = PolicyNet(g, h, ["1"], ["1", "3"], width=4, depth=2, hidden=8, output_bn=output_bn, beta_range=(-2, 5))
    x = _x(6)
    policy.train()
    policy(x)  # materialise and move the batch-norm statistics
    policy.eval()
    config = json.loads(json.dumps(policy.get_config()))
    rebuilt = PolicyNet(g, h, **config)
    rebuilt.load_state_dict(policy.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), policy(x))
    via_spec = build_policy(policy_name(policy), json.loads(json.dumps(policy.get_config())), g, h)
    via_spec.load_state_dict(policy.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(via_spec.eval()(x), policy(x))


def test_logit_policy_round_trip_and_shape_errors():
    torch.manual_seed(0)
    policy = LogitPolicy(4, hidden=8, temperature=2.0, output_bn=True).eval()
    gl, hl = torch.randn(5, 4), torch.randn(5, 4)
    rebuilt = build_policy(policy_name(policy), json.loads(json.dumps(policy.get_config())), make_mlp(3, 4, 0), make_mlp(3, 4, 1))
    rebuilt.load_state_dict(policy.state_dict())
    torch.testing.assert_close(rebuilt.eval()(None, gl, hl), policy(None, gl, hl))
    with pytest.raises(ValueError, match=r"g_logits must be \[B, 4\]"):
        policy(None, torch.randn(5, 3), hl)
    with pytest.raises(ValueError, match="unknown policy type"):
        build_policy("Nope", {}, make_mlp(3, 4, 0), make_mlp(3, 4, 1))


def test_logit_policy_in_the_wrapper_on_mlps():
    g, h = make_mlp(12, 4, seed=0), make_mlp(12, 4, seed=1)
    policy = LogitPolicy(4, hidden=8)
    model = AdaptiveSmoothing(g, h, policy=policy, mode="argmax")
    x = torch.randn(7, 12)
    with torch.no_grad():
        details = model.forward_details(x)
        expected = policy(x, g(x), h(x))
    torch.testing.assert_close(details.beta, expected)
