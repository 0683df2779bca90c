"""RobustBench's MixedNUTS as a robustmix model: the RA-WideResNet pieces against naive formulas, the mixture
against the MixedNUTS formula written out here, the architectures read off the tensor shapes, the two-file
and whole-classifier checkpoints, ``robustmix convert mixednuts``, and clear errors. (Equality with
RobustBench's own implementation is the optional step tests/optional/test_robustbench_mixednuts.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from robustmix import AdaptiveSmoothing
from robustmix.cli import main as cli_main
from robustmix.convert import MIXEDNUTS_SETTINGS, convert_mixednuts, read_mixednuts_files
from robustmix.nn.layers import SqueezeExcite, WideBlock
from robustmix.registry import build_architecture

TINY_RA = {"stem_width": 8, "depths": [1, 2, 1], "widths": [8, 16, 32], "groups": [1, 2, 1], "se_ratio": 0.25}


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (a freshly built net has unit BN and zero biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=gen))
                else:
                    t.copy_(0.2 * torch.randn(t.shape, generator=gen))
    return model.eval()


def _pair(num_classes: int = 10, robust: dict | None = None):
    g = _randomise(build_architecture("bit_resnetv2", depth="r50", width=1, num_classes=num_classes), 0)
    h_kwargs = {**TINY_RA, **(robust or {})}
    h = _randomise(build_architecture("ra_wide_resnet", num_classes=num_classes, **h_kwargs), 1)
    return g, h


def _classifier_state(g, h, settings):
    """The state dict of RobustBench's mixed classifier, in its names."""
    state = {f"std_model.{k}": v for k, v in g.state_dict().items()}
    state.update({f"rob_model.{k}": v for k, v in h.state_dict().items()})
    state.update({"_alpha": torch.tensor(settings["alpha"]), "_alpha_diffable": torch.tensor(0.95),
                  "rob_map.scale": torch.tensor(settings["s"]), "rob_map.power": torch.tensor(settings["p"]),
                  "rob_map.clamp_bias": torch.tensor(settings["c"]),
                  "std_map.approx.scale": torch.tensor(1e6), "std_map.approx.power": torch.tensor(1.0)})
    return state


def _mixednuts_reference(g_logits, h_logits, s, p, c, w):
    """log((1 - w)·onehot(argmax g) + w·softmax(s·sign(u)|u|^p)), u = GELU((z - mean)/sqrt(var + 1e-8) + c),
    computed in float64 from the formula."""
    z = h_logits.double()
    u = F.gelu((z - z.mean(1, keepdim=True)) / (z.var(1, keepdim=True) + 1e-8).sqrt() + c)
    mapped = s * u.sign() * u.abs() ** p
    onehot = F.one_hot(g_logits.argmax(1), g_logits.shape[1]).double()
    return torch.log((1 - w) * onehot + w * mapped.softmax(1))


