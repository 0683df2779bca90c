"""Zoo entries (paper Table 1, the authors' release on RobustBench), the clear message for unpublished
weights, loading a zoo name from a hand-built HF cache, and ``robustmix convert`` (pair and release)."""

from __future__ import annotations

import pytest
import torch

from robustmix.cli import main as cli_main
from robustmix.convert import convert_release, read_checkpoint
from robustmix.hub import ZOO, PretrainedUnavailableError, from_pretrained
from robustmix.nn.policies import MixingNetPolicy
from robustmix.registry import build_architecture
from robustmix.smoothing import AdaptiveSmoothing
from tests.hub_helpers import digits_pair, fake_hf_cache

# Numbers as published: paper Table 1 (g_CNN^θ clean / PGD_20) and RobustBench (clean / AutoAttack).
PAPER = {"cifar10-linf": (94.92, 45.94), "cifar10-l2": (93.53, 64.55), "cifar100-linf": (78.01, 24.45)}
RELEASE = {
    "cifar10-linf-edm": ("Bai2023Improving_edm", 95.23, 68.06),
    "cifar100-linf-edm": ("Bai2023Improving_edm", 85.21, 38.72),
    "cifar100-linf-trades": ("Bai2023Improving_trades", 80.18, 35.15),
}


def _value(entry, name: str, attack_prefix: str | None) -> float:
    for m in entry.metrics:
        if m.name == name and (m.attack or "").startswith(attack_prefix or ""):
            return m.value
    raise AssertionError(f"{entry.name} has no {name} / {attack_prefix}")


def test_entries_carry_the_published_numbers():
    for name, (clean, pgd) in PAPER.items():
        entry = ZOO[name]
        assert _value(entry, "clean accuracy", None) == clean
        assert _value(entry, "robust accuracy", "PGD-20") == pgd
    for name, (rb, clean, aa) in RELEASE.items():
        entry = ZOO[name]
        assert entry.robustbench_name == rb
        assert _value(entry, "clean accuracy", None) == clean
        assert _value(entry, "robust accuracy", "AutoAttack") == aa
    assert ZOO["cifar10-linf-trades"].h.robustbench_name == "Zhang2019Theoretically"
    assert ZOO["cifar10-l2"].threat_model == {"norm": "l2", "eps": 0.5}


def test_unpublished_entry_explains_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailableError) as err:
        from_pretrained("cifar10-linf", cache_dir=tmp_path)
    message = str(err.value)
    assert "robustmix convert pair" in message and ZOO["cifar10-linf"].repo_id in message
    with pytest.raises(PretrainedUnavailableError, match="robustmix convert release"):
        AdaptiveSmoothing.from_pretrained("cifar10-linf-edm", cache_dir=tmp_path)


def test_zoo_name_loads_from_the_cache(tmp_path, monkeypatch):
    g, h = digits_pair(4)
    model = AdaptiveSmoothing(g, h, alpha=3.0)
    model.save_pretrained(tmp_path / "built")
    fake_hf_cache(tmp_path / "cache", ZOO["cifar10-linf"].repo_id, tmp_path / "built", "c" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(from_pretrained("cifar10-linf", cache_dir=tmp_path / "cache")(x), model(x))


def test_convert_pair_cli_round_trip(tmp_path, capsys):
    g, h = digits_pair(5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in g.state_dict().items()}}, tmp_path / "g.pt")
    torch.save(h.state_dict(), tmp_path / "h.pt")
    code = cli_main([
        "convert", "pair", "--g-checkpoint", str(tmp_path / "g.pt"), "--g-arch", "digits_cnn",
        "--g-kwargs", '{"channels": [4, 8, 8]}', "--h-checkpoint", str(tmp_path / "h.pt"), "--h-arch", "digits_cnn",
        "--h-kwargs", '{"channels": [4, 8, 8]}', "--alpha", "2.0", "--zoo-entry", "cifar10-linf",
        "--output", str(tmp_path / "out"),
    ])
    assert code == 0 and "from_pretrained" in capsys.readouterr().out
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path / "out")
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(loaded(x), AdaptiveSmoothing(g, h, alpha=2.0)(x))
    assert loaded.g is not g


