"""Adapters: Normalized (pixel-space attacks), builders and taps, timm, RobustBench-style and original-code
checkpoints. Reference forwards are written here from the published layouts, independently of adapters/."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from robustmix._utils.optional import require
from robustmix.adapters import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Normalized,
    auto_policy,
    cifar_resnet18,
    default_taps,
    imagenet_model,
    load_checkpoint,
    load_original_policy,
    load_robustbench,
    original_mixture,
    timm_model,
    timm_taps,
    wide_resnet,
    wrap_robustbench,
)
from robustmix.attacks import pgd
from robustmix.smoothing import AdaptiveSmoothing
from tests.conftest import make_cnn


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


# -- Normalized -------------------------------------------------------------------------------------------
@given(
    mean=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    std=st.lists(st.floats(0.05, 2), min_size=3, max_size=3),
    seed=st.integers(0, 100),
)
def test_normalized_matches_per_channel_loop(mean, std, seed):
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 4, 4)
    wrapped = Normalized(nn.Identity(), mean, std)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(wrapped(x), expected)


def test_pgd_in_pixel_space_equals_pgd_on_manual_normalisation():
    inner = make_cnn(5, seed=0, channels=3)
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)

    def manual(z):
        return inner((z - mean[None, :, None, None]) / std[None, :, None, None])

    x, y = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(6) % 5
    eps = 8 / 255
    a = pgd(Normalized(inner, CIFAR10_MEAN, CIFAR10_STD), x, y, eps, steps=5, generator=torch.Generator().manual_seed(2))
    b = pgd(manual, x, y, eps, steps=5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (a - x).abs().max() <= eps + 1e-6 and a.min() >= 0 and a.max() <= 1
    # The silent bug it prevents: eps applied to the standardised tensor is ~1/std larger in pixels.
    z = (x - mean[None, :, None, None]) / std[None, :, None, None]
    z_adv = pgd(inner, z, y, eps, steps=5, data_range=(-10.0, 10.0), generator=torch.Generator().manual_seed(2))
    assert ((z_adv - z) * std[None, :, None, None]).abs().max() < eps  # the real pixel radius is smaller


def test_normalized_rejects_bad_statistics_and_inputs():
    with pytest.raises(ValueError, match="positive"):
        Normalized(nn.Identity(), [0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="channels"):
        Normalized(nn.Identity(), [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        Normalized(nn.Identity(), [math.nan], [1])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        Normalized(nn.Identity(), CIFAR10_MEAN, CIFAR10_STD)(torch.rand(2, 1, 4, 4))


# -- taps, torchvision, timm ------------------------------------------------------------------------------
def test_resnet18_pair_three_lines_with_fig1_taps():
    torch.manual_seed(0)
    g, h = cifar_resnet18(), cifar_resnet18()
    policy = auto_policy(g, h, width=8, depth=1, hidden=8)
    model = AdaptiveSmoothing(g, h, policy=policy)
    assert policy.g_layers == ["layer1", "layer2"] and policy.h_layers == ["layer1", "layer2"]
    with torch.no_grad():
        out = model.forward_details(torch.rand(2, 3, 32, 32))
    assert out.output.shape == (2, 10) and torch.isfinite(out.output).all()
    assert out.beta is not None and out.beta.shape == (2,)


def test_timm_pair_three_lines_with_feature_info_taps():
    pytest.importorskip("timm", reason="timm is the optional robustmix[timm] extra")
    torch.manual_seed(0)
    g, h = timm_model("resnet10t", num_classes=10), timm_model("resnet10t", num_classes=10)
    model = AdaptiveSmoothing(g, h, policy=auto_policy(g, h, width=8, depth=1, hidden=8))
    levels = [e for e in g.model.feature_info if e["reduction"] >= 4][:2]
    assert timm_taps(g) == default_taps(g) == ["model." + e["module"] for e in levels]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # timm_model takes pixels: the wrapper applies the model's own configured statistics.
    cfg = g.model.pretrained_cfg
    torch.testing.assert_close(g.mean.flatten(), torch.tensor(cfg["mean"]))
    torch.testing.assert_close(g.std.flatten(), torch.tensor(cfg["std"]))


def test_default_taps_rules():
    from robustmix.nn.architectures.digits import digits_cnn

    assert default_taps(wide_resnet(10, 1)) == ["block1", "block2"]
    assert default_taps(Normalized(wide_resnet(10, 1), CIFAR10_MEAN, CIFAR10_STD)) == ["model.block1", "model.block2"]
    assert default_taps(digits_cnn()) == ["pool2", "pool3"]
    assert default_taps(imagenet_model("resnet18")) == ["model.layer1", "model.layer2"]
    with pytest.raises(ValueError, match="could not find 2 feature stages.*choosing from: 0, 1, 2"):
        default_taps(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2)))


def test_imagenet_model_unknown_name():
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'"):
        imagenet_model("resnet19")


def test_missing_optional_package_names_the_extra(monkeypatch):
    with pytest.raises(ImportError, match=r"pip install 'robustmix\[x\]'"):
        require("robustmix_no_such_package", "pip install 'robustmix[x]'")
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail as if it were not installed
    with pytest.raises(ImportError, match=r"robustmix\[timm\]"):
        timm_model("resnet10t")


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is not None, reason="robustbench is installed here")
def test_load_robustbench_without_package_says_how_to_install():
    with pytest.raises(ImportError, match="pip install robustbench"):
        load_robustbench("Standard")


# -- WideResNet with RobustBench/TRADES parameter names ----------------------------------------------------
def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])


def reference_wrn(sd: dict, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """RobustBench's WideResNet forward, written from its published layout (pre-activation blocks)."""
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for stage, stride in (("block1", 1), ("block2", 2), ("block3", 2)):
        for i in range(n_blocks):
            p = f"{stage}.layer.{i}"
            s = stride if i == 0 else 1
            act = F.relu(_bn(out, sd, p + ".bn1"))
            mid = F.relu(_bn(F.conv2d(act, sd[p + ".conv1.weight"], stride=s, padding=1), sd, p + ".bn2"))
            res = F.conv2d(mid, sd[p + ".conv2.weight"], padding=1)
            short = F.conv2d(act, sd[p + ".convShortcut.weight"], stride=s) if p + ".convShortcut.weight" in sd else out
            out = short + res
    out = F.relu(_bn(out, sd, "bn1"))
    return F.linear(F.avg_pool2d(out, 8).flatten(1), sd["fc.weight"], sd["fc.bias"])


