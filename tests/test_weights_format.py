"""Every model save_pretrained writes loads back bit-identically, whatever its parameter names and shapes.

A safetensors file starts with its header length as an 8-byte little-endian number: its first byte is
anything from 0 to 255, so it can be 0x80, the first byte of a pickle. The loader must decide by parsing
the header, not by sniffing that byte.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from robustmix.hub import safetensors_header
from robustmix.nn.policies import LogitPolicy
from robustmix.registry import build_architecture, register_architecture
from robustmix.smoothing import AdaptiveSmoothing

CLASSES = 3


def named_mlp(names: list[str], widths: list[int], in_features: int = 4) -> nn.Module:
    """Linear layers called ``names`` with the given output widths, then a classifier to 3 classes."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    d = in_features
    for name, width in zip(names, widths, strict=True):
        layers[name] = nn.Linear(d, width)
        layers[f"{name}_act"] = nn.Tanh()
        d = width
    layers["classifier"] = nn.Linear(d, CLASSES)
    return nn.Sequential(layers)


register_architecture("test_named_mlp", named_mlp, overwrite=True)


def _pair(names: list[str], widths: list[int], seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    g = build_architecture("test_named_mlp", names=names, widths=widths).eval()
    h = build_architecture("test_named_mlp", names=names, widths=widths).eval()
    return g, h


def _round_trip(model: AdaptiveSmoothing, directory) -> AdaptiveSmoothing:
    model.save_pretrained(directory)
    loaded = AdaptiveSmoothing.from_pretrained(directory)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model(x))
    return loaded


def _header_length(path) -> int:
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def test_header_whose_length_starts_like_a_pickle_loads_back(tmp_path):
    """The reproduction: a layer name whose length puts the header length at 128 mod 256 (first byte 0x80)."""
    for length in range(1, 400):
        g, h = _pair(["a" * length], [2], seed=0)
        directory = tmp_path / f"name{length}"
        AdaptiveSmoothing(g, h, alpha=1.0).save_pretrained(directory)
        if _header_length(directory / "model.safetensors") % 256 == 128:
            break
    else:
        pytest.fail("no layer-name length gave a header length of 128 mod 256")
    assert (directory / "model.safetensors").read_bytes()[:1] == b"\x80"
    loaded = AdaptiveSmoothing.from_pretrained(directory)
    x = torch.rand(3, 4)
    assert torch.equal(loaded(x), AdaptiveSmoothing(g, h, alpha=1.0)(x))


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=70)


@given(
    names=st.lists(_NAME, min_size=1, max_size=4, unique=True),
    widths=st.lists(st.integers(1, 7), min_size=4, max_size=4),
    policy=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_saved_model_loads_back_bit_identically(tmp_path_factory, names, widths, policy, seed):
    names = [n for n in names if not n.endswith("_act") and n != "classifier"] or ["layer"]
    widths = widths[: len(names)]
    g, h = _pair(names, widths, seed)
    if policy:
        model = AdaptiveSmoothing(g, h, policy=LogitPolicy(CLASSES, hidden=3, output_bn=True), mode="jacobian")
        model.train()
        with torch.no_grad():
            model(torch.rand(4, 4))  # moves the policy's BatchNorm statistics away from their defaults
        model.eval()
    else:
        model = AdaptiveSmoothing(g, h, alpha=0.5 + seed / 100, mode="argmax")
    loaded = _round_trip(model, tmp_path_factory.mktemp("saved"))
    assert type(loaded.policy) is type(model.policy)


def test_header_parser_accepts_only_well_formed_files(tmp_path):
    g, h = _pair(["layer"], [3], seed=0)
    AdaptiveSmoothing(g, h, alpha=1.0).save_pretrained(tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    assert safetensors_header(tmp_path / "model.safetensors") is not None
    n = struct.unpack("<Q", good[:8])[0]
    cases = {
        "empty": b"",
        "short": good[:5],
        "truncated header": good[: 8 + n // 2],
        "truncated data": good[:-1],
        "header too long": struct.pack("<Q", len(good)) + good[8:],
        "not json": good[:8] + b"\xff" * n + good[8 + n :],
        "json list": struct.pack("<Q", 2) + b"[]",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        assert safetensors_header(path) is None, name
