"""Resuming PolicyTrainer continues the same run or refuses: every setting that shapes the result is stored in
the checkpoint and compared, and each difference is listed."""

from __future__ import annotations

import json
import math

import pytest
from test_training import _problem, _trainer


def _checkpointed(tmp_path, **kw):
    model, x, y = _problem()
    trainer = _trainer(model, x, y, checkpoint_dir=tmp_path, checkpoint_every=1, **kw)
    trainer.fit(steps=1)
    return model, x, y


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(eps=0.2), "eps"),
        (dict(alphas=(0.0, math.inf)), "alphas"),
        (dict(batch_size=8), "batch_size"),
        (dict(lr=3e-4), "lr"),
        (dict(beta0=1.0), "beta0"),
        (dict(c1=0.1), "c1"),
        (dict(attack_steps=3), "attack_steps"),
        (dict(adaptive_steps=1), "adaptive_steps"),
        (dict(step_size=0.01), "step_size"),
        (dict(eps_scale_range=(0.5, 1.0)), "eps_scale_range"),
        (dict(alphas_per_batch=2), "alphas_per_batch"),
        (dict(norm="l2"), "norm"),
        (dict(seed=3), "seed"),
    ],
)
def test_resume_with_another_setting_is_refused(tmp_path, change, key):
    model, x, y = _checkpointed(tmp_path)
    with pytest.raises(ValueError, match=rf"other settings \(.*{key}: checkpoint"):
        _trainer(model, x, y, checkpoint_dir=tmp_path, resume=True, **change)


def test_every_difference_is_listed_and_the_data_and_mixture_count(tmp_path):
    model, x, y = _checkpointed(tmp_path)
    with pytest.raises(ValueError) as err:
        _trainer(model, x, y, checkpoint_dir=tmp_path, resume=True, eps=0.3, lr=1.0, batch_size=4)
    message = str(err.value)
    assert all(f"{k}: checkpoint" in message for k in ("eps", "lr", "batch_size"))
    other_x = x.clone()
    other_x[0, 0, 0, 0] = 1 - other_x[0, 0, 0, 0]
    with pytest.raises(ValueError, match="training_data"):
        _trainer(model, other_x, y, checkpoint_dir=tmp_path, resume=True)
    model.space = "prob"
    with pytest.raises(ValueError, match="mixture"):
        _trainer(model, x, y, checkpoint_dir=tmp_path, resume=True)


def test_same_settings_resume_and_the_learning_rate_is_the_trainers(tmp_path):
    model, x, y = _checkpointed(tmp_path, lr=2e-3)
    trainer = _trainer(model, x, y, checkpoint_dir=tmp_path, resume=True, lr=2e-3)
    assert trainer.step == 1
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [2e-3]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["settings"] == trainer.settings()
    assert state["settings"]["alphas"] == [0.0, 1.0, "inf"]


def test_a_checkpoint_without_settings_resumes_with_a_warning(tmp_path):
    model, x, y = _checkpointed(tmp_path)
    path = tmp_path / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["settings"]
    path.write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="predates stored training settings"):
        trainer = _trainer(model, x, y, checkpoint_dir=tmp_path, resume=True)
    assert trainer.step == 1