def test_wide_resnet_matches_robustbench_layout_and_loads_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(wide_resnet(depth=16, widen_factor=2), seed=1)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert "block2.layer.0.convShortcut.weight" in sd and "block1.layer.1.bn2.running_var" in sd
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_wrn(sd, x, n_blocks=2), rtol=1e-4, atol=1e-4)
    # A DataParallel checkpoint nested under "state_dict" (RobustBench/TRADES style), and safetensors.
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ckpt.pt")
    fresh = load_checkpoint(wide_resnet(16, 2), tmp_path / "ckpt.pt")
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "ckpt.safetensors"))
    fresh2 = load_checkpoint(wide_resnet(16, 2), tmp_path / "ckpt.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
        torch.testing.assert_close(fresh2(x), model(x))
    assert not fresh.training


def test_trades_checkpoint_with_sub_block1_loads_strictly():
    keys = set(wide_resnet(10, 1, sub_block1=True).state_dict())
    assert {"sub_block1.layer.0.conv1.weight", "block1.layer.0.conv1.weight"} <= keys


def test_wrap_robustbench_normalisation():
    model = make_cnn(4, seed=3, channels=3)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(wrap_robustbench(model)(x), model(x))
        mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
        torch.testing.assert_close(wrap_robustbench(model, CIFAR10_MEAN, CIFAR10_STD)(x), model((x - mean) / std))
    with pytest.raises(ValueError, match="both mean and std"):
        wrap_robustbench(model, mean=CIFAR10_MEAN)


# -- original code base's mixing network ------------------------------------------------------------------
def staged_cnn(seed: int, c1: int, c2: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, c1, 3, padding=1),
            stage1=nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), nn.Softplus()),
            stage2=nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.Softplus()),
            head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 5)),
        )
    ).eval()


