"""What ``certified_radius(x, i, j)`` means, for every class pair: the radius within which class i stays strictly
above j (above every other class when j is None); 0 and not certified when i does not lead at x; the margin's
sign always says whether i leads; one example per call (``certified_radii`` for a batch)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from robustmix.certify import certified_radii, certified_radius
from robustmix.smoothing import AdaptiveSmoothing
from tests.conftest import make_mlp

F64 = torch.float64
D, C = 3, 4


def _model(seed: int, mode: str, space: str) -> AdaptiveSmoothing:
    g, h = make_mlp(D, C, seed, hidden=6, dtype=F64), make_mlp(D, C, seed + 1, hidden=6, dtype=F64)
    return AdaptiveSmoothing(g, h, alpha=1.5, mode=mode, norm="l2", space=space)


def _flips_within(model: AdaptiveSmoothing, x: torch.Tensor, i: int, rivals: list[int], radius: float) -> bool:
    """Random points of the l_2 ball of ``radius`` (inside and on the sphere) where some rival reaches i."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(400, D, generator=gen, dtype=F64)
    u = u / u.norm(dim=1, keepdim=True)
    scale = torch.cat([torch.ones(200, dtype=F64), torch.rand(200, generator=gen, dtype=F64)])
    with torch.no_grad():
        out = model(x + radius * scale[:, None] * u)
    return bool((out[:, rivals].max(dim=1).values >= out[:, i]).any())


@given(seed=st.integers(0, 10_000), mode=st.sampled_from(["jacobian", "none"]), space=st.sampled_from(["logit", "prob"]))
def test_every_class_pair_gets_the_documented_meaning(seed, mode, space):
    model = _model(seed % 50, mode, space)
    x = torch.randn(1, D, generator=torch.Generator().manual_seed(seed), dtype=F64)
    with torch.no_grad():
        out = model(x)[0]
    for i in range(C):
        for j in [None, *[k for k in range(C) if k != i]]:
            rivals = [k for k in range(C) if k != i] if j is None else [j]
            res = certified_radius(model, x, i, j, steps=6)
            leads = bool((out[i] > out[rivals]).all())
            assert (res.margin > 0) == leads
            if space == "logit":  # in prob space the margin is one of the mixed probabilities
                assert res.margin == pytest.approx(float((out[i] - out[rivals]).min()), abs=1e-9)
            if leads:
                assert res.certified and res.leader == i and res.radius >= 0
                assert not _flips_within(model, x, i, rivals, res.radius)
            else:
                assert res.radius == 0.0 and not res.certified
                assert res.leader in rivals and out[res.leader] == out[rivals].max() and out[res.leader] >= out[i]


def test_the_reported_case_a_class_that_is_not_the_prediction():
    """Outputs like [0.154, 0.177, 0.163]: asking for class 2 (second best) must not certify anything."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 3)).to(F64).eval()
    with torch.no_grad():
        g[0].weight.zero_()
        g[0].bias.copy_(torch.tensor([0.154, 0.177, 0.163], dtype=F64))
    model = AdaptiveSmoothing(g, g, alpha=1.0, mode="jacobian")
    x = torch.zeros(1, 2, dtype=F64)
    res = certified_radius(model, x, 2)
    assert (res.radius, res.certified, res.leader) == (0.0, False, 1)
    assert res.margin == pytest.approx(0.163 - 0.177)
    assert "does not lead" in res.note
    assert certified_radius(model, x, 2, 0).certified  # 2 does lead 0, everywhere (the model is constant)
    assert model.certified_radius(x, 1).certified  # the method on the mixture is the same function


def test_the_method_on_the_mixture_equals_the_function():
    model = _model(3, "jacobian", "logit")
    x = torch.randn(1, D, dtype=F64)
    i = int(model(x).argmax())
    assert model.certified_radius(x, i, steps=8) == certified_radius(model, x, i, steps=8)


def test_a_batch_is_refused_by_name_and_certified_radii_gives_one_result_each():
    model = _model(5, "jacobian", "logit")
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(2), dtype=F64)
    with pytest.raises(ValueError, match=r"one example.*batch of 3.*certified_radii"):
        certified_radius(model, x, 0)
    labels = model(x).argmax(1)
    batch = certified_radii(model, x, labels, steps=6)
    alone = [certified_radius(model, x[k : k + 1], int(labels[k]), steps=6) for k in range(3)]
    unbatched = certified_radius(model, x[0], int(labels[0]), steps=6)  # one example without a batch dim
    for one, from_batch in [*zip(alone, batch, strict=True), (unbatched, batch[0])]:
        # the same radius and verdict; the reported bounds may differ in the last bits (batched reductions)
        assert replace(one, constants={}) == replace(from_batch, constants={})
        assert one.constants == pytest.approx(from_batch.constants, rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="2 entries but the batch has 3"):
        certified_radii(model, x, [0, 1])
