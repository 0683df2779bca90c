"""Evaluation on what users bring: any class count with AutoAttack on, labels outside the model's classes,
and a mixture whose norm is not the suite's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmix.attacks import autoattack, autoattack_parts
from robustmix.demo.data import load_digits_split
from robustmix.evaluate import AttackSuite, clean_accuracy, evaluate_models, format_table, robust_accuracy
from robustmix.smoothing import AdaptiveSmoothing
from tests.test_attacks import one_thread

EPS = 0.1


def _digits_classifier(num_classes: int, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A small MLP trained on the digits 0..num_classes-1, and 12 test examples of those classes."""
    data = load_digits_split(seed=0)
    keep_train, keep_test = data.y_train < num_classes, data.y_test < num_classes
    x, y = data.x_train[keep_train], data.y_train[keep_train]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, num_classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), data.x_test[keep_test][:12], data.y_test[keep_test][:12]


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_default_suite_with_autoattack_runs_for_any_class_count(num_classes):
    with one_thread():
        model, x, y = _digits_classifier(num_classes)
        suite = AttackSuite(eps=EPS, steps=5, restarts=1)  # AutoAttack is on: pyautoattack is installed
        assert suite.use_autoattack
        robust = robust_accuracy(model, x, y, suite)
        pgd_only = robust_accuracy(model, x, y, AttackSuite(eps=EPS, steps=5, restarts=1, autoattack=False))
        assert bool((pgd_only | ~robust).all())  # one more attack never makes an example robust
        report = evaluate_models({"model": model}, x, y, suite)
    footer = format_table(report).splitlines()[-1]
    run, skipped = autoattack_parts("standard", num_classes)
    assert "APGD-CE" in footer and "SQUARE" in footer
    if num_classes < 4:
        assert "apgd-t" in skipped and f"APGD-T left out: not defined for {num_classes} classes" in footer
    else:
        assert not skipped and "left out" not in footer


@pytest.mark.parametrize("version", ["standard", "plus", "rand", "apgd"])
def test_autoattack_versions_on_three_classes(version):
    with one_thread():
        model, x, y = _digits_classifier(3)
        x, y = x[:4], y[:4]
        x_adv = autoattack(model, x, y, EPS, version=version, seed=0)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= EPS + 1e-6
    run, skipped = autoattack_parts(version, 3)
    assert "apgd-t" not in run and ("apgd-dlr" in run) == (version in ("plus", "rand"))


def test_autoattack_parts_follow_the_class_count():
    for version in ("standard", "plus", "rand", "apgd"):
        for c in range(2, 12):
            run, skipped = autoattack_parts(version, c)
            assert ("apgd-t" in run) == (c >= 4 and version in ("standard", "plus", "apgd"))
            assert ("apgd-dlr" in run) == (c >= 3 and version in ("plus", "rand"))
            assert "apgd-ce" in run


def test_labels_outside_the_models_classes_are_refused():
    model, x, y = _digits_classifier(3)
    suite = AttackSuite(eps=EPS, steps=2, restarts=1, autoattack=False)
    for bad in (3, 7, -1):
        labels = y.clone()
        labels[0] = bad
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            robust_accuracy(model, x, labels, suite)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            clean_accuracy(model, x, labels)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            evaluate_models({"m": model}, x, labels, suite)


def test_label_dtype_message_names_the_dtype():
    model, x, y = _digits_classifier(3)
    with pytest.raises(ValueError, match=r"int64 labels.*got torch\.int32"):
        robust_accuracy(model, x, y.int(), AttackSuite(eps=EPS, autoattack=False))


@pytest.mark.parametrize("mode, warns", [("argmax", True), ("jacobian", True), ("none", False)])
def test_mixture_norm_other_than_the_suites_warns(mode, warns):
    model, x, y = _digits_classifier(3)
    mixture = AdaptiveSmoothing(model, model, alpha=1.0, mode=mode, norm="linf")
    suite = AttackSuite(eps=0.5, norm="l2", steps=1, restarts=1, alphas=(1.0,), autoattack=False)
    if warns:
        with pytest.warns(UserWarning, match="norm='linf'.*'l2'"):
            robust_accuracy(mixture, x[:3], y[:3], suite)
    else:  # R = 1: the mixture does not use a norm
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            robust_accuracy(mixture, x[:3], y[:3], suite)
