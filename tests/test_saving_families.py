"""save_pretrained takes the models people have without registering anything: timm and torchvision classifiers
(also built directly, as the README does), every adapter factory, registered policies of any class name; and
from_pretrained says at once when a local directory name has a typo."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from robustmix import adapters
from robustmix.registry import architecture_spec, register_policy
from robustmix.smoothing import AdaptiveSmoothing


def _round_trip(g: nn.Module, h: nn.Module, x: Tensor, directory) -> AdaptiveSmoothing:
    model = AdaptiveSmoothing(g.eval(), h.eval(), alpha=1.0, mode="none")
    model.save_pretrained(directory)
    loaded = AdaptiveSmoothing.from_pretrained(directory)
    assert type(loaded.g) is type(model.g) and type(loaded.h) is type(model.h)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    return loaded


def _pair(build) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    g = build()
    torch.manual_seed(1)
    return g, build()


CIFAR = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
FAMILIES = {
    "torchvision resnet18 (README)": (lambda: torchvision.models.resnet18(num_classes=10), CIFAR),
    "torchvision mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=4), CIFAR),
    "torchvision get_model": (lambda: torchvision.models.get_model("resnet34", num_classes=7), CIFAR),
    "adapters.cifar_resnet18": (lambda: adapters.cifar_resnet18(num_classes=10), CIFAR),
    "adapters.wide_resnet": (lambda: adapters.wide_resnet(depth=10, widen_factor=1, num_classes=5), CIFAR),
    "adapters.imagenet_model": (lambda: adapters.imagenet_model("resnet18", num_classes=6), CIFAR),
    "adapters.timm_model": (lambda: adapters.timm_model("test_resnet", num_classes=4), CIFAR),
    "timm.create_model": (lambda: timm.create_model("test_efficientnet", num_classes=3), CIFAR),
    "timm one channel": (lambda: timm.create_model("test_resnet", num_classes=3, in_chans=1), CIFAR[:, :1]),
    "Normalized(torchvision)": (
        lambda: adapters.Normalized(torchvision.models.resnet18(num_classes=3), adapters.CIFAR10_MEAN, adapters.CIFAR10_STD),
        CIFAR,
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_common_families_save_and_load_without_registration(tmp_path, family):
    build, x = FAMILIES[family]
    g, h = _pair(build)
    _round_trip(g, h, x, tmp_path / "model")


def test_a_modified_torchvision_model_is_not_mistaken_for_the_original():
    model = torchvision.models.resnet18(num_classes=10)
    model.maxpool = nn.Identity()  # same parameters, another forward
    assert architecture_spec(model) is None
    with pytest.raises(ValueError, match="architecture is unknown"):
        AdaptiveSmoothing(model, model, alpha=1.0).save_pretrained("unused")


class _RenamedPolicy(nn.Module):
    """A policy whose registered name differs from its class name."""

    def __init__(self, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.scale = num_classes, scale
        self.linear = nn.Linear(2 * num_classes, 1)

    def forward(self, x: Tensor, g_logits: Tensor, h_logits: Tensor) -> Tensor:
        return self.scale * self.linear(torch.cat([g_logits, h_logits], dim=1)).reshape(-1)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "scale": self.scale}


def test_a_policy_registered_under_its_own_name_saves_and_loads(tmp_path):
    register_policy("my_policy", _RenamedPolicy, overwrite=True)
    g, h = _pair(lambda: torchvision.models.resnet18(num_classes=3))
    model = AdaptiveSmoothing(g.eval(), h.eval(), policy=_RenamedPolicy(3, scale=0.5), mode="none")
    model.save_pretrained(tmp_path)
    assert '"type": "my_policy"' in (tmp_path / "config.json").read_text()
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path)
    assert type(loaded.policy) is _RenamedPolicy and loaded.policy.scale == 0.5
    assert torch.equal(loaded(CIFAR), model(CIFAR))


def test_a_policy_without_get_config_is_refused_at_registration():
    class NoConfig(nn.Module):
        def forward(self, x, g_logits, h_logits):
            return x.sum(1)

    with pytest.raises(ValueError, match="no get_config"):
        register_policy("no_config_policy", NoConfig)
    with pytest.raises(ValueError, match="policy_class="):
        register_policy("factory_policy", lambda g, h, **config: NoConfig())


@pytest.mark.parametrize("name", ["my_saved_modle", "./my_saved_modle", "/no/such/dir", "runs/a/b", "C:\\models\\x"])
def test_a_missing_local_directory_fails_at_once_without_the_hub(monkeypatch, name):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("the Hub must not be contacted for a name that cannot be a repo id")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(FileNotFoundError, match=r"no local directory .*neither a zoo name"):
        AdaptiveSmoothing.from_pretrained(name)
