"""Data-parallel PolicyTrainer throughput: 2 processes under torchrun against 1, same global batch.

Runs the demo's training recipe (digits CNN pair, PolicyNet, eq. 9 with PGD at 3 random α_t per batch plus
the adaptive attack) at a global batch of ``--batch`` (default 256, 4x the recipe's 64, so each process
still has a batch worth parallelising) for ``--steps`` timed steps after ``--warmup`` steps, launched with
``torchrun --nproc_per_node=N`` (gloo on CPU). Prints training throughput (examples per second) and:

- scaling = 2 processes x T threads / 1 process x T threads: what a second worker of the same size adds
  (the usual data-parallel measure: one GPU against two);
- machine ceiling = two independent single processes with half the batch each, run at the same time with
  no communication, against one: the most any data-parallel scheme can get from two workers here;
- on this machine = 2 processes x 1 thread / 1 process x all threads: what DDP gains when the machine's
  cores are shared out (only meaningful with at least 2 cores).

Each ratio is the median over ``--rounds`` rounds that run the configurations back to back (single runs on a
shared 2-core machine moved by 30 %). Usage: ``python benchmarks/ddp.py [--batch 256] [--rounds 3]
[--steps 8] [--warmup 2] [--threads 1]``; one JSON line closes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(steps: int, warmup: int, batch: int) -> None:
    import torch
    import torch.distributed as dist

    from robustmix.demo import build_demo_mixture, demo_trainer
    from robustmix.demo.data import load_digits_split
    from robustmix.distributed import broadcast_module, close_process_group, init_from_env
    from robustmix.nn.architectures.digits import digits_cnn

    ctx = init_from_env(device="cpu")
    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    g, h = broadcast_module(digits_cnn().eval()), broadcast_module(digits_cnn().eval())
    trainer = demo_trainer(build_demo_mixture(g, h), split, quick=False, progress=False, ctx=ctx, batch_size=batch)
    trainer.fit(steps=warmup)
    if ctx.distributed:
        dist.barrier()
    start = time.perf_counter()
    trainer.fit(steps=warmup + steps)
    if ctx.distributed:
        dist.barrier()
    seconds = time.perf_counter() - start
    if ctx.is_main:
        print(json.dumps({"examples_per_s": steps * batch / seconds, "step_s": seconds / steps}))
    close_process_group()


def launch(nproc: int, threads: int, steps: int, warmup: int, batch: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", str(HERE), "--worker", "--steps", str(steps), "--warmup", str(warmup),
           "--batch", str(batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"torchrun with {nproc} processes failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {nproc} process(es) x {threads} thread(s): {result['examples_per_s']:.1f} examples/s "
          f"({result['step_s']:.2f} s per global step)", flush=True)
    return result


def independent_pair(threads: int, steps: int, warmup: int, batch: int) -> float:
    """Examples/s of two concurrent single processes with half the batch each and no communication at
    all: the most two workers can get out of this machine (its ceiling for the DDP scaling)."""
    cmd = [sys.executable, str(HERE), "--worker", "--steps", str(steps), "--warmup", str(warmup),
           "--batch", str(batch // 2)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parents[1])}
    env.pop("WORLD_SIZE", None)
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    rates = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"independent worker failed:\n{err[-3000:]}")
        rates.append(json.loads(out.strip().splitlines()[-1])["examples_per_s"])
    print(f"  2 independent processes x {threads} thread(s), no communication: {sum(rates):.1f} examples/s",
          flush=True)
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (1 process, 2 processes, 2 independent)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process in the scaling comparison")
    parser.add_argument("--batch", type=int, default=256, help="global batch (the demo recipe uses 64)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.warmup, args.batch)
        return
    cores = os.cpu_count() or 1
    print(f"PolicyTrainer throughput, demo recipe, global batch {args.batch}, CPU ({cores} cores):", flush=True)
    run = (args.steps, args.warmup, args.batch)
    scalings, ceilings = [], []
    for r in range(args.rounds):  # the three configurations back to back, so drift hits them alike
        print(f" round {r + 1}/{args.rounds}", flush=True)
        one = launch(1, args.threads, *run)["examples_per_s"]
        two = launch(2, args.threads, *run)["examples_per_s"]
        pair = independent_pair(args.threads, *run)
        scalings.append(two / one)
        ceilings.append(pair / one)
    scaling, ceiling = statistics.median(scalings), statistics.median(ceilings)
    print(f"DDP scaling: 2 processes / 1 process at {args.threads} thread(s) each = {scaling:.2f}x "
          f"(median of {args.rounds} rounds: {', '.join(f'{v:.2f}' for v in scalings)}; target >= 1.6x)")
    print(f"machine ceiling: 2 independent processes / 1 process = {ceiling:.2f}x "
          f"({', '.join(f'{v:.2f}' for v in ceilings)}); DDP reaches {scaling / ceiling:.0%} of it")
    out = {"cores": cores, "threads": args.threads, "batch": args.batch, "scaling": scaling,
           "scaling_rounds": scalings, "ceiling": ceiling, "ceiling_rounds": ceilings}
    if cores >= 2 and args.threads == 1:
        whole = launch(1, cores, *run)["examples_per_s"]
        two = launch(2, 1, *run)["examples_per_s"]
        print(f"on this machine: 2 processes x 1 thread / 1 process x {cores} threads = {two / whole:.2f}x (one round)")
        out["two_vs_one_all_threads"] = two / whole
    print(json.dumps(out))


if __name__ == "__main__":
    main()
