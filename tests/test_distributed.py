"""Two CPU processes under torchrun (gloo) train the same policy as one process with the same global batch."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

WORKER = pathlib.Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_process_ddp_equals_single_process(tmp_path):
    single, multi = tmp_path / "single.safetensors", tmp_path / "ddp.safetensors"
    run([sys.executable, str(WORKER), str(single), "16"])
    run([
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", str(WORKER), str(multi), "16",
    ])
    a, b = load_file(single), load_file(multi)
    assert a.keys() == b.keys() and a
    before = load_file(str(single) + ".init")
    assert any(not torch.allclose(a[k], before[k]) for k in a), "training did not move the policy"
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)

