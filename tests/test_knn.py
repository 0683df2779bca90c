"""KNNClassifier against a brute-force numpy reference (eq. 2 and appendix A.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from robustmix import KNNClassifier


def numpy_knn(train_x, train_y, query, k, p, c, weighting):
    out = np.zeros((len(query), c))
    for q, point in enumerate(query):
        diff = np.abs(train_x - point)
        if p == 1:
            d = diff.sum(1)
        elif p == 2:
            d = np.sqrt((diff**2).sum(1))
        else:
            d = diff.max(1)
        nearest = np.argsort(d, kind="stable")[:k]
        if weighting == "uniform":
            w = np.full(k, 1.0 / k)
        else:
            w = 1.0 / (d[nearest] + 1e-12)
            w = w / w.sum()
        for j, idx in enumerate(nearest):
            out[q, train_y[idx]] += w[j]
    return 2 * out - 1


@given(
    n=st.integers(5, 60),
    m=st.integers(1, 12),
    d=st.integers(1, 6),
    k=st.integers(1, 5),
    c=st.integers(2, 5),
    p=st.sampled_from([1.0, 2.0, math.inf]),
    weighting=st.sampled_from(["uniform", "distance"]),
    budget=st.sampled_from([7, 64, 2**20]),
    seed=st.integers(0, 2**16),
)
def test_matches_bruteforce_numpy(n, m, d, k, c, p, weighting, budget, seed):
    rng = np.random.default_rng(seed)
    train_x = rng.normal(size=(n, d))
    train_y = rng.integers(0, c, size=n)
    query = rng.normal(size=(m, d))
    k = min(k, n)
    knn = KNNClassifier(
        torch.tensor(train_x), torch.tensor(train_y), k=k, p=p, num_classes=c,
        weighting=weighting, max_block_elements=budget,
    )
    ours = knn(torch.tensor(query)).numpy()
    np.testing.assert_allclose(ours, numpy_knn(train_x, train_y, query, k, p, c, weighting), atol=1e-9)
    assert ours.min() >= -1 and ours.max() <= 1


def test_block_budget_respected():
    knn = KNNClassifier(torch.randn(100, 3), torch.randint(0, 3, (100,)), k=3, max_block_elements=50)
    seen = []
    original = torch.cdist

    def spy(a, b, **kw):
        seen.append(a.shape[0] * b.shape[0])
        return original(a, b, **kw)

    torch.cdist = spy
    try:
        knn(torch.randn(20, 3))
    finally:
        torch.cdist = original
    assert max(seen) <= 50


def test_image_inputs_are_flattened_and_exact_neighbour_wins():
    train_x = torch.rand(30, 1, 4, 4)
    train_y = torch.arange(30) % 3
    knn = KNNClassifier(train_x, train_y, k=1)
    votes = knn(train_x[:6])
    assert torch.equal(votes.argmax(1), train_y[:6])
    assert torch.all(votes.max(1).values == 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, "k must be in"),
        ({"p": 3}, "p must be 1, 2"),
        ({"weighting": "gauss"}, "weighting must be"),
        ({"num_classes": 2}, "labels must lie in"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KNNClassifier(torch.randn(10, 2), torch.arange(10) % 3, **kwargs)


def test_feature_mismatch():
    knn = KNNClassifier(torch.randn(10, 2), torch.arange(10) % 3)
    with pytest.raises(ValueError, match="3 features per sample"):
        knn(torch.randn(4, 3))
