"""Gradient norms against a naive per-sample, per-class autograd loop (issue 2 acceptance)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from robustmix.sensitivity import class_gradient_norms, dual_norm, predicted_class_gradient_norm
from tests.conftest import make_cnn, make_mlp
from tests.reference import naive_class_gradient_norms


@pytest.mark.parametrize("c", [3, 10, 100])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(
    "method,chunk",
    [("loop", None), ("vmap", None), ("vmap", 7), ("vmap", 1), ("func", None), ("func", 7), ("auto", None)],
)
def test_jacobian_norms_match_naive_loop(c, norm, method, chunk):
    model = make_mlp(12, c, seed=c)
    x = torch.randn(4, 3, 4)
    ours = class_gradient_norms(model, x, norm=norm, method=method, chunk_size=chunk)
    ref = naive_class_gradient_norms(model, x, norm)
    assert ours.shape == (4, c)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["loop", "vmap", "func"])
def test_prob_space_norms_match_naive_loop(method):
    model = make_cnn(6, seed=3)
    x = torch.rand(3, 1, 8, 8)
    ours = class_gradient_norms(model, x, norm="l2", space="prob", method=method)
    torch.testing.assert_close(ours, naive_class_gradient_norms(model, x, "l2", "prob"), atol=1e-5, rtol=1e-5)


def test_subset_of_classes():
    model = make_mlp(12, 10, seed=0)
    x = torch.randn(5, 12)
    full = class_gradient_norms(model, x)
    torch.testing.assert_close(class_gradient_norms(model, x, classes=[7, 2]), full[:, [7, 2]])
    with pytest.raises(ValueError, match="classes"):
        class_gradient_norms(model, x, classes=[10])


@pytest.mark.parametrize("space", ["logit", "prob"])
def test_argmax_form_equals_jacobian_entry_at_prediction(space):
    model = make_cnn(10, seed=5)
    x = torch.rand(6, 1, 8, 8)
    norms, pred = predicted_class_gradient_norm(model, x, norm="linf", space=space)
    full = class_gradient_norms(model, x, norm="linf", space=space)
    assert torch.equal(pred, model(x).argmax(1))
    torch.testing.assert_close(norms, full.gather(1, pred[:, None]).squeeze(1), atol=1e-6, rtol=1e-6)


def test_works_under_no_grad_and_batchnorm_eval():
    model = make_cnn(4, seed=2, batchnorm=True)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        batched = class_gradient_norms(model, x)
    single = torch.cat([class_gradient_norms(model, x[b : b + 1]) for b in range(8)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-6)
    assert not model.training


class _HostRoundTrip(torch.autograd.Function):
    """Identity whose backward leaves the tensor world: it cannot run under vmap."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(grad.detach().numpy().copy())


class NotFunctionalFriendly(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = make_mlp(12, 4, seed=9)

    def forward(self, x):
        return self.inner(_HostRoundTrip.apply(x))


def test_falls_back_to_loop_when_vmap_fails(caplog):
    model = NotFunctionalFriendly()
    x = torch.randn(3, 12)
    with caplog.at_level(logging.DEBUG, logger="robustmix.sensitivity"):
        ours = class_gradient_norms(model, x, method="vmap")
    assert "per-class loop" in caplog.text
    torch.testing.assert_close(ours, naive_class_gradient_norms(model, x, "linf"), atol=1e-5, rtol=1e-5)


def test_auto_falls_back_to_loop_when_the_func_path_fails_and_explicit_func_raises(caplog):
    model = NotFunctionalFriendly()
    x = torch.randn(3, 12)
    with caplog.at_level(logging.DEBUG, logger="robustmix.sensitivity"):
        ours = class_gradient_norms(model, x, method="auto")
    assert "torch.func Jacobian failed" in caplog.text
    torch.testing.assert_close(ours, naive_class_gradient_norms(model, x, "linf"), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError):
        class_gradient_norms(model, x, method="func")


@pytest.mark.parametrize("method", ["auto", "func", "loop", "vmap"])
def test_norms_carry_a_graph_to_the_parameters_only_when_asked(method):
    from robustmix.sensitivity import outputs_and_class_gradient_norms

    model = make_mlp(12, 4, seed=1)
    x = torch.randn(2, 12)
    plain = outputs_and_class_gradient_norms(model, x, method=method)
    assert not plain.norms.requires_grad
    graph = outputs_and_class_gradient_norms(model, x, method=method, create_graph=True)
    (grad,) = torch.autograd.grad(graph.norms.sum(), model[1].weight)
    assert grad.abs().sum() > 0


def test_dual_norm_definitions():
    grad = torch.tensor([[3.0, -4.0], [0.0, 1.0]])
    torch.testing.assert_close(dual_norm(grad, "linf"), torch.tensor([7.0, 1.0]))
    torch.testing.assert_close(dual_norm(grad, "l2"), torch.tensor([5.0, 1.0]))
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        dual_norm(grad, "l3")
    with pytest.raises(ValueError, match="unknown method"):
        class_gradient_norms(make_mlp(2, 2, 0), torch.randn(1, 2), method="fast")
