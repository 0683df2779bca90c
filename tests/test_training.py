"""PolicyTrainer (eq. 9): loss values, learning, frozen base models, data sharding, resume-after-kill."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from robustmix.nn.policies import PolicyNet
from robustmix.smoothing import AdaptiveSmoothing
from robustmix.training import PolicyTrainer, alpha_star_sign, composite_loss

ROOT = Path(__file__).resolve().parents[1]


def _problem(n: int = 48, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    g, h = make_cnn(3, seed=seed), make_cnn(3, seed=seed + 1)
    torch.manual_seed(seed)
    policy = PolicyNet(g, h, ["1"], ["1"], width=4, depth=1, hidden=8)
    return AdaptiveSmoothing(g, h, policy=policy, mode="argmax"), x, y


def _trainer(model, x, y, **kw):
    args = dict(
        eps=0.1, alphas=(0.0, 1.0, math.inf), beta0=0.0, attack_steps=2, adaptive_steps=2, batch_size=16
    )
    args.update(kw)
    return PolicyTrainer(model, x, y, progress=False, **args)


@settings(max_examples=20)
@given(
    logits=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    label=st.integers(0, 2),
    beta=st.floats(-14, 14),
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_composite_loss_matches_eq9(logits, label, beta, sign):
    c1, c2, c3 = 0.5, 0.8, 3.2
    ce = -logits[label] + math.log(sum(math.exp(v) for v in logits))
    expected = (ce + c1) * (c2 + max(0.0, c3 - sign * beta))
    got = composite_loss(
        torch.tensor([logits], dtype=torch.float64),
        torch.tensor([label]),
        torch.tensor([beta], dtype=torch.float64),
        torch.tensor([sign], dtype=torch.float64),
        c1,
        c2,
        c3,
    )
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_alpha_star_sign():
    beta0 = math.log(55.0)
    assert alpha_star_sign(0.0, beta0) == 1.0 and alpha_star_sign(31.6, beta0) == 1.0
    assert alpha_star_sign(147.0, beta0) == -1.0 and alpha_star_sign(math.inf, beta0) == -1.0


def test_loss_decreases_on_a_tiny_problem():
    """Clean inputs (label: prefer g) against PGD at α_t = 0 (label: prefer h): the policy can learn it."""
    model, x, y = _problem()
    trainer = _trainer(model, x, y, eps=0.5, alphas=(0.0,), adaptive_steps=0, lr=1e-2)
    xb, yb = x[:16], y[:16]
    losses = [trainer.training_step(xb, yb)["loss"] for _ in range(30)]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert trainer.step == 30 and len(trainer.history) == 30


def test_base_models_unchanged_by_training():
    model, x, y = _problem()
    g, h = model.g, model.h
    h[0].weight.requires_grad_(False)  # a mixed set of flags must come back as it was
    saved = {
        k: v.clone()
        for k, v in [*g.state_dict().items(), *(("h." + k, v) for k, v in h.state_dict().items())]
    }
    flags = [p.requires_grad for p in [*g.parameters(), *h.parameters()]]
    trainer = _trainer(model, x, y)
    policy_before = [p.detach().clone() for p in model.policy.parameters()]
    trainer.fit(steps=3)
    after = {k: v for k, v in [*g.state_dict().items(), *(("h." + k, v) for k, v in h.state_dict().items())]}
    assert saved.keys() == after.keys()
    assert all(torch.equal(saved[k], after[k]) for k in saved)
    assert flags == [p.requires_grad for p in [*g.parameters(), *h.parameters()]]
    assert all(p.grad is None for p in [*g.parameters(), *h.parameters()])
    assert not g.training and not h.training
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(policy_before, model.policy.parameters(), strict=True)
    )


def test_data_order_is_seeded_and_sharded():
    model, x, y = _problem(n=40)
    full = _trainer(model, x, y, batch_size=4, seed=3)
    ranks = [_trainer(model, x, y, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        everything = torch.cat(full.batch_indices(epoch))
        assert sorted(everything.tolist()) == list(range(40))
        shards = [torch.cat(t.batch_indices(epoch)) for t in ranks]
        assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
        assert sorted(torch.cat(shards).tolist()) == list(range(40))
    assert not torch.equal(torch.cat(full.batch_indices(0)), torch.cat(full.batch_indices(1)))


def test_global_batches_over_ranks_are_the_single_process_batches():
    model, x, y = _problem(n=40)
    full = _trainer(model, x, y, batch_size=6, seed=3)
    ranks = [_trainer(model, x, y, batch_size=2, seed=3, rank=r, world_size=3) for r in range(3)]
    assert full.batches_per_epoch == 6 and all(t.batches_per_epoch == 6 for t in ranks)  # 36 of 40 used
    for epoch in range(2):
        for k, batch in enumerate(full.batch_indices(epoch)):
            union = torch.cat([t.batch_indices(epoch)[k] for t in ranks])
            assert sorted(union.tolist()) == sorted(batch.tolist())
    other_seed = _trainer(model, x, y, batch_size=6, seed=4)
    assert not torch.equal(torch.cat(other_seed.batch_indices(0)), torch.cat(full.batch_indices(1)))


def test_bad_arguments():
    model, x, y = _problem()
    fixed = AdaptiveSmoothing(model.g, model.h, alpha=1.0)
    with pytest.raises(ValueError, match="built with policy"):
        PolicyTrainer(fixed, x, y, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        PolicyTrainer(model, x, y, eps=0.0)
    with pytest.raises(ValueError, match="labels|int64"):
        PolicyTrainer(model, x, y.float(), eps=0.1)
    with pytest.raises(ValueError, match="alphas_per_batch"):
        PolicyTrainer(model, x, y, eps=0.1, alphas=(0.0, 1.0), alphas_per_batch=3)
    model.g.train()
    with pytest.raises(ValueError, match="eval mode"):
        PolicyTrainer(model, x, y, eps=0.1)


def test_a_rank_without_a_process_group_refuses_to_train_alone():
    model, x, y = _problem()
    trainer = _trainer(model, x, y, batch_size=4, rank=1, world_size=2)  # sharding alone is fine
    assert len(torch.cat(trainer.batch_indices(0))) == len(x) // 2
    with pytest.raises(ValueError, match="not initialised.*init_from_env"):
        trainer.fit(steps=1)
    assert trainer.step == 0


_SCRIPT = textwrap.dedent(
    """
    import math, os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_training import _problem, _trainer
    from safetensors.torch import save_file
    ckpt, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model, x, y = _problem()
    trainer = _trainer(model, x, y, checkpoint_dir=ckpt, checkpoint_every=2, resume=True)
    print("start", trainer.step, flush=True)
    def callback(tr, metrics):
        if tr.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.fit(steps=5, callback=callback)
    tensors = {{"policy." + k: v for k, v in model.policy.state_dict().items()}}
    for pid, state in trainer.optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"opt.{{pid}}.{{key}}"] = value
    tensors["rng"] = trainer.generator.get_state()
    save_file({{k: v.contiguous() for k, v in tensors.items()}}, out)
    print("losses", [round(h["loss"], 12) for h in trainer.history], flush=True)
    """
)


def test_resume_after_kill_is_bit_identical(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(ckpt: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(ckpt), str(out), str(kill_at)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )

    straight = run(tmp_path / "a", tmp_path / "a.safetensors", kill_at=-1)
    assert straight.returncode == 0, straight.stderr
    killed = run(tmp_path / "b", tmp_path / "b.safetensors", kill_at=3)
    assert killed.returncode == -9, (
        killed.stderr
    )  # died by SIGKILL after step 3, checkpoint of step 2 on disk
    assert not (tmp_path / "b.safetensors").exists()
    resumed = run(tmp_path / "b", tmp_path / "b.safetensors", kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr
    assert "start 2" in resumed.stdout
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert straight.stdout.splitlines()[-1] == resumed.stdout.splitlines()[-1]  # same loss history
