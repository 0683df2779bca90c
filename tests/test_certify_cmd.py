"""``robustmix certify``: labelled certificates whose printed numbers are consistent with each other and
with an independent count of the mixture's clean accuracy."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from robustmix import AdaptiveSmoothing
from robustmix.cli import main
from robustmix.demo_models import get_demo_models

LIMIT = 6


def _percentages(line: str) -> dict[str, float]:
    """``{"clean": 50.0, "0.001": 50.0, ...}`` from a printed report line."""
    found = {r: float(v) for r, v in re.findall(r"r=([\d.e-]+): (\d+\.\d)%", line)}
    clean = re.search(r"clean (\d+\.\d)%", line)
    if clean:
        found["clean"] = float(clean.group(1))
    return found


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> tuple[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    argv = ["certify", "--quick", "--limit", str(LIMIT), "--n", "200", "--radii", "0,0.0005,0.002,0.01",
            "--rs-radii", "0,0.05,0.2", "--empirical", "--cache-dir", str(cache), "--no-progress"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue(), str(cache)


def test_every_number_is_labelled(output):
    text, _ = output
    lines = text.splitlines()
    theorem2 = [line for line in lines if line.startswith("[CERTIFICATE] Theorem 2")]
    empirical = [line for line in lines if line.startswith("[NOT CERTIFIED]")]
    smoothing = [line for line in lines if line.startswith("[CERTIFICATE, holds with probability >= 0.999]")]
    assert len(theorem2) == len(empirical) == len(smoothing) == 1
    assert "certified (sound bounds)" in theorem2[0] and "NOT certified" in empirical[0]


def test_theorem2_numbers_are_consistent_and_match_an_independent_clean_count(output):
    text, cache = output
    sound = _percentages(next(line for line in text.splitlines() if line.startswith("[CERTIFICATE] Theorem 2")))
    sampled = _percentages(next(line for line in text.splitlines() if line.startswith("[NOT CERTIFIED]")))
    g, h, split = get_demo_models(quick=True, seed=0, cache_dir=cache, progress=False)
    mixture = AdaptiveSmoothing(g, h, alpha=1.0, mode="jacobian", norm="linf")
    with torch.no_grad():
        correct = (mixture(split.x_test[:LIMIT]).argmax(1) == split.y_test[:LIMIT]).float().mean()
    assert sound["clean"] == pytest.approx(100 * float(correct), abs=0.05)
    radii = ["0", "0.0005", "0.002", "0.01"]
    values = [sound[r] for r in radii]
    assert values == sorted(values, reverse=True) and values[0] <= sound["clean"]
    assert values[1] > 0  # not vacuous: something is certified at a positive radius
    # Sampled constants are at most the sound bounds, so their radii are at least as large.
    assert all(sampled[r] >= sound[r] for r in radii)


def test_randomized_smoothing_numbers_fall_with_the_radius(output):
    text, _ = output
    line = next(line for line in text.splitlines() if "randomized smoothing" in line)
    values = [_percentages(line)[r] for r in ("0", "0.05", "0.2")]
    assert values == sorted(values, reverse=True)
    abstained = int(re.search(r"abstained: (\d+)", line).group(1))
    assert values[0] <= 100 * (LIMIT - abstained) / LIMIT + 0.05


def test_bad_weight_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--w"):
        main(["certify", "--quick", "--limit", "1", "--w", "1.5", "--cache-dir", str(tmp_path), "--no-progress"])
