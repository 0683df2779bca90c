"""Naive reference implementations, written independently of the library for comparison tests."""

from __future__ import annotations

import math

import torch


def naive_class_gradient_norms(model, x, norm: str, space: str = "logit") -> torch.Tensor:
    """A Python loop of ``torch.autograd.grad`` per sample and per class, one sample at a time."""
    rows = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1].detach().clone().requires_grad_(True)
        out = model(xb)
        if space == "prob":
            out = torch.softmax(out, dim=1)
        row = []
        for i in range(out.shape[1]):
            (grad,) = torch.autograd.grad(out[0, i], xb, retain_graph=True)
            flat = grad.reshape(-1)
            row.append(flat.abs().sum() if norm == "linf" else flat.pow(2).sum().sqrt())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def naive_mixture(g, h, x, alpha: float, mode: str, norm: str, eps_c: float = 1e-6) -> torch.Tensor:
    """Eq. 5 (jacobian), eq. 10 (argmax) or R = 1 (none) in logit space, entry by entry."""
    with torch.no_grad():
        go, ho = g(x), h(x)
    if mode == "none":
        R = torch.ones_like(go)
    else:
        ng, nh = naive_class_gradient_norms(g, x, norm), naive_class_gradient_norms(h, x, norm)
        if mode == "jacobian":
            R = ng / (nh + eps_c)
        else:
            k1, k2 = go.argmax(1), ho.argmax(1)
            r = ng.gather(1, k1[:, None]) / (nh.gather(1, k2[:, None]) + eps_c)
            R = r.expand_as(go)
    out = torch.empty_like(go)
    for b in range(go.shape[0]):
        for i in range(go.shape[1]):
            if math.isinf(alpha):
                out[b, i] = ho[b, i]
            else:
                t = alpha * R[b, i]
                out[b, i] = (go[b, i] + t * ho[b, i]) / (1 + t)
    return out
