"""Cost of the training-free calibration (:func:`robustmix.calibrate`) against the attack on h it runs.

The target is calibration <= 1.5x the time of the margin-loss PGD on h alone: everything else (one forward
pass of g and h, the (s, p, c) grid search on stored logits) should be small next to the attack. Uses the
demo's g and h architectures on 400 digits images (random weights: the cost does not depend on them) and
PGD-20 with one restart at l_inf eps 0.02 (small enough that randomly initialised h keeps examples to
calibrate on; the cost does not depend on eps). Rounds interleave the two so machine drift
cancels. Usage: ``python benchmarks/calibration.py [--n 400] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import devices, interleaved_ratio

from robustmix import calibrate, pgd
from robustmix.demo.data import load_digits_split
from robustmix.nn.architectures.digits import digits_cnn

EPS = 0.02


def measure(device: torch.device, n: int, repeats: int) -> None:
    split = load_digits_split(seed=0)
    torch.manual_seed(0)
    g, h = digits_cnn().eval().to(device), digits_cnn().eval().to(device)
    x = split.x_train[:n].to(device)
    y = h(x).argmax(1).detach()  # labels h gets right clean, so the attack has work on every example

    def attack() -> None:
        pgd(h, x, y, EPS, steps=20, restarts=1, loss="margin", generator=torch.Generator().manual_seed(0))

    def calibration() -> None:
        calibrate(g, h, x, y, EPS, steps=20, restarts=1, batch_size=n, progress=False)

    ratio, t_cal, t_attack = interleaved_ratio(calibration, attack, device, repeats=repeats)
    print(f"[{device.type}] calibration = {ratio:.2f}x the attack on h alone "
          f"({t_cal:.2f} s vs {t_attack:.2f} s, n={n}; target <= 1.5x)")
    print(json.dumps({"device": device.type, "ratio": ratio, "calibration_s": t_cal, "attack_s": t_attack}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for device in devices():
        measure(device, args.n, args.repeats)


if __name__ == "__main__":
    main()
