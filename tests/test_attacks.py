"""PGD, composite (eq. 6) and adaptive attacks, and the AutoAttack bridge, on tiny models trained on digits."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import sys
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustmix.attacks import PAPER_ALPHAS, adaptive_pgd, autoattack, composite_pgd, pgd
from robustmix.demo.data import load_digits_split
from robustmix.smoothing import AdaptiveSmoothing

EPS = 0.3


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run ~20x faster on one thread than on two contended ones."""
    with one_thread():
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def _naive_linf_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step: float) -> Tensor:
    """Textbook PGD (Madry et al.): no random start, last iterate, sign steps, clip to ball and [0, 1]."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


@functools.lru_cache(maxsize=1)
def trained_pair() -> tuple[nn.Module, nn.Module, Tensor, Tensor]:
    """A standard MLP g and an adversarially trained MLP h on digits, plus 200 test examples."""
    with one_thread():
        return _train_pair()


def _train_pair() -> tuple[nn.Module, nn.Module, Tensor, Tensor]:
    data = load_digits_split(seed=0)
    g, h = _mlp(0), _mlp(1)
    gen = torch.Generator().manual_seed(0)
    for model, adversarial in ((g, False), (h, True)):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(12):
            for idx in torch.randperm(len(data.y_train), generator=gen).split(64):
                x, y = data.x_train[idx], data.y_train[idx]
                if adversarial:
                    model.eval()
                    x = _naive_linf_pgd(model, x, y, EPS, steps=5, step=EPS / 3)
                    model.train()
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        model.zero_grad(set_to_none=True)
        model.eval()
    return g, h, data.x_test[:200], data.y_test[:200]


def _ce(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _acc(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float()


def _assert_in_ball(x_adv: Tensor, x: Tensor, eps: float, norm: str, data_range: tuple[float, float]) -> None:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(x_adv.min()) >= data_range[0] and float(x_adv.max()) <= data_range[1]


@settings(max_examples=12)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 2.0),
    steps=st.integers(0, 6),
    random_start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pgd_stays_in_ball_and_data_range(norm: str, eps: float, steps: int, random_start: bool, seed: int) -> None:
    g, _, x, y = trained_pair()
    x, y = x[:32], y[:32]
    x_adv = pgd(g, x, y, eps, norm=norm, steps=steps, random_start=random_start,
                generator=torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    _assert_in_ball(x_adv, x, eps, norm, (0.0, 1.0))


@settings(max_examples=6)
@given(norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 2**16))
def test_pgd_respects_a_narrower_data_range(norm: str, seed: int) -> None:
    g, _, x, y = trained_pair()
    x = x[:32].clamp(0.2, 0.7)
    x_adv = pgd(g, x, y[:32], 1.0, norm=norm, steps=4, data_range=(0.2, 0.7),
                generator=torch.Generator().manual_seed(seed))
    _assert_in_ball(x_adv, x, 1.0, norm, (0.2, 0.7))


@settings(max_examples=6)
@given(norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 2**16))
def test_pgd_does_not_decrease_the_loss(norm: str, seed: int) -> None:
    g, _, x, y = trained_pair()
    eps = EPS if norm == "linf" else 1.5
    x_adv = pgd(g, x, y, eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(seed))
    clean, adv = _ce(g, x, y), _ce(g, x_adv, y)
    assert bool((adv >= clean - 1e-6).all())
    assert float(adv.mean()) > float(clean.mean()) + 1.0
    assert float(_acc(g, x_adv, y).mean()) < float(_acc(g, x, y).mean()) - 0.3


def test_pgd_at_least_as_strong_as_textbook_pgd() -> None:
    g, h, x, y = trained_pair()
    for model in (g, h):
        ours = pgd(model, x, y, EPS, steps=10, random_start=False)
        naive = _naive_linf_pgd(model, x, y, EPS, steps=10, step=2.5 * EPS / 10)
        # Same iterates, but ours keeps per example the best one (misclassified, else highest loss) where
        # textbook PGD returns the last: every example naive PGD breaks is broken, the others lose no loss.
        fooled_ours, fooled_naive = _acc(model, ours, y) == 0, _acc(model, naive, y) == 0
        assert bool((fooled_ours | ~fooled_naive).all())
        kept = ~fooled_ours
        assert bool((_ce(model, ours, y)[kept] >= _ce(model, naive, y)[kept] - 1e-5).all())
        assert int(fooled_ours.sum()) > 0


def test_targeted_pgd_moves_toward_the_target() -> None:
    g, _, x, y = trained_pair()
    target = (y + 1) % 10
    x_adv = pgd(g, x, target, EPS, steps=10, targeted=True, generator=torch.Generator().manual_seed(0))
    assert float(_ce(g, x_adv, target).mean()) < float(_ce(g, x, target).mean()) - 1.0
    with torch.no_grad():
        hit_adv = (g(x_adv).argmax(1) == target).float().mean()
        hit_clean = (g(x).argmax(1) == target).float().mean()
    assert float(hit_adv) > float(hit_clean) + 0.5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_never_worse_than_one_restart(norm: str) -> None:
    _, h, x, y = trained_pair()
    eps = EPS if norm == "linf" else 1.5
    one = pgd(h, x, y, eps, norm=norm, steps=5, generator=torch.Generator().manual_seed(3))
    three = pgd(h, x, y, eps, norm=norm, steps=5, restarts=3, generator=torch.Generator().manual_seed(3))
    fooled_one, fooled_three = _acc(h, one, y) == 0, _acc(h, three, y) == 0
    assert bool((fooled_three | ~fooled_one).all())  # every example broken by 1 restart stays broken
    assert int(fooled_three.sum()) >= int(fooled_one.sum())
    kept = ~fooled_three  # where no restart succeeded, the highest loss is kept
    assert bool((_ce(h, three, y)[kept] >= _ce(h, one, y)[kept] - 1e-6).all())


@pytest.mark.parametrize("mode", ["argmax", "jacobian"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_composite_at_alpha_zero_and_inf_equals_attacks_on_g_and_h(mode: str, norm: str) -> None:
    g, h, x, y = trained_pair()
    x, y = x[:64], y[:64]
    mixture = AdaptiveSmoothing(g, h, alpha=1.0, mode=mode, norm=norm)
    eps = EPS if norm == "linf" else 1.5
    kw = dict(eps=eps, norm=norm, steps=5, restarts=2)
    for alpha_t, single in ((0.0, g), (math.inf, h)):
        on_mix = composite_pgd(mixture, x, y, alpha_t, generator=torch.Generator().manual_seed(7), **kw)
        on_single = pgd(single, x, y, generator=torch.Generator().manual_seed(7), **kw)
        torch.testing.assert_close(on_mix, on_single, rtol=0, atol=1e-6)


def test_composite_attack_follows_the_chosen_alpha() -> None:
    g, h, x, y = trained_pair()
    mixture = AdaptiveSmoothing(g, h, alpha=0.0)
    x_adv = composite_pgd(mixture, x, y, 31.6, eps=EPS, steps=10, generator=torch.Generator().manual_seed(0))
    at_alpha = AdaptiveSmoothing(g, h, alpha=31.6)
    assert float(_acc(at_alpha, x_adv, y).mean()) < float(_acc(at_alpha, x, y).mean()) - 0.2


def test_gradient_masking_sanity_alpha_inf_matches_pgd_on_h() -> None:
    """Issue 3: attacking the mixture at α = ∞ must find h's robust accuracy (±1 point).

    The same random starts are used for all three attacks: on these small models the spread between
    random seeds alone is several points, so only equal starts isolate the gradient path (R, the mix and
    its clamps must pass h's gradient through unchanged).
    """
    g, h, x, y = trained_pair()
    kw = dict(eps=EPS, steps=20, restarts=3)
    on_h = _acc(h, pgd(h, x, y, generator=torch.Generator().manual_seed(1), **kw), y).mean()
    for mode in ("argmax", "jacobian"):
        mixture = AdaptiveSmoothing(g, h, alpha=math.inf, mode=mode)
        composite = composite_pgd(mixture, x, y, math.inf, generator=torch.Generator().manual_seed(1), **kw)
        adaptive = adaptive_pgd(mixture, x, y, generator=torch.Generator().manual_seed(1), **kw)
        for x_adv in (composite, adaptive):
            assert abs(float(_acc(mixture, x_adv, y).mean()) - float(on_h)) <= 0.01
    assert float(on_h) < float(_acc(h, x, y).mean()) - 0.3  # the attack does something


class _LogitPolicy(nn.Module):
    """A tiny differentiable policy β(x, g_out, h_out) for tests."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.lin = nn.Linear(20, 1)

    def forward(self, x: Tensor, g_out: Tensor, h_out: Tensor) -> Tensor:
        return 3 * torch.tanh(self.lin(torch.cat([g_out, h_out], dim=1))).squeeze(1)


def _state(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool]]:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def test_attacks_change_no_weights_modes_or_gradients() -> None:
    g, h, x, y = trained_pair()
    policy = _LogitPolicy()
    mixture = AdaptiveSmoothing(g, h, policy=policy)
    h.train()  # a mode the attack must leave alone (no BatchNorm/Dropout here, so outputs are unchanged)
    try:
        before = _state(mixture)
        pgd(g, x[:16], y[:16], EPS, steps=3)
        composite_pgd(mixture, x[:16], y[:16], 1.46, eps=EPS, steps=3)
        adaptive_pgd(mixture, x[:16], y[:16], eps=EPS, steps=3, restarts=2)
        after = _state(mixture)
    finally:
        h.eval()
    assert before[1] == after[1] and before[2] == after[2]
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    assert all(p.grad is None for p in mixture.parameters())