def original_checkpoint(planes: list[int], fuse: bool, seed: int) -> dict:
    """A random checkpoint in the original layout: PreAct stages ``layers.i.j``, ``linear``, ``bn``."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def bn(prefix, n):
        sd[prefix + ".weight"] = torch.rand(n, generator=gen) + 0.5
        sd[prefix + ".bias"] = torch.randn(n, generator=gen) * 0.1
        sd[prefix + ".running_mean"] = torch.randn(n, generator=gen) * 0.1
        sd[prefix + ".running_var"] = torch.rand(n, generator=gen) + 0.5
        sd[prefix + ".num_batches_tracked"] = torch.tensor(7)

    cin = planes[0]
    for i, cout in enumerate(planes[1:]):
        for j in range(2):
            p = f"layers.{i}.{j}"
            bn(p + ".bn1", cin)
            sd[p + ".conv1.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) / (3 * cin**0.5)
            bn(p + ".bn2", cout)
            sd[p + ".conv2.weight"] = torch.randn(cout, cout, 3, 3, generator=gen) / (3 * cout**0.5)
            if j == 0:
                sd[p + ".shortcut.0.weight"] = torch.randn(cout, cin, 1, 1, generator=gen) / cin**0.5
            cin = cout
    sd["linear.weight"] = torch.randn(1, planes[-1], generator=gen) / planes[-1] ** 0.5
    if fuse:
        sd["conv1x1.weight"] = torch.randn(planes[1], planes[1], 1, 1, generator=gen) / planes[1] ** 0.5
    bn_state = {"running_mean": torch.tensor([0.2]), "running_var": torch.tensor([0.3]),
                "num_batches_tracked": torch.tensor(5)}
    return {"model": {"module." + k: v for k, v in sd.items()}, "bn": bn_state,
            "gamma_scale": torch.tensor(1.7), "gamma_bias": torch.tensor(-0.4), "ep": 3, "ba": None}


def reference_gamma(ckpt: dict, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    sd = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))

    def block(x, p, stride):
        act = F.relu(_bn(x, sd, p + ".bn1"))
        short = F.conv2d(act, sd[p + ".shortcut.0.weight"], stride=stride) if p + ".shortcut.0.weight" in sd else act
        mid = F.relu(_bn(F.conv2d(act, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn2"))
        return F.conv2d(mid, sd[p + ".conv2.weight"], padding=1) + short

    out = block(block(f1, "layers.0.0", 2), "layers.0.1", 1)
    out = out + (F.conv2d(f2, sd["conv1x1.weight"]) if "conv1x1.weight" in sd else f2)
    for i in range(1, n_layers):
        out = block(block(out, f"layers.{i}.0", 2), f"layers.{i}.1", 1)
    raw = F.linear(out.mean(dim=(2, 3)), sd["linear.weight"]).flatten()
    bn = ckpt["bn"]
    return (raw - bn["running_mean"]) / torch.sqrt(bn["running_var"] + 1e-5) * ckpt["gamma_scale"] + ckpt["gamma_bias"]


@pytest.mark.parametrize("fuse", [False, True], ids=["v3", "v4"])
def test_original_policy_matches_reference(tmp_path, fuse):
    g, h = staged_cnn(0, 4, 8), staged_cnn(1, 4, 8)
    ckpt = original_checkpoint([8, 16, 32, 64], fuse=fuse, seed=2)
    torch.save(ckpt, tmp_path / "policy.pt")
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f1 = torch.cat([g.stage1(g.stem(x)), h.stage1(h.stem(x))], dim=1)
        f2 = torch.cat([g.stage2(g.stage1(g.stem(x))), h.stage2(h.stage1(h.stem(x)))], dim=1)
        gamma = reference_gamma(ckpt, f1, f2)
        policy = load_original_policy(tmp_path / "policy.pt", g, h)
        assert policy.g_layers == ["stage1", "stage2"]
        torch.testing.assert_close(policy(x), gamma, rtol=1e-4, atol=1e-5)
        # The whole composite model: log((1 - w) softmax(s_g g) + w softmax(s_h h)), w = sigmoid(γ).
        mixture = original_mixture(g, h, tmp_path / "policy.pt", std_scale=2.0, rob_scale=0.5)
        w = torch.sigmoid(gamma)[:, None]
        expected = torch.log((1 - w) * (2.0 * g(x)).softmax(1) + w * (0.5 * h(x)).softmax(1))
        torch.testing.assert_close(mixture(x), expected, rtol=1e-4, atol=1e-5)
        # A squeezed range of the weight on h (the original's alpha_scale/alpha_bias in eval mode).
        squeezed = load_original_policy(tmp_path / "policy.pt", g, h, alpha_range=(0.2, 0.9))
        torch.testing.assert_close(torch.sigmoid(squeezed(x)), 0.2 + 0.7 * torch.sigmoid(gamma), rtol=1e-4, atol=1e-6)


def test_original_checkpoint_errors(tmp_path):
    g, h = staged_cnn(0, 4, 8), staged_cnn(1, 4, 8)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a mixing-network state dict"):
        load_original_policy(tmp_path / "bad.pt", g, h)
    with pytest.raises(ValueError, match="no checkpoint file"):
        load_original_policy(tmp_path / "missing.pt", g, h)
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_original_policy(tmp_path / "pickled.pt", g, h)


def test_adapters_import_no_optional_family_package():
    code = "import sys, robustmix.adapters; print('torchvision' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_timm_model_with_other_channel_count():
    pytest.importorskip("timm", reason="timm is the optional robustmix[timm] extra")
    model = timm_model("resnet10t", num_classes=3, in_chans=1)
    cfg_mean = sum(model.model.pretrained_cfg["mean"]) / 3
    assert model.mean.shape == (1, 1, 1, 1) and model.mean.item() == pytest.approx(cfg_mean)
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
