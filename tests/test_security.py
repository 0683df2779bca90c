"""Loading never executes anything a model directory says: unregistered names, injected module paths,
corrupt safetensors, mismatched tensors and pickle files each give a clear error and run no code."""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustmix.smoothing import AdaptiveSmoothing
from tests.hub_helpers import digits_pair

EVIL_MODULE = "robustmix_evil_payload_mod"


class _Payload:
    """Unpickling this object runs ``exec(code)``; ``code`` writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('executed')"

    def __reduce__(self):
        return (exec, (self.code,))


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"g.fc.weight": _Payload(marker)}, protocol=4)


def _torch_save_zip_bytes(marker: Path) -> bytes:
    """The torch.save layout: a zip archive whose data.pkl would run the payload when unpickled."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", _pickle_bytes(marker))
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


@pytest.fixture
def saved(tmp_path) -> Path:
    g, h = digits_pair(0)
    AdaptiveSmoothing(g, h, alpha=1.0).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> Path:
    """An importable module that writes a marker when imported; the tests name it in configs."""
    marker = tmp_path / "imported.marker"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{EVIL_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\ndef build(**kw):\n    raise SystemExit('ran')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, EVIL_MODULE, raising=False)
    return marker


def _edit_config(directory: Path, edit) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_payloads_really_execute_when_unpickled(tmp_path):
    """The fixtures are dangerous for real: unpickling them runs code (so the tests below can fail)."""
    marker = tmp_path / "direct.marker"
    pickle.loads(_pickle_bytes(marker))
    assert marker.read_text() == "executed"


@pytest.mark.parametrize("make", [_pickle_bytes, _torch_save_zip_bytes], ids=["pickle", "torch-zip"])
def test_pickle_in_place_of_weights_is_refused_unexecuted(saved, tmp_path, make):
    marker = tmp_path / "pwned.marker"
    (saved / "model.safetensors").write_bytes(make(marker))
    with pytest.raises(ValueError, match="never unpickles"):
        AdaptiveSmoothing.from_pretrained(saved)
    assert not marker.exists()


def test_pickle_weights_under_other_names_are_never_read(saved, tmp_path):
    marker = tmp_path / "pwned.marker"
    (saved / "model.safetensors").unlink()
    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        (saved / name).write_bytes(_pickle_bytes(marker))
    with pytest.raises(FileNotFoundError, match="only from safetensors"):
        AdaptiveSmoothing.from_pretrained(saved)
    assert not marker.exists()


def test_unregistered_architecture_is_rejected_without_import(saved, evil_module):
    for name in (EVIL_MODULE, f"{EVIL_MODULE}.build", f"{EVIL_MODULE}:build"):
        _edit_config(saved, lambda c, n=name: c["g"].update(name=n))
        with pytest.raises(ValueError, match="unknown architecture") as err:
            AdaptiveSmoothing.from_pretrained(saved)
        assert "digits_cnn" in str(err.value) and "torchvision_resnet18" in str(err.value)
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(_target_=f"{EVIL_MODULE}.build"), "unknown config key"),
        (lambda c: c.update(module=EVIL_MODULE), "unknown config key"),
        (lambda c: c["g"].update(module=EVIL_MODULE), "allowed keys"),
        (lambda c: c["g"].update(kwargs={"factory": f"{EVIL_MODULE}.build"}), "bad kwargs"),
        (lambda c: c.update(policy={"type": f"{EVIL_MODULE}.Policy", "config": {}}, alpha=None), "unknown policy"),
        (lambda c: c.update(policy={"type": "LogitPolicy", "config": {"num_classes": 10}, "cls": EVIL_MODULE}, alpha=None), "policy"),
        (lambda c: c.update(policy={"type": "LogitPolicy", "config": {"num_classes": 10, "module": EVIL_MODULE}}, alpha=None), "bad kwargs"),
        (lambda c: c.update(threat_model={"norm": "linf", "eps": 0.1, "hook": EVIL_MODULE}), "threat_model"),
        (lambda c: c.update(format="pickle"), "unsupported model format"),
        (lambda c: c.update(alpha="exec"), "alpha"),
        (lambda c: c.update(mode="eval"), "mode"),
        (lambda c: c.pop("g"), "missing the required key"),
    ],
)
def test_config_injection_is_rejected(saved, evil_module, edit, message):
    _edit_config(saved, edit)
    with pytest.raises(ValueError, match=message):
        AdaptiveSmoothing.from_pretrained(saved)
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules


def test_non_json_constants_in_config_are_rejected(saved):
    path = saved / "config.json"
    path.write_text(path.read_text().replace('"eps_c": 1e-06', '"eps_c": NaN'))
    with pytest.raises(ValueError, match="NaN"):
        AdaptiveSmoothing.from_pretrained(saved)


@pytest.mark.parametrize("how", ["truncated", "header", "empty", "garbage"])
def test_corrupt_safetensors_is_a_clear_error(saved, how):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "header":
        data = data[:8] + b"[" + data[9:]
    elif how == "empty":
        data = b""
    else:
        data = bytes(range(256)) * 4
    path.write_bytes(data)
    with pytest.raises(ValueError, match="safetensors"):
        AdaptiveSmoothing.from_pretrained(saved)


def _rewrite_weights(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "edit, message, key",
    [
        (lambda t: t.pop("g.conv1.weight"), "missing tensors", "g.conv1.weight"),
        (lambda t: t.pop("h.fc.bias"), "missing tensors", "h.fc.bias"),
        (lambda t: t.update({"g.extra": torch.zeros(2)}), "unexpected tensors", "g.extra"),
        (lambda t: t.update({"policy.x": torch.zeros(1)}), "unexpected tensors", "policy.x"),
        (lambda t: t.update({"evil": torch.zeros(1)}), "unexpected tensors", "evil"),
        (lambda t: t.update({"h.fc.weight": torch.zeros(10, 7)}), "wrongly shaped", "h.fc.weight"),
    ],
)
def test_state_dict_mismatch_is_a_clear_error(saved, edit, message, key):
    _rewrite_weights(saved, edit)
    with pytest.raises(ValueError, match=message) as err:
        AdaptiveSmoothing.from_pretrained(saved)
    assert key in str(err.value)
