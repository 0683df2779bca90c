"""Inputs and models that do not fit together are named, not left to raw torch errors: dtypes, devices of g,
h and the policy, and models whose forward returns a tuple, a dict or a Hugging Face-style output."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from robustmix.adapters import ExtractLogits
from robustmix.nn.policies import LogitPolicy
from robustmix.smoothing import AdaptiveSmoothing
from tests.conftest import make_mlp

MODES = ["argmax", "jacobian", "none"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "g_dtype, h_dtype, x_dtype, culprit",
    [
        (torch.float64, torch.float64, torch.float32, "g"),
        (torch.float32, torch.float64, torch.float32, "h"),
        (torch.float32, torch.float32, torch.float16, "g"),
        (torch.float32, torch.float32, torch.bfloat16, "g"),
        (torch.float32, torch.float32, torch.float64, "g"),
    ],
)
def test_dtype_mismatch_names_the_model_and_both_dtypes(mode, g_dtype, h_dtype, x_dtype, culprit):
    g, h = make_mlp(6, 3, 0, dtype=g_dtype), make_mlp(6, 3, 1, dtype=h_dtype)
    model = AdaptiveSmoothing(g, h, alpha=1.0, mode=mode)
    x = torch.rand(2, 6).to(x_dtype)
    wrong = g_dtype if culprit == "g" else h_dtype
    with pytest.raises(ValueError, match=rf"input is {x_dtype} but {culprit}'s parameters are {wrong}"):
        model(x)


def test_matching_dtypes_and_autocast_are_accepted():
    g, h = make_mlp(6, 3, 0, dtype=torch.float64), make_mlp(6, 3, 1, dtype=torch.float64)
    assert AdaptiveSmoothing(g, h, alpha=1.0)(torch.rand(2, 6, dtype=torch.float64)).dtype == torch.float64
    g32, h32 = make_mlp(6, 3, 0), make_mlp(6, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AdaptiveSmoothing(g32, h32, alpha=1.0)(torch.rand(2, 6))
    assert out.dtype == torch.float32  # the mix itself runs in float32 under autocast


@pytest.mark.parametrize("culprit", ["g", "h", "the policy"])
def test_device_of_every_part_is_checked(culprit):
    g, h = make_mlp(6, 3, 0), make_mlp(6, 3, 1)
    policy = LogitPolicy(3, hidden=4)
    part = {"g": g, "h": h, "the policy": policy}[culprit]
    part.to("meta")  # a second device that exists on every machine
    model = AdaptiveSmoothing(g, h, policy=policy, mode="argmax")
    with pytest.raises(ValueError, match=rf"input is on cpu but {culprit} is on meta"):
        model(torch.rand(2, 6))


class _TupleOut(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        return self.model(x), x.mean()


class _DictOut(_TupleOut):
    def forward(self, x: Tensor):
        return {"logits": self.model(x), "hidden": x}


@dataclass
class _Output:
    logits: Tensor
    loss: Tensor | None = None


class _HFOut(_TupleOut):
    def forward(self, x: Tensor):
        return _Output(logits=self.model(x))


class _HFDictOut(_TupleOut):
    """Hugging Face's ModelOutput is an OrderedDict whose entries are also attributes."""

    def forward(self, x: Tensor):
        return OrderedDict(logits=self.model(x))


@pytest.mark.parametrize("wrapper", [_TupleOut, _DictOut, _HFOut, _HFDictOut])
@pytest.mark.parametrize("who", ["g", "h"])
@pytest.mark.parametrize("mode", MODES)
def test_non_tensor_outputs_say_what_is_expected_and_the_adapter_fixes_them(wrapper, who, mode):
    g, h = make_mlp(6, 3, 0), make_mlp(6, 3, 1)
    plain = AdaptiveSmoothing(g, h, alpha=1.0, mode=mode)
    x = torch.rand(4, 6)
    odd_g, odd_h = (wrapper(g), h) if who == "g" else (g, wrapper(h))
    with pytest.raises(ValueError, match=rf"logits tensor \[batch, classes\] is expected from {who}.*ExtractLogits"):
        AdaptiveSmoothing(odd_g, odd_h, alpha=1.0, mode=mode)(x)
    fixed = AdaptiveSmoothing(
        ExtractLogits(odd_g) if who == "g" else odd_g, ExtractLogits(odd_h) if who == "h" else odd_h, alpha=1.0, mode=mode
    )
    assert torch.allclose(fixed(x), plain(x), atol=1e-6)


def test_extract_logits_says_when_there_is_nothing_to_extract():
    class _Weird(nn.Module):
        def forward(self, x):
            return {"scores": x}

    with pytest.raises(ValueError, match="without 'logits'"):
        ExtractLogits(_Weird())(torch.rand(2, 3))
    assert torch.equal(ExtractLogits(_Weird(), key="scores")(torch.ones(2, 3)), torch.ones(2, 3))
