"""Two CPU processes under torchrun (gloo) train the same policy as one process with the same global batch,
and split a worst-case evaluation with the same per-example results as one process."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustmix.evaluate import AttackSuite, clean_accuracy, robust_accuracy
from tests.test_attacks import EPS, trained_pair

WORKER = pathlib.Path(__file__).with_name("ddp_worker.py")
EVAL_WORKER = pathlib.Path(__file__).with_name("eval_worker.py")
ROOT = WORKER.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], expect_ok: bool = True) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == expect_ok, done.stderr[-3000:]
    return done.stderr


def torchrun(nproc: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
    ]


@pytest.fixture(scope="module")
def single_process_policy(tmp_path_factory) -> pathlib.Path:
    """The policy one process trains with ``fit`` (and its initial weights beside it, ``.init``)."""
    single = tmp_path_factory.mktemp("single") / "single.safetensors"
    run([sys.executable, str(WORKER), str(single), "16"])
    return single


@pytest.mark.parametrize("mode", ["fit", "loop"])  # fit in two calls; a loop of our own over training_step
def test_two_process_ddp_equals_single_process(single_process_policy, tmp_path, mode):
    multi = tmp_path / f"{mode}.safetensors"
    run([*torchrun(2), str(WORKER), str(multi), "16", mode])
    a, b = load_file(single_process_policy), load_file(multi)
    assert a.keys() == b.keys() and a
    before = load_file(str(single_process_policy) + ".init")
    assert any(not torch.allclose(a[k], before[k]) for k in a), "training did not move the policy"
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)


def test_resume_under_torchrun_continues_bit_identically_with_batchnorm(tmp_path):
    # Attacks with random starts run with the policy's BatchNorm in eval mode: if a rank attacked with its
    # own running statistics, a resumed run (which restores rank 0's) would drift from the uninterrupted one.
    out = tmp_path / "resume.safetensors"
    run([*torchrun(2), str(WORKER), str(out), "16", "resume"])
    uninterrupted, resumed = load_file(out), load_file(str(out) + ".resumed")
    assert uninterrupted.keys() == resumed.keys()
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_ranks_start_from_rank0s_policy_and_end_with_the_same_batchnorm_statistics(tmp_path):
    out = tmp_path / "bn.safetensors"
    run([*torchrun(2), str(WORKER), str(out), "16", "bn"])
    start0, start1 = load_file(f"{out}.rank0.init"), load_file(f"{out}.rank1.init")
    for key in start0:  # the worker seeds each rank's policy differently
        assert torch.equal(start0[key], start1[key]), key
    rank0, rank1 = load_file(f"{out}.rank0"), load_file(f"{out}.rank1")
    initial = load_file(f"{out}.init")
    stats = [k for k in rank0 if k.endswith("running_mean")]
    assert stats and any(not torch.equal(rank0[k], initial[k]) for k in stats)  # the statistics moved
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> pathlib.Path:
    g, h, x, y = trained_pair()
    directory = tmp_path_factory.mktemp("eval")
    tensors = {f"g.{k}": v for k, v in g.state_dict().items()} | {f"h.{k}": v for k, v in h.state_dict().items()}
    save_file({**tensors, "x": x[:100].contiguous(), "y": y[:100].contiguous()}, str(directory / "pair.safetensors"))
    return directory


def test_evaluation_split_over_three_processes_equals_one_process(eval_dir):
    run([sys.executable, str(EVAL_WORKER), str(eval_dir), "single"])
    run([*torchrun(3), str(EVAL_WORKER), str(eval_dir), "multi"])
    single = load_file(eval_dir / "single-rank0.safetensors")
    for rank in range(3):
        multi = load_file(eval_dir / f"multi-rank{rank}.safetensors")
        assert multi.keys() == single.keys()
        for key in single:
            assert torch.equal(multi[key], single[key]), (rank, key)
    # Not vacuous: the attacks break some examples that are clean-correct, and some survive.
    robust = single["robust_h"].float().mean()
    assert 0.05 < robust < single["clean_g"].float().mean() - 0.05
    assert single["robust_mixture"].any()


@pytest.mark.parametrize("tag", ["mismatch", "shuffled", "suite"])
def test_ranks_with_different_data_or_attacks_fail_with_a_clear_error(eval_dir, tag):
    stderr = run([*torchrun(2), str(EVAL_WORKER), str(eval_dir), tag], expect_ok=False)
    assert stderr.count("ranks disagree on the examples") >= 2  # on every rank, not a hang or a wrong merge


def test_distributed_without_a_process_group_is_refused():
    g, h, x, y = trained_pair()
    suite = AttackSuite(eps=EPS, steps=1, restarts=1, alphas=(0.0,), autoattack=False)
    with pytest.raises(ValueError, match="torchrun"):
        robust_accuracy(g, x, y, suite, distributed=True)
    with pytest.raises(ValueError, match="init_from_env"):
        clean_accuracy(g, x, y, distributed=True)


def cli(*args: str) -> list[str]:
    return ["-m", "robustmix", *args]


def run_stdout(cmd: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_eval_command_under_torchrun_prints_the_single_process_table_once(tmp_path):
    args = cli("eval", "--quick", "--sweep", "--limit", "60", "--steps", "3", "--restarts", "2", "--alphas", "0,1,inf",
               "--batch-size", "16", "--autoattack", "off", "--no-progress", "--cache-dir", str(tmp_path))
    single = run_stdout([sys.executable, *args])
    multi = run_stdout([*torchrun(2), *args])
    assert "mixture α=1" in single and single.count("g (standard)") == 1
    assert multi == single


def test_train_command_under_torchrun_writes_one_policy(tmp_path):
    out = tmp_path / "run"
    stdout = run_stdout([*torchrun(2), *cli("train", "--quick", "--out", str(out), "--steps", "3", "--no-progress",
                                             "--cache-dir", str(tmp_path / "cache"))])
    assert stdout.count("trained 3 steps") == 1  # rank 0 reports, the other rank stays quiet
    assert load_file(out / "policy.safetensors")
    assert json.loads((out / "checkpoints" / "trainer_state.json").read_text())["step"] == 3
