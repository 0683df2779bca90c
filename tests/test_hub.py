"""save_pretrained / from_pretrained / push_to_hub: bit-identical round trips (directory and a hand-built HF
cache with HF_HUB_OFFLINE=1), revisions, the file layout, the model card, and the upload that push_to_hub
builds (huggingface_hub's HfApi.create_repo / HfApi.upload_folder are replaced: the library boundary)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from safetensors import safe_open

from robustmix.nn.policies import LogitPolicy, PolicyNet
from robustmix.smoothing import AdaptiveSmoothing
from tests.hub_helpers import digits_pair, fake_hf_cache, resnet_pair

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _digits_x(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(11))


def _cifar_x(n: int = 2) -> torch.Tensor:
    # 16x16 keeps the ResNet-18 forward cheap on shared CPUs; the network itself is unchanged.
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(12))


def _make(kind: str, pair: str) -> tuple[AdaptiveSmoothing, torch.Tensor]:
    g, h = digits_pair(0) if pair == "digits" else resnet_pair(0)
    x = _digits_x() if pair == "digits" else _cifar_x()
    mode = "argmax" if pair == "digits" else "none"  # gradients through ResNet-18 are slow on shared CPUs
    if kind == "alpha":
        model = AdaptiveSmoothing(g, h, alpha=2.5, mode=mode, norm="linf")
    else:
        taps = ("act2", "act2") if pair == "digits" else ("layer2", "layer2")
        policy = PolicyNet(g, h, [taps[0]], [taps[1]], width=4, depth=1, hidden=8, output_bn=True)
        model = AdaptiveSmoothing(g, h, policy=policy, mode=mode, norm="l2")
        model.train()  # one training-mode batch: materialises lazy layers and moves BN statistics
        g.eval(), h.eval()
        with torch.no_grad():
            model(x)
        model.eval()
    return model, x


@pytest.mark.parametrize("pair", ["digits", "resnet18"])
@pytest.mark.parametrize("kind", ["alpha", "policy"])
def test_round_trip_directory_and_offline_cache(tmp_path, monkeypatch, kind, pair):
    model, x = _make(kind, pair)
    expected = model(x)
    saved = model.save_pretrained(tmp_path / "saved", dataset="cifar10" if pair == "resnet18" else "digits")

    from_dir = AdaptiveSmoothing.from_pretrained(saved)
    assert torch.equal(from_dir(x), expected)

    cache = tmp_path / "hf-cache"
    fake_hf_cache(cache, "someone/mixture", saved, COMMIT_A)
    shutil.rmtree(saved)  # nothing left to read but the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_cache = AdaptiveSmoothing.from_pretrained("someone/mixture", cache_dir=cache)
    assert torch.equal(from_cache(x), expected)
    assert type(from_cache.policy) is type(model.policy)
    assert not from_cache.training


def test_weights_file_holds_prefixed_state_dicts(tmp_path):
    model, _ = _make("policy", "digits")
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    expected = {f"g.{k}": v for k, v in model.g.state_dict().items()}
    expected.update({f"h.{k}": v for k, v in model.h.state_dict().items()})
    expected.update({f"policy.{k}": v for k, v in model.policy.state_dict().items()})
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(f.get_tensor(key), value), key


def test_config_names_architectures_and_settings(tmp_path):
    g, h = digits_pair(1)
    model = AdaptiveSmoothing(g, h, alpha=float("inf"), mode="jacobian", norm="l2", eps_c=1e-4, space="prob")
    model.save_pretrained(
        tmp_path, beta0=4.0, dataset="digits", threat_model={"norm": "l2", "eps": 0.5},
        metrics=[{"name": "clean accuracy", "value": 97.5, "attack": None}],
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["g"] == {"name": "digits_cnn", "kwargs": {"channels": [4, 8, 8]}, "normalization": None}
    assert config["alpha"] == "inf"
    assert (config["mode"], config["norm"], config["eps_c"], config["space"]) == ("jacobian", "l2", 1e-4, "prob")
    assert config["beta0"] == 4.0 and config["threat_model"] == {"norm": "l2", "eps": 0.5}
    assert config["versions"]["torch"] == torch.__version__
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path)
    x = _digits_x(3)
    assert torch.equal(loaded(x), h(x).log_softmax(dim=1))  # α = inf in prob space is log softmax(h)


def test_logit_policy_and_release_options_round_trip(tmp_path):
    g, h = digits_pair(2)
    torch.manual_seed(3)
    policy = LogitPolicy(10, hidden=8, output_bn=True, output_scale=2.0, output_bias=1.05)
    model = AdaptiveSmoothing(
        g, h, policy=policy, mode="none", space="prob", logit_scales=(1.2, 0.3),
        alpha_transform="sigmoid", alpha_range=(0.96, 1.0),
    )
    x = _digits_x()
    model.train()
    model(x)
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path)
    assert (loaded.logit_scales, loaded.alpha_transform, loaded.alpha_range) == ((1.2, 0.3), "sigmoid", (0.96, 1.0))
    assert torch.equal(loaded(x), model(x))


def test_revisions_in_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    outputs = {}
    x = _digits_x()
    for commit, ref, alpha in ((COMMIT_A, "main", 0.5), (COMMIT_B, "v2", 8.0)):
        g, h = digits_pair(0)
        model = AdaptiveSmoothing(g, h, alpha=alpha)
        model.save_pretrained(tmp_path / ref)
        fake_hf_cache(cache, "org/name", tmp_path / ref, commit, ref=ref)
        outputs[ref] = model(x)
    assert not torch.equal(outputs["main"], outputs["v2"])
    kw = {"cache_dir": cache, "local_files_only": True}
    assert torch.equal(AdaptiveSmoothing.from_pretrained("org/name", **kw)(x), outputs["main"])
    assert torch.equal(AdaptiveSmoothing.from_pretrained("org/name", revision="v2", **kw)(x), outputs["v2"])
    assert torch.equal(AdaptiveSmoothing.from_pretrained("org/name", revision=COMMIT_B, **kw)(x), outputs["v2"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        AdaptiveSmoothing.from_pretrained("org/other", cache_dir=cache)


def test_runtime_options_and_device(tmp_path):
    g, h = digits_pair(0)
    AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian").save_pretrained(tmp_path)
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path, jacobian_method="loop", chunk_size=3, validate=False)
    assert (loaded.jacobian_method, loaded.chunk_size, loaded.validate) == ("loop", 3, False)
    with pytest.raises(ValueError, match="jacobian_method"):
        AdaptiveSmoothing.from_pretrained(tmp_path, mode="none")


def test_push_to_hub_builds_the_upload(tmp_path, monkeypatch):
    calls: dict[str, object] = {}
    uploaded = tmp_path / "uploaded"

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload_folder"] = (repo_id, kwargs)
        shutil.copytree(folder_path, uploaded)  # the temporary folder is gone after the call
        return "https://huggingface.co/org/mix/commit/123"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model, x = _make("policy", "digits")
    metrics = [
        {"name": "clean accuracy", "value": 97.0, "attack": None},
        {"name": "robust accuracy", "value": 30.5, "attack": "PGD-20 linf eps=0.3"},
    ]
    url = model.push_to_hub("org/mix", private=True, dataset="digits", metrics=metrics, commit_message="first")
    assert url.endswith("/commit/123")
    assert calls["create_repo"] == ("org/mix", {"private": True, "exist_ok": True, "repo_type": "model"})
    repo_id, kwargs = calls["upload_folder"]
    assert repo_id == "org/mix" and kwargs["commit_message"] == "first" and kwargs["repo_type"] == "model"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    card = (uploaded / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "robustmix"
    assert "robustmix" in meta["tags"] and meta["datasets"] == ["digits"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "digits"
    assert [(m["name"], m["value"]) for m in results["metrics"]] == [
        ("clean accuracy", 97.0),
        ("robust accuracy (PGD-20 linf eps=0.3)", 30.5),
    ]
    assert meta["model-index"][0]["name"] == "org/mix"
    assert torch.equal(AdaptiveSmoothing.from_pretrained(uploaded)(x), model(x))


def test_import_and_local_round_trip_without_huggingface_hub(tmp_path):
    code = f"""