def test_converter_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({"fc.weight": Payload()}, tmp_path / "evil.pt", pickle_protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def _release_checkpoint(num_classes: int = 10):
    """A composite state dict named as the authors' release names it (small BiT-R50x1 + WRN-16-2)."""
    torch.manual_seed(0)
    g = build_architecture("bit_resnetv2", depth="r50", width=1, num_classes=num_classes, input_size=128)
    h = build_architecture("dm_wide_resnet", num_classes=num_classes, depth=16, width=2, activation="silu")
    policy = MixingNetPolicy(g, h, in_channels=(256, 32), widths=(16, 24, 32))
    state = {}
    for prefix in ("comp_model.", "_comp_model."):  # the release's wrapper registers the model twice
        state.update({f"{prefix}models.0.{k}": v for k, v in g.state_dict().items()})
        state.update({f"{prefix}models.1.{k}": v for k, v in h.state_dict().items()})
        for k, v in policy.state_dict().items():
            state[prefix + (k.removeprefix("head.") if k.startswith("head.") else f"policy_net.{k}")] = v
        scalars = {"gamma_scale": 2.0, "gamma_bias": 1.05, "alpha_scale": 0.04, "alpha_bias": 0.96, "std_scale": 1.2, "rob_scale": 0.3}
        state.update({prefix + k: torch.tensor(v) for k, v in scalars.items()})
    state["comp_model.bn.running_mean"] = torch.tensor([0.3])  # non-trivial output-BN statistics
    state["comp_model.bn.running_var"] = torch.tensor([2.0])
    return state, scalars


def test_convert_release_from_robustbench_files(tmp_path):
    """RobustBench stores the release as NAME_m0.pt (g), NAME_m1.pt (h), NAME_m2.pt ({'model', 'bn'})."""
    state, _ = _release_checkpoint()
    part = {k.removeprefix("comp_model."): v for k, v in state.items() if k.startswith("comp_model.")}
    g_sd = {k.removeprefix("models.0."): v for k, v in part.items() if k.startswith("models.0.")}
    h_sd = {k.removeprefix("models.1."): v for k, v in part.items() if k.startswith("models.1.")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in g_sd.items()}}, tmp_path / "rb_m0.pt")
    torch.save(h_sd, tmp_path / "rb_m1.pt")
    torch.save(
        {
            "model": {k.removeprefix("policy_net."): v for k, v in part.items() if k.startswith("policy_net.")},
            "bn": {k.removeprefix("bn."): v for k, v in part.items() if k.startswith("bn.")},
        },
        tmp_path / "rb_m2.pt",
    )
    files = [str(tmp_path / f"rb_m{i}.pt") for i in range(3)]
    out = tmp_path / "out"
    assert cli_main(["convert", "release", "--checkpoint", *files, "--variant", "edm", "--zoo-entry", "cifar100-linf-edm", "--output", str(out)]) == 0
    model = AdaptiveSmoothing.from_pretrained(out)
    for k, v in model.g.state_dict().items():
        assert torch.equal(v, g_sd[k]), k
    assert torch.equal(model.policy.head.bn.running_mean, part["bn.running_mean"])
    # CIFAR-100 EDM settings of the release: γ = 2·BN(z) + 1.3, w in (0.84, 0.99), logits × (2, 1).
    assert model.alpha_range == pytest.approx((0.84, 0.99)) and model.logit_scales == (2.0, 1.0)
    assert (model.policy.head.output_scale, model.policy.head.output_bias) == pytest.approx((2.0, 1.3))


def test_convert_release_maps_every_tensor_and_the_mixing_form():
    state, s = _release_checkpoint()
    model = convert_release(state, "edm")
    for k, v in model.g.state_dict().items():
        assert torch.equal(v, state[f"comp_model.models.0.{k}"]), k
    for k, v in model.h.state_dict().items():
        assert torch.equal(v, state[f"comp_model.models.1.{k}"]), k
    assert torch.equal(model.policy.head.bn.running_mean, state["comp_model.bn.running_mean"])
    assert torch.equal(model.policy.head.bn.running_var, state["comp_model.bn.running_var"])
    assert model.alpha_range == pytest.approx((0.96, 1.0)) and model.logit_scales == (pytest.approx(1.2), pytest.approx(0.3))

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        details = model.forward_details(x)
        # The release's formula, written out: w = bias + scale * sigmoid(γ); log((1-w) p_g + w p_h).
        w = (s["alpha_bias"] + s["alpha_scale"] * torch.sigmoid(details.beta))[:, None]
        p_g = (s["std_scale"] * model.g(x)).softmax(dim=1)
        p_h = (s["rob_scale"] * model.h(x)).softmax(dim=1)
        reference = torch.log((1 - w) * p_g + w * p_h)
    torch.testing.assert_close(details.output, reference, atol=1e-5, rtol=1e-5)


def test_convert_release_rejects_foreign_checkpoints():
    state, _ = _release_checkpoint()
    with pytest.raises(ValueError, match="variant"):
        convert_release(state, "mixednuts")
    state["comp_model.something_else"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected entries"):
        convert_release(state, "edm")
    with pytest.raises(ValueError, match="not a composite checkpoint"):
        convert_release({"fc.weight": torch.zeros(2, 2)}, "edm")
