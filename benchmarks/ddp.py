"""Data-parallel PolicyTrainer throughput: 2 processes under torchrun against 1, same global batch.

Runs the demo's training recipe (digits CNN pair, PolicyNet, eq. 9 with PGD at 3 random α_t per batch plus
the adaptive attack, global batch 64) for ``--steps`` timed steps after ``--warmup`` steps, launched with
``torchrun --nproc_per_node=N`` (gloo on CPU). Prints training throughput (examples per second) and:

- scaling = 2 processes x T threads / 1 process x T threads: what a second worker of the same size adds
  (the usual data-parallel measure: one GPU against two);
- on this machine = 2 processes x 1 thread / 1 process x all threads: what DDP gains when the machine's
  cores are shared out (only meaningful with at least 2 cores).

Usage: ``python benchmarks/ddp.py [--steps 8] [--warmup 2] [--threads 1]``; one JSON line closes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(steps: int, warmup: int) -> None:
    import torch
    import torch.distributed as dist

    from robustmix.data import load_digits_split
    from robustmix.demo import TRAIN_CONFIG, build_demo_mixture, demo_trainer
    from robustmix.demo_models import digits_cnn
    from robustmix.distributed import broadcast_module, init_from_env

    ctx = init_from_env(device="cpu")
    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    g, h = broadcast_module(digits_cnn().eval()), broadcast_module(digits_cnn().eval())
    trainer = demo_trainer(build_demo_mixture(g, h), split, quick=False, progress=False, ctx=ctx)
    trainer.fit(steps=warmup)
    if ctx.distributed:
        dist.barrier()
    start = time.perf_counter()
    trainer.fit(steps=warmup + steps)
    if ctx.distributed:
        dist.barrier()
    seconds = time.perf_counter() - start
    if ctx.is_main:
        print(json.dumps({"examples_per_s": steps * TRAIN_CONFIG["batch_size"] / seconds, "step_s": seconds / steps}))
    if ctx.distributed:
        dist.destroy_process_group()


def launch(nproc: int, threads: int, steps: int, warmup: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", str(HERE), "--worker", "--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"torchrun with {nproc} processes failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {nproc} process(es) x {threads} thread(s): {result['examples_per_s']:.1f} examples/s "
          f"({result['step_s']:.2f} s per global step)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per process in the scaling comparison")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.warmup)
        return
    cores = os.cpu_count() or 1
    print(f"PolicyTrainer throughput, demo recipe, global batch 64, CPU ({cores} cores):", flush=True)
    one = launch(1, args.threads, args.steps, args.warmup)
    two = launch(2, args.threads, args.steps, args.warmup)
    scaling = two["examples_per_s"] / one["examples_per_s"]
    print(f"DDP scaling: 2 processes / 1 process at {args.threads} thread(s) each = {scaling:.2f}x (target >= 1.6x)")
    out = {"cores": cores, "threads": args.threads, "one": one, "two": two, "scaling": scaling}
    if cores >= 2:
        whole = launch(1, cores, args.steps, args.warmup)
        split_cores = two["examples_per_s"] / whole["examples_per_s"] if args.threads == 1 else None
        if split_cores is not None:
            print(f"on this machine: 2 processes x 1 thread / 1 process x {cores} threads = {split_cores:.2f}x")
        out |= {"one_all_threads": whole, "two_vs_one_all_threads": split_cores}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