import sys
sys.modules["huggingface_hub"] = None  # any import of it now fails
import torch, robustmix
from robustmix.registry import build_architecture
from robustmix.smoothing import AdaptiveSmoothing
torch.manual_seed(0)
m = AdaptiveSmoothing(build_architecture("digits_cnn"), build_architecture("digits_cnn"), alpha=1.0)
m.save_pretrained({str(tmp_path)!r})
x = torch.rand(2, 1, 8, 8)
assert torch.equal(AdaptiveSmoothing.from_pretrained({str(tmp_path)!r})(x), m(x))
try:
    AdaptiveSmoothing.from_pretrained("org/not-local")
except ImportError as err:
    assert "robustmix[hub]" in str(err), err
else:
    raise SystemExit("expected an ImportError")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_models_not_built_by_the_registry_need_an_architecture(tmp_path):
    from robustmix.nn.architectures.digits import digits_cnn

    g, h = digits_cnn(), digits_cnn()
    model = AdaptiveSmoothing(g, h, alpha=1.0)
    with pytest.raises(ValueError, match="build_architecture"):
        model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, g_architecture={"name": "digits_cnn"}, h_architecture={"name": "digits_cnn"})
    x = _digits_x()
    assert torch.equal(AdaptiveSmoothing.from_pretrained(Path(tmp_path))(x), model(x))


def test_docs_python_examples_run(tmp_path, monkeypatch):
    """docs/pretrained.md's Python blocks run as written (offline, in a scratch directory)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "pretrained.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for block in blocks:
        exec(compile(block, "docs/pretrained.md", "exec"), {})
    assert (tmp_path / "mixture-digits" / "model.safetensors").is_file()


def test_shared_storage_is_saved(tmp_path):
    """g and h may be the same module (or share tensors); safetensors needs separate copies."""
    g, _ = digits_pair(6)
    model = AdaptiveSmoothing(g, g, alpha=0.7)
    model.save_pretrained(tmp_path)
    loaded = AdaptiveSmoothing.from_pretrained(tmp_path)
    x = _digits_x()
    assert torch.equal(loaded(x), model(x))
