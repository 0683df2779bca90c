"""Mixed precision (R kept in fp32) and torch.compile of the wrapper (issue 7, item 2)."""

from __future__ import annotations

import pytest
import torch

from robustmix import AdaptiveSmoothing
from tests.conftest import make_cnn


@pytest.mark.parametrize("mode", ["argmax", "jacobian", "none"])
@pytest.mark.parametrize("space", ["logit", "prob"])
def test_bf16_autocast_stays_close_to_fp32(mode, space):
    g, h = make_cnn(10, 0), make_cnn(10, 1)
    model = AdaptiveSmoothing(g, h, alpha=2.0, mode=mode, space=space)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            details = model.forward_details(x)
    assert details.output.dtype == torch.float32 and details.R.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: the mixed output must agree to bf16 precision of the logits' scale.
    scale = reference.abs().max()
    assert (details.output - reference).abs().max() <= 2e-2 * scale


@pytest.mark.parametrize("mode", ["argmax", "none"])
def test_torch_compile_matches_eager(mode):
    g, h = make_cnn(5, 0), make_cnn(5, 1)
    model = AdaptiveSmoothing(g, h, alpha=1.5, mode=mode)
    x = torch.rand(4, 1, 8, 8)
    compiled = torch.compile(model, backend="inductor")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-6, rtol=1e-6)
    torch._dynamo.reset()
