"""Worst-case robust accuracy over an attack suite, reports, the α-sweep plot and ``robustmix eval``."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustmix.attacks import PAPER_ALPHAS, adaptive_pgd, composite_pgd, pgd
from robustmix.cli import main
from robustmix.evaluate import (
    AttackSuite,
    Score,
    alpha_sweep,
    clean_accuracy,
    evaluate_models,
    format_table,
    plot_alpha_sweep,
    robust_accuracy,
)
from robustmix.smoothing import AdaptiveSmoothing
from tests.test_attacks import EPS, _LogitPolicy, one_thread, trained_pair


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _naive_worst_case(model: nn.Module, x: Tensor, y: Tensor, alphas: tuple[float, ...], adaptive: bool) -> Tensor:
    """Every attack on every example (deterministic PGD, no random start), then AND per example."""
    kw = dict(eps=EPS, steps=5, random_start=False)
    survived = [_correct(model, x, y)]
    if isinstance(model, AdaptiveSmoothing):
        survived += [_correct(model, composite_pgd(model, x, y, a, **kw), y) for a in alphas]
        if adaptive:
            survived.append(_correct(model, adaptive_pgd(model, x, y, **kw), y))
    else:
        survived.append(_correct(model, pgd(model, x, y, **kw), y))
    out = survived[0]
    for s in survived[1:]:
        out = out & s
    return out


def _suite(alphas: tuple[float, ...] = PAPER_ALPHAS, adaptive: bool = True, batch_size: int = 37) -> AttackSuite:
    return AttackSuite(eps=EPS, steps=5, restarts=1, random_start=False, alphas=alphas, adaptive=adaptive,
                       autoattack=False, batch_size=batch_size)


def test_worst_case_equals_naive_and_over_attacks() -> None:
    g, h, x, y = trained_pair()
    x, y = x[:120], y[:120]
    alphas = (0.0, 1.46, 31.6, math.inf)
    models = [g, AdaptiveSmoothing(g, h, alpha=6.81), AdaptiveSmoothing(g, h, policy=_LogitPolicy())]
    for model in models:
        ours = robust_accuracy(model, x, y, _suite(alphas), progress=False)
        assert ours.dtype == torch.bool and ours.shape == y.shape
        assert torch.equal(ours, _naive_worst_case(model, x, y, alphas, adaptive=True))


@settings(max_examples=5)
@given(keep=st.lists(st.booleans(), min_size=len(PAPER_ALPHAS), max_size=len(PAPER_ALPHAS)),
       adaptive=st.booleans())
def test_more_attacks_never_raise_robust_accuracy(keep: list[bool], adaptive: bool) -> None:
    g, h, x, y = trained_pair()
    x, y = x[:60], y[:60]
    model = AdaptiveSmoothing(g, h, policy=_LogitPolicy())
    subset = tuple(a for a, k in zip(PAPER_ALPHAS, keep, strict=True) if k)
    full = robust_accuracy(model, x, y, _suite(PAPER_ALPHAS, adaptive=True, batch_size=64))
    part = robust_accuracy(model, x, y, _suite(subset, adaptive=adaptive, batch_size=64))
    assert bool((part | ~full).all())  # robust under the full suite => robust under any part of it
    assert bool((part <= _correct(model, x, y)).all())


def test_random_start_suite_is_reproducible_and_below_clean() -> None:
    g, h, x, y = trained_pair()
    model = AdaptiveSmoothing(g, h, alpha=1.46)
    suite = AttackSuite(eps=EPS, steps=5, restarts=2, alphas=(0.0, math.inf), autoattack=False, batch_size=64)
    a = robust_accuracy(model, x, y, suite)
    b = robust_accuracy(model, x, y, suite, progress=True)
    assert torch.equal(a, b)
    assert float(a.float().mean()) < float(_correct(model, x, y).float().mean()) - 0.2


def test_clean_accuracy_and_report() -> None:
    g, h, x, y = trained_pair()
    x, y = x[:80], y[:80]
    mixture = AdaptiveSmoothing(g, h, alpha=6.81)
    assert torch.equal(clean_accuracy(g, x, y, batch_size=7), _correct(g, x, y))
    suite = _suite((0.0, math.inf))
    rows = {"g": g, "h": h, "mixture": mixture}
    alone = evaluate_models(rows, x, y, suite, transfer=False)
    report = evaluate_models(rows, x, y, suite)  # adversarial inputs shared between the rows
    assert [s.name for s in report.scores] == ["g", "h", "mixture"]
    for name, model in rows.items():
        assert report[name].clean == pytest.approx(float(_correct(model, x, y).float().mean()))
        expected = float(_naive_worst_case(model, x, y, (0.0, math.inf), adaptive=True).float().mean())
        assert alone[name].robust == pytest.approx(expected)
        assert report[name].robust <= alone[name].robust
        assert report[name].n == 80
    table = format_table(report, title="digits")
    assert table.splitlines()[0] == "digits"
    assert f"{100 * report['h'].robust:.1f}%" in table and f"{100 * report['g'].clean:.1f}%" in table
    assert "worst case" in table and "eps=0.3" in table and "α_t ∈ {0, inf}" in table
    with pytest.raises(KeyError, match="have"):
        report["nope"]


def test_alpha_sweep_endpoints_are_g_and_h(tmp_path) -> None:
    g, h, x, y = trained_pair()
    x, y = x[:60], y[:60]
    policy_model = AdaptiveSmoothing(g, h, policy=_LogitPolicy(), mode="argmax")
    suite = _suite((0.0, math.inf))
    points = alpha_sweep(policy_model, x, y, suite, alphas=(0.0, 6.81, math.inf))
    assert [p.alpha for p in points] == [0.0, 6.81, math.inf]
    assert points[0].clean == pytest.approx(float(_correct(g, x, y).float().mean()))
    assert points[-1].clean == pytest.approx(float(_correct(h, x, y).float().mean()))
    adaptive = Score("adaptive", 0.9, 0.5, 60)
    for adaptive_point, name in ((adaptive, "a.png"), (None, "sub/b.png")):
        path = plot_alpha_sweep(points, adaptive_point, tmp_path / name)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="at least one"):
        plot_alpha_sweep([], adaptive, tmp_path / "c.png")
    with pytest.raises(ValueError, match="AdaptiveSmoothing"):
        alpha_sweep(g, x, y, suite)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(norm="l1"), "linf"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=math.inf), "eps"),
        (dict(restarts=0), "restarts"),
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(alphas=(1.0, -2.0)), "alphas"),
        (dict(autoattack_version="fast"), "standard"),
        (dict(autoattack=True, data_range=(0.0, 255.0)), r"\[0, 1\]"),
        (dict(restarts=2, random_start=False), "random_start"),
    ],
)
def test_suite_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttackSuite(**(dict(eps=EPS) | kwargs))


def test_robust_accuracy_rejects_bad_data() -> None:
    g, _, x, y = trained_pair()
    with pytest.raises(ValueError, match="labels of shape"):
        robust_accuracy(g, x[:4], y[:5], _suite())
    with pytest.raises(ValueError, match="floating-point"):
        robust_accuracy(g, (x[:4] * 16).long(), y[:4], _suite())
    for bad in (math.nan, math.inf):
        broken = x[:4].clone()
        broken[2, 0] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            robust_accuracy(g, broken, y[:4], _suite())
        with pytest.raises(ValueError, match="NaN or Inf"):
            clean_accuracy(g, broken, y[:4])


@pytest.mark.skipif(importlib.util.find_spec("pyautoattack") is None,
                    reason="pyautoattack not installed (pip install 'robustmix[attacks]')")
def test_autoattack_joins_the_worst_case() -> None:
    _, h, x, y = trained_pair()
    x, y = x[:40], y[:40]
    without = robust_accuracy(h, x, y, _suite())
    suite = AttackSuite(eps=EPS, steps=5, restarts=1, random_start=False, autoattack=True, batch_size=64)
    assert suite.use_autoattack and "AutoAttack" in suite.describe()
    with_aa = robust_accuracy(h, x, y, suite)
    assert bool((without | ~with_aa).all())


def test_eval_command_help_and_quick_run(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    assert "--eps" in capsys.readouterr().out
    if importlib.util.find_spec("robustmix.demo.models") is None:
        pytest.skip("robustmix.demo.models (the demo's g and h) is not available")
    plot = tmp_path / "sweep.png"
    code = main(["eval", "--quick", "--limit", "24", "--steps", "2", "--restarts", "1", "--alphas", "0,inf",
                 "--autoattack", "off", "--cache-dir", str(tmp_path / "cache"), "--plot", str(plot),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "g (standard)" in out and "h (robust)" in out and "mixture α=inf" in out and "worst case" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