def test_squeeze_excite_is_the_gate_formula():
    torch.manual_seed(0)
    se = _randomise(SqueezeExcite(6, 2), 3)
    x = torch.randn(3, 6, 5, 5)
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias)
    gate = torch.sigmoid(hidden @ se.fc2.weight[:, :, 0, 0].T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_grouped_block_with_gate_equals_the_block_written_out():
    block = _randomise(WideBlock(8, 16, 2, torch.nn.SiLU, layout="deepmind", groups=2, se_ratio=0.25), 4)
    assert block.se.fc1.out_channels == 4 and block.conv_0.groups == block.conv_1.groups == 2
    x = torch.randn(2, 8, 8, 8)
    a = F.silu(block.batchnorm_0(x))
    out = F.conv2d(F.pad(a, (0, 1, 0, 1)), block.conv_0.weight, stride=2, groups=2)
    out = F.conv2d(F.silu(block.batchnorm_1(out)), block.conv_1.weight, padding=1, groups=2)
    torch.testing.assert_close(block(x), block.shortcut(a) + block.se(out))


def test_default_ra_wide_resnet_is_ra_wrn_70_16():
    with torch.device("meta"):
        model = build_architecture("ra_wide_resnet")
    blocks = [len(stage.block) for stage in model.layer]
    assert blocks == [30, 31, 10] and model.init_conv.out_channels == 96
    assert [stage.block[0].conv_0.out_channels for stage in model.layer] == [216, 432, 864]
    assert 6 * 0 + 2 * sum(blocks) + 2 == 144  # conv layers on the main path: 2 per block, stem and head
    assert model.layer[2].block[0].se.fc1.out_channels == 216


@pytest.mark.parametrize("num_classes, dataset", [(10, "cifar10"), (100, "cifar100")])
def test_converted_classifier_is_the_mixednuts_formula(num_classes, dataset):
    settings = MIXEDNUTS_SETTINGS[dataset]
    g, h = _pair(num_classes)
    model = convert_mixednuts(_classifier_state(g, h, settings)).eval()
    config = model.h_map.get_config()  # float32 values, as RobustBench stores (and uses) them
    assert (config["k"], config["clamp"]) == (250, "gelu")
    assert [config[k] for k in "spc"] == pytest.approx([settings[k] for k in "spc"], rel=1e-7)
    for k, v in h.state_dict().items():
        assert torch.equal(model.h.state_dict()[k], v), k
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = _mixednuts_reference(g(x), h(x), settings["s"], settings["p"], settings["c"], settings["alpha"])
        got = model(x)
    torch.testing.assert_close(got.double().exp(), expected.exp(), atol=1e-5, rtol=0)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def _saved_h_spec(model: AdaptiveSmoothing, directory) -> dict:
    model.save_pretrained(directory)
    return json.loads((directory / "config.json").read_text())["h"]


def test_the_robust_architecture_is_read_off_the_shapes(tmp_path):
    g, h = _pair(robust={"stem_width": 16, "depths": [2, 1, 3], "widths": [24, 48, 48], "groups": [1, 1, 3],
                         "se_ratio": 0.5})
    model = convert_mixednuts(_classifier_state(g, h, MIXEDNUTS_SETTINGS["cifar10"]))
    config = _saved_h_spec(model, tmp_path / "ra")
    assert config["name"] == "ra_wide_resnet"
    assert {k: config["kwargs"][k] for k in ("stem_width", "depths", "widths", "groups", "se_ratio")} == {
        "stem_width": 16, "depths": [2, 1, 3], "widths": [24, 48, 48], "groups": [1, 1, 3], "se_ratio": 0.5}
    # A plain WideResNet (CIFAR-100's robust model) is saved as what it is.
    plain = _randomise(build_architecture("dm_wide_resnet", num_classes=100, depth=16, width=2), 2)
    g100 = _randomise(build_architecture("bit_resnetv2", depth="r50", width=1, num_classes=100), 0)
    model = convert_mixednuts(_classifier_state(g100, plain, MIXEDNUTS_SETTINGS["cifar100"]))
    config = _saved_h_spec(model, tmp_path / "dm")
    assert config["name"] == "dm_wide_resnet" and config["kwargs"]["depth"] == 16
    assert model.h.mean.flatten()[0].item() == pytest.approx(0.5071)


def test_two_robustbench_files_through_the_command_line(tmp_path, capsys):
    g, h = _pair()
    torch.save({"state_dict": {f"module.{k}": v for k, v in g.state_dict().items()}}, tmp_path / "nuts_m0.pt")
    torch.save(h.state_dict(), tmp_path / "nuts_m1.pt")
    files = [str(tmp_path / "nuts_m0.pt"), str(tmp_path / "nuts_m1.pt")]
    assert cli_main(["convert", "mixednuts", "--checkpoint", *files, "--output", str(tmp_path / "x")]) == 2
    assert "--dataset" in capsys.readouterr().err
    out = tmp_path / "converted"
    assert cli_main(["convert", "mixednuts", "--checkpoint", *files, "--dataset", "cifar10", "--eps", str(8 / 255),
                     "--output", str(out)]) == 0
    loaded = AdaptiveSmoothing.from_pretrained(out).eval()
    direct = convert_mixednuts(read_mixednuts_files(files, "cifar10")).eval()
    w = torch.tensor(MIXEDNUTS_SETTINGS["cifar10"]["alpha"]).item()  # stored in float32, as RobustBench's
    assert loaded.alpha == pytest.approx(w / (1 - w)) and type(loaded.g_map).__name__ == "HardMax"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), direct(x), atol=0, rtol=0)


def test_bad_checkpoints_are_named():
    g, h = _pair()
    state = _classifier_state(g, h, MIXEDNUTS_SETTINGS["cifar10"])
    with pytest.raises(ValueError, match="missing"):
        convert_mixednuts({k: v for k, v in state.items() if k != "rob_map.power"})
    with pytest.raises(ValueError, match="unexpected entries"):
        convert_mixednuts({**state, "policy_net.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        convert_mixednuts({**state, "_alpha": torch.tensor(1.5)})
    with pytest.raises(ValueError, match="no MixedNUTS settings"):
        read_mixednuts_files(["a.pt", "b.pt"], "imagenet")
    with pytest.raises(ValueError, match="two files"):
        read_mixednuts_files(["a.pt"], "cifar10")
    assert math.isinf(convert_mixednuts({**state, "_alpha": torch.tensor(1.0)}).alpha)
