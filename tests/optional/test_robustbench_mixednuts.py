"""Optional step: the MixedNUTS converter against the real thing, RobustBench 1.1.1's own
``get_nonlin_mixed_classifier`` (``Bai2024MixedNUTS``, CIFAR-10: BiT-M-R152x2 + RA-WRN-70-16; CIFAR-100:
BiT-M-R152x2 + WRN-70-16), built offline on CPU with random weights (about 500 M parameters each).

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


def _randomise_statistics(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-default BatchNorm statistics everywhere, so that every buffer must be mapped right."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.05 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=gen))


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_only")
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_converted_mixednuts_matches_robustbench(dataset, tmp_path):
    from robustbench.model_zoo.architectures.comp_model import get_nonlin_mixed_classifier

    from robustmix import AdaptiveSmoothing
    from robustmix.convert import MIXEDNUTS_SETTINGS, convert_mixednuts, read_mixednuts_files

    torch.manual_seed(0)
    reference = get_nonlin_mixed_classifier(dataset)
    gen = torch.Generator().manual_seed(1)
    _randomise_statistics(reference, gen)
    reference.eval()
    # The settings robustmix uses for RobustBench's two files are the reference's own.
    settings = MIXEDNUTS_SETTINGS[dataset]
    assert reference._alpha.item() == pytest.approx(settings["alpha"], abs=1e-7)
    for name, ours in (("scale", "s"), ("power", "p"), ("clamp_bias", "c")):
        assert getattr(reference.rob_map, name).item() == pytest.approx(settings[ours], abs=1e-6), name
    assert reference.rob_map.ln_k == settings["k"]

    # The state dict of the whole classifier, and the two files RobustBench downloads, give the same model.
    model = convert_mixednuts(reference.state_dict()).eval()
    torch.save(reference.std_model.state_dict(), tmp_path / "m0.pt")
    torch.save(reference.rob_model.state_dict(), tmp_path / "m1.pt")
    from_files = convert_mixednuts(read_mixednuts_files([tmp_path / "m0.pt", tmp_path / "m1.pt"], dataset))
    model.save_pretrained(tmp_path / "saved")
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path / "saved").eval()

    x = torch.rand(4, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected = reference(x)  # log of the mixed probabilities
        outputs = {"state dict": model(x), "files": from_files.eval()(x), "saved": loaded(x)}
    for how, got in outputs.items():
        assert got.shape == expected.shape == (4, 10 if dataset == "cifar10" else 100)
        gap = (got.exp() - expected.exp()).abs().max().item()
        log_gap = (got - expected).abs().max().item()
        print(f"{dataset} ({how}): max |p_robustmix - p_robustbench| = {gap:.3g}, max |log p gap| = {log_gap:.3g}")
        torch.testing.assert_close(got.exp(), expected.exp(), atol=1e-5, rtol=0)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.argmax(1), expected.argmax(1))