def test_adaptive_attack_breaks_the_policy_mixture_and_differs_from_fixed_alpha() -> None:
    g, h, x, y = trained_pair()
    mixture = AdaptiveSmoothing(g, h, policy=_LogitPolicy())
    x_adv = adaptive_pgd(mixture, x, y, eps=EPS, steps=10, generator=torch.Generator().manual_seed(0))
    _assert_in_ball(x_adv, x, EPS, "linf", (0.0, 1.0))
    assert float(_acc(mixture, x_adv, y).mean()) < float(_acc(mixture, x, y).mean()) - 0.2
    with torch.no_grad():
        alphas = mixture.forward_details(x).alpha
    assert float(alphas.std()) > 0  # the policy really varies α per input


def test_attacks_work_under_no_grad_and_inference_mode() -> None:
    g, _, x, y = trained_pair()
    ref = pgd(g, x[:16], y[:16], EPS, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = pgd(g, x[:16], y[:16], EPS, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        b = pgd(g, x[:16], y[:16], EPS, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, ref) and torch.equal(b.clone(), ref)


def test_paper_alphas() -> None:
    assert PAPER_ALPHAS[0] == 0 and math.isinf(PAPER_ALPHAS[-1]) and len(PAPER_ALPHAS) == 9
    assert list(PAPER_ALPHAS) == sorted(PAPER_ALPHAS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(norm="l1"), "linf"),
        (dict(eps=-0.1), "eps"),
        (dict(eps=math.nan), "eps"),
        (dict(steps=-1), "steps"),
        (dict(restarts=0), "restarts"),
        (dict(restarts=2, random_start=False), "random_start"),
        (dict(data_range=(1.0, 0.0)), "data_range"),
        (dict(data_range=(0.0, 0.5)), "outside data_range"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    g, _, x, y = trained_pair()
    args = dict(eps=EPS) | kwargs
    with pytest.raises(ValueError, match=message):
        pgd(g, x[:4], y[:4], **args)


def test_bad_inputs_raise_clear_errors() -> None:
    g, h, x, y = trained_pair()
    with pytest.raises(ValueError, match="labels of shape"):
        pgd(g, x[:4], y[:3], EPS)
    with pytest.raises(ValueError, match="labels of shape"):
        pgd(g, x[:4], y[:4].float(), EPS)
    with pytest.raises(ValueError, match="NaN"):
        pgd(g, torch.full_like(x[:4], math.nan), y[:4], EPS)
    with pytest.raises(ValueError, match="floating"):
        pgd(g, (x[:4] * 16).long(), y[:4], EPS)
    with pytest.raises(ValueError, match="predicts 10 classes"):
        pgd(g, x[:4], torch.full((4,), 12), EPS)
    with pytest.raises(ValueError, match="AdaptiveSmoothing"):
        composite_pgd(g, x[:4], y[:4], 1.0, eps=EPS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha_t"):
        composite_pgd(AdaptiveSmoothing(g, h, alpha=1.0), x[:4], y[:4], -1.0, eps=EPS)


def test_autoattack_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    g, _, x, y = trained_pair()
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(ImportError, match=r"robustmix\[attacks\]"):
        autoattack(g, x[:4], y[:4], EPS)


@pytest.mark.skipif(importlib.util.find_spec("pyautoattack") is None,
                    reason="pyautoattack not installed (pip install 'robustmix[attacks]')")
@pytest.mark.parametrize("version", ["standard", "apgd"])
def test_autoattack_bridge_on_a_tiny_model(version: str) -> None:
    g, h, x, y = trained_pair()
    x, y = x[:40], y[:40]
    h.train()
    try:
        before = _state(h)
        x_adv = autoattack(h, x, y, EPS, version=version, seed=0)
        after = _state(h)
    finally:
        h.eval()
    _assert_in_ball(x_adv, x, EPS, "linf", (0.0, 1.0))
    assert before[1] == after[1] and before[2] == after[2] and all(p.grad is None for p in h.parameters())
    robust_aa = float(_acc(h, x_adv, y).mean())
    robust_pgd = float(_acc(h, pgd(h, x, y, EPS, steps=20), y).mean())
    assert robust_aa <= robust_pgd + 0.05
    assert robust_aa < float(_acc(h, x, y).mean())


@pytest.mark.skipif(importlib.util.find_spec("pyautoattack") is None,
                    reason="pyautoattack not installed (pip install 'robustmix[attacks]')")
def test_autoattack_on_the_mixture_and_in_l2() -> None:
    g, h, x, y = trained_pair()
    x, y = x[:20], y[:20]
    mixture = AdaptiveSmoothing(g, h, alpha=6.81)
    x_adv = autoattack(mixture, x, y, EPS, version="apgd", seed=0)
    _assert_in_ball(x_adv, x, EPS, "linf", (0.0, 1.0))
    assert float(_acc(mixture, x_adv, y).mean()) < float(_acc(mixture, x, y).mean())
    x_adv = autoattack(h, x, y, 1.5, norm="l2", version="apgd", seed=0)
    _assert_in_ball(x_adv, x, 1.5, "l2", (0.0, 1.0))
    with pytest.raises(ValueError, match="standard"):
        autoattack(h, x, y, EPS, version="fast")
