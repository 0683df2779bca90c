"""``robustmix certify``: labelled certificates whose printed numbers are consistent with each other, never
above what a PGD attack leaves standing, and equal to the library's own per-image certificates."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from robustmix import AdaptiveSmoothing, pgd
from robustmix.certify.randomized import RandomizedSmoothing, certify_mixture
from robustmix.cli import main
from robustmix.demo.models import get_demo_models

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
    # (Sampled constants are at most the sound bounds, but the sound certificate also accepts radii where
    # linear bounds on the mixture's margin hold, so neither line bounds the other.)
    assert set(sampled) == set(sound)
    # A certificate is a lower bound on robust accuracy: PGD at radius r cannot break a certified image.
    x, y = split.x_test[:LIMIT], split.y_test[:LIMIT]
    for r in radii[1:]:
        adversarial = pgd(mixture, x, y, eps=float(r), steps=20, restarts=2, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            survived = (mixture(adversarial).argmax(1) == y).float().mean()
        assert sound[r] <= 100 * float(survived) + 0.05, r


def test_randomized_smoothing_numbers_are_the_library_certificates(output):
    text, cache = output
    line = next(line for line in text.splitlines() if "randomized smoothing" in line)
    radii = (0.0, 0.05, 0.2)
    printed = [_percentages(line)[f"{r:g}"] for r in radii]
    abstained = int(re.search(r"abstained: (\d+)", line).group(1))
    assert abstained < LIMIT and printed[0] > 0  # not vacuous
    # The command's defaults: sigma 0.25 on h, weight w = 0.8 on it, n as given, confidence 0.999, seed 0.
    g, h, split = get_demo_models(quick=True, seed=0, cache_dir=cache, progress=False)
    mixture = AdaptiveSmoothing(g, RandomizedSmoothing(h, 0.25, n=200), alpha=0.8 / 0.2, mode="none", space="prob")
    gen = torch.Generator().manual_seed(0)
    certs = [certify_mixture(mixture, x[None], label=int(y), confidence=0.999, generator=gen)
             for x, y in zip(split.x_test[:LIMIT], split.y_test[:LIMIT], strict=True)]
    assert abstained == sum(c.abstain for c in certs)
    expected = [100 * sum(not c.abstain and c.radius >= r for c in certs) / LIMIT for r in radii]
    assert printed == pytest.approx(expected, abs=0.05)


def test_bad_weight_is_refused(tmp_path, capsys):
    assert main(["certify", "--quick", "--limit", "1", "--w", "1.5", "--cache-dir", str(tmp_path), "--no-progress"]) == 2
    assert "--w must be in (0, 1)" in capsys.readouterr().err
