"""Time of ``import robustmix`` in fresh interpreters, next to ``import torch`` alone (which it includes).

    python benchmarks/import_time.py [--runs 7]

Prints the medians over the runs of the cumulative import time that ``python -X importtime`` reports for
``robustmix`` and for ``torch``, their difference (what robustmix itself adds: its modules and the packages
only it needs), how many ``robustmix.*`` modules are loaded, and a JSON line. Run it with ``PYTHONPATH``
pointing at another checkout to compare two versions on one machine.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys


def cumulative_us(stderr: str, module: str) -> int:
    """The cumulative microseconds of ``module``'s line in ``-X importtime`` output."""
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", line)
        if match and match[2] == module:
            return int(match[1])
    raise ValueError(f"no import-time line for {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    code = "import robustmix, sys; print(sum(m.startswith('robustmix') for m in sys.modules))"
    totals, torch_times, counts = [], [], []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
        totals.append(cumulative_us(out.stderr, "robustmix") / 1e6)
        torch_times.append(cumulative_us(out.stderr, "torch") / 1e6)
        counts.append(int(out.stdout.strip()))
    total, torch_alone = statistics.median(totals), statistics.median(torch_times)
    print(f"import robustmix: {total:.2f} s (median of {args.runs}), of which import torch {torch_alone:.2f} s; "
          f"robustmix adds {total - torch_alone:.2f} s ({total / torch_alone:.2f}x torch alone); "
          f"{counts[0]} robustmix modules loaded")
    print(json.dumps({"import_s": total, "torch_s": torch_alone, "added_s": total - torch_alone,
                      "ratio_to_torch": total / torch_alone, "modules": counts[0]}))


if __name__ == "__main__":
    main()
