"""Optional step: the release converter against the real thing, RobustBench's own implementation of
``Bai2023Improving_edm`` (CIFAR-10/100) and ``Bai2023Improving_trades`` (CIFAR-100), built offline on CPU
with random weights (567 M parameters each).

robustbench 1.1.1 pins packages that conflict with the default environment, so this runs only in its own
virtual environment (see tests/optional/README.md); elsewhere it is skipped with that reason.
"""

from __future__ import annotations

import pytest
import torch
from robustbench_env import cpu_only  # noqa: F401  (a fixture; also aliases autoattack before robustbench loads)

rb = pytest.importorskip(
    "robustbench", reason="optional step: needs robustbench 1.1.1 in its own venv (tests/optional/README.md)"
)


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_only")
@pytest.mark.parametrize("variant, dataset", [("edm", "cifar10"), ("edm", "cifar100"), ("trades", "cifar100")])
def test_converted_release_matches_robustbench(variant, dataset):
    from robustbench.model_zoo.architectures.comp_model import get_composite_model

    from robustmix.convert import RELEASE_SETTINGS, convert_release

    torch.manual_seed(0)
    reference = get_composite_model(variant, dataset)
    comp = reference._comp_model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-default statistics everywhere, so that every buffer must be mapped right
        for m in reference.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.05 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=gen))
        comp.bn.running_mean.fill_(0.2)
        comp.bn.running_var.fill_(3.0)
    reference.eval()
    # The scalars robustmix uses for RobustBench's three-file checkpoints are the reference's own.
    for name, value in RELEASE_SETTINGS[(variant, dataset)].items():
        assert getattr(comp, name).item() == pytest.approx(value, abs=1e-7), name
    model = convert_release(reference.state_dict(), variant)

    x = torch.rand(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
    assert got.shape == expected.shape == (2, 10 if dataset == "cifar10" else 100)
    print(f"{variant}/{dataset}: max |robustmix - robustbench| = {(got - expected).abs().max().item():.3g}")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
