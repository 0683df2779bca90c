"""Worker for tests/test_distributed.py: worst-case evaluation, single- or multi-process.

Run as ``python tests/eval_worker.py DIR TAG`` or under ``torchrun --nproc_per_node=N``. Reads the pair and
the examples from ``DIR/pair.safetensors`` and writes each rank's per-example results to
``DIR/TAG-rank{r}.safetensors``. With ``TAG == "mismatch"`` rank 1 drops an example, with ``"shuffled"`` it
reverses their order, with ``"suite"`` it attacks with fewer steps; each must fail on every rank with a clear
error instead of merging wrong results.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import torch
from safetensors.torch import load_file, save_file

from robustmix import AdaptiveSmoothing
from robustmix.distributed import close_process_group, init_from_env
from robustmix.evaluate import AttackSuite, alpha_sweep, clean_accuracy, robust_accuracy
from tests.test_attacks import EPS, _LogitPolicy, _mlp


def main(directory: str, tag: str) -> None:
    ctx = init_from_env(device="cpu")
    saved = load_file(f"{directory}/pair.safetensors")
    g, h = _mlp(0), _mlp(1)
    g.load_state_dict({k[2:]: v for k, v in saved.items() if k.startswith("g.")})
    h.load_state_dict({k[2:]: v for k, v in saved.items() if k.startswith("h.")})
    g.eval(), h.eval()
    x, y = saved["x"], saved["y"]
    if tag == "mismatch" and ctx.rank == 1:
        x, y = x[:-1], y[:-1]
    if tag == "shuffled" and ctx.rank == 1:  # same count, same label and pixel totals, other order
        x, y = x.flip(0), y.flip(0)
    # Random starts and restarts: the result only matches across world sizes if every chunk draws the same.
    suite = AttackSuite(eps=EPS, steps=4, restarts=2, alphas=(0.0, 1.46, math.inf), autoattack=False,
                        batch_size=23, seed=7)
    if tag == "suite" and ctx.rank == 1:  # same examples, a weaker attack
        suite = dataclasses.replace(suite, steps=3)
    distributed = ctx.distributed
    mixture = AdaptiveSmoothing(g, h, policy=_LogitPolicy())
    out = {
        "clean_g": clean_accuracy(g, x, y, batch_size=17, distributed=distributed),
        "robust_h": robust_accuracy(h, x, y, suite, progress=False, distributed=distributed),
        "robust_mixture": robust_accuracy(mixture, x, y, suite, progress=False, distributed=distributed),
    }
    sweep = alpha_sweep(mixture, x, y, suite, alphas=(1.46,), progress=False, distributed=distributed)
    out["sweep"] = torch.tensor([sweep[0].clean, sweep[0].robust], dtype=torch.float64)
    save_file(out, f"{directory}/{tag}-rank{ctx.rank}.safetensors")
    close_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
