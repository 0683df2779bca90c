"""The mixture under torch.func transforms (grad, jacrev, vmap, vmap of grad, functional_call) equals eager
autograd, in float64, in every mode, space and norm, with a fixed α and with policies (issue: R through
torch.func). References are computed with plain ``torch.autograd`` on the default (non-func) paths."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_cnn
from torch.func import functional_call, grad, jacrev, vmap

from robustmix import AdaptiveSmoothing, HardMax, LogitPolicy, NonlinearMap, PolicyNet
from robustmix.sensitivity import class_gradient_norms, predicted_class_gradient_norm

TOL = 1e-10
CLASSES = 5
MODES = ("argmax", "jacobian", "none")
SPACES = ("logit", "prob")
NORMS = ("linf", "l2")
POLICIES = ("fixed", "logit_policy", "policy_net")


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return make_cnn(CLASSES, seed=0, batchnorm=True).double(), make_cnn(CLASSES, seed=1).double()


def _inputs(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _mixture(mode: str, space: str, norm: str, policy: str, **options) -> AdaptiveSmoothing:
    g, h = _pair()
    if policy == "fixed":
        return AdaptiveSmoothing(g, h, alpha=1.5, mode=mode, space=space, norm=norm, **options)
    if policy == "logit_policy":
        torch.manual_seed(2)
        net = LogitPolicy(CLASSES).double()
    else:
        torch.manual_seed(2)
        net = PolicyNet(g, h, ["0"], ["0"], width=4, depth=1, hidden=8).double()
        net(_inputs())  # materialise the lazy layers
    return AdaptiveSmoothing(g, h, policy=net.eval(), mode=mode, space=space, norm=norm, **options)


def _scalar(out: torch.Tensor) -> torch.Tensor:
    """A loss-like scalar that depends on every output entry, nonlinearly."""
    return out[:, 0].sum() + out.pow(2).sum()


def _eager_input_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(_scalar(model(xr)), xr)
    return gx


CASES = list(itertools.product(MODES, SPACES, NORMS, POLICIES))


@pytest.mark.parametrize(("mode", "space", "norm", "policy"), CASES)
def test_grad_and_per_example_grad_equal_eager(mode, space, norm, policy):
    model = _mixture(mode, space, norm, policy)
    x = _inputs()
    expected = _eager_input_grad(model, x)
    got = grad(lambda inp: _scalar(model(inp)))(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)
    assert expected.abs().max() > 0  # the comparison is not between two zero tensors

    per_example = vmap(grad(lambda xi: _scalar(model(xi.unsqueeze(0)))))(x)
    loop = torch.cat([_eager_input_grad(model, x[b : b + 1]) for b in range(x.shape[0])])
    torch.testing.assert_close(per_example, loop, rtol=0, atol=TOL)


@pytest.mark.parametrize(("mode", "space", "norm", "policy"), CASES)
def test_vmap_and_jacrev_equal_eager(mode, space, norm, policy):
    model = _mixture(mode, space, norm, policy)
    x = _inputs()
    with torch.no_grad():
        eager = model(x)
    batched = vmap(lambda xi: model(xi.unsqueeze(0)).squeeze(0))(x)
    torch.testing.assert_close(batched, eager, rtol=0, atol=TOL)

    one = x[:1]
    jac = jacrev(model)(one)  # [1, c, 1, 1, 8, 8]
    xr = one.clone().requires_grad_(True)
    out = model(xr)
    rows = [torch.autograd.grad(out[0, k], xr, retain_graph=True)[0] for k in range(CLASSES)]
    torch.testing.assert_close(jac, torch.stack(rows).reshape(jac.shape), rtol=0, atol=TOL)


@pytest.mark.parametrize(("mode", "policy"), list(itertools.product(MODES, POLICIES)))
def test_functional_call_with_other_parameters_and_their_gradients(mode, policy):
    """functional_call with new parameters equals a copy holding them; grad w.r.t. them equals autograd."""
    model = _mixture(mode, "prob", "linf", policy)
    x = _inputs()
    torch.manual_seed(5)
    params = {name: p.detach() + 0.05 * torch.randn_like(p) for name, p in model.named_parameters()}
    twin = _mixture(mode, "prob", "linf", policy)
    twin.load_state_dict({**dict(model.named_buffers()), **params})
    torch.testing.assert_close(functional_call(model, params, (x,)), twin(x), rtol=0, atol=TOL)

    got = grad(lambda p: _scalar(functional_call(model, p, (x,))))(params)
    expected = torch.autograd.grad(_scalar(twin(x)), list(twin.parameters()))
    for (name, _), want in zip(twin.named_parameters(), expected, strict=True):
        torch.testing.assert_close(got[name], want, rtol=0, atol=TOL, msg=name)


@pytest.mark.parametrize("mode", ["argmax", "jacobian"])
@pytest.mark.parametrize("space", SPACES)
def test_explicit_func_method_equals_the_autograd_paths_to_second_order(mode, space):
    """``jacobian_method="func"`` in eager mode: same output, same input gradient, and the same gradient of a
    gradient norm (double backward through R, as the attacks and Jacobian regularisers use)."""
    x = _inputs()
    results = {}
    for method in ("loop", "vmap", "func"):
        model = _mixture(mode, space, "l2", "fixed", jacobian_method=method)
        xr = x.clone().requires_grad_(True)
        out = model(xr)
        (gx,) = torch.autograd.grad(_scalar(out), xr, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.pow(2).sum(), xr)
        results[method] = (out.detach(), gx.detach(), ggx)
    for method in ("vmap", "func"):
        for got, want in zip(results[method], results["loop"], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    assert results["loop"][2].abs().max() > 0


def test_func_path_under_no_grad_returns_detached_equal_outputs():
    x = _inputs()
    eager = _mixture("jacobian", "logit", "linf", "fixed")
    func = _mixture("jacobian", "logit", "linf", "fixed", jacobian_method="func")
    with torch.no_grad():
        a, b = eager(x), func(x)
    assert not b.requires_grad
    torch.testing.assert_close(b, a, rtol=0, atol=TOL)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("space", SPACES)
def test_gradient_norm_functions_accept_the_func_method(norm, space):
    g, _ = _pair()
    x = _inputs()
    torch.testing.assert_close(
        class_gradient_norms(g, x, norm, space, method="func"),
        class_gradient_norms(g, x, norm, space, method="loop"),
        rtol=0,
        atol=TOL,
    )
    norms_f, k_f = predicted_class_gradient_norm(g, x, norm, space, method="func")
    norms_a, k_a = predicted_class_gradient_norm(g, x, norm, space)
    assert torch.equal(k_f, k_a)
    torch.testing.assert_close(norms_f, norms_a, rtol=0, atol=TOL)


def test_class_subsets_on_the_func_path_under_vmap():
    g, _ = _pair()
    x = _inputs()
    classes = [3, 1]
    per_example = vmap(lambda xi: class_gradient_norms(g, xi.unsqueeze(0), classes=classes).squeeze(0))(x)
    torch.testing.assert_close(per_example, class_gradient_norms(g, x, classes=classes), rtol=0, atol=TOL)


def test_output_maps_compose_with_transforms():
    g, h = _pair()
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode="argmax", space="prob", g_map=HardMax(),
                              h_map=NonlinearMap(s=2.0, p=1.5, c=0.3))
    x = _inputs()
    torch.testing.assert_close(vmap(lambda xi: model(xi.unsqueeze(0)).squeeze(0))(x), model(x).detach(),
                               rtol=0, atol=TOL)
    torch.testing.assert_close(grad(lambda inp: _scalar(model(inp)))(x), _eager_input_grad(model, x),
                               rtol=0, atol=TOL)


def test_jacobian_norm_regulariser_through_the_mixture_trains_h():
    """The docs' regulariser: ||∇_x loss||² of the mixture, differentiated w.r.t. h's parameters with
    torch.func, equals the same quantity by double backward in eager autograd."""
    model = _mixture("argmax", "logit", "linf", "fixed")
    x, y = _inputs(), torch.tensor([0, 3, 1])
    h_params = {f"h.{n}": p.detach() for n, p in model.h.named_parameters()}

    def penalty(params, inp):
        def loss(xi):
            return torch.nn.functional.cross_entropy(functional_call(model, params, (xi,)), y)

        return grad(loss)(inp).pow(2).sum()

    got = grad(penalty)(h_params, x)
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xr), y), xr, create_graph=True)
    expected = torch.autograd.grad(gx.pow(2).sum(), list(model.h.parameters()))
    for (name, _), want in zip(model.h.named_parameters(), expected, strict=True):
        torch.testing.assert_close(got[f"h.{name}"], want, rtol=0, atol=TOL, msg=name)


def test_eager_checks_still_raise_and_are_skipped_only_inside_transforms():
    model = _mixture("argmax", "logit", "linf", "fixed")
    bad = _inputs()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(bad)
    out = vmap(lambda xi: model(xi.unsqueeze(0)).squeeze(0))(bad)  # no Python branch on the values
    assert torch.isnan(out[1]).any() and torch.isfinite(out[0]).all()
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        model.forward_details(_inputs(), alpha=torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))


def test_vmap_over_alpha():
    """α as a batched argument: a sweep over α in one vmap equals a loop over α."""
    model = _mixture("argmax", "logit", "linf", "fixed")
    x = _inputs()
    alphas = torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64)
    swept = vmap(lambda a: model.forward_details(x, alpha=a.expand(x.shape[0])).output)(alphas)
    for k, a in enumerate(alphas.tolist()):
        with torch.no_grad():
            torch.testing.assert_close(swept[k], model.forward_details(x, alpha=a).output, rtol=0, atol=TOL)
