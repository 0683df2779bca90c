"""``make bench``: run every benchmark script in this folder, one after another."""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = ["import_time.py", "sensitivity.py", "memory.py", "memory_format.py", "training.py", "ddp.py", "calibration.py"]

if __name__ == "__main__":
    failed = []
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE).returncode != 0:
            failed.append(name)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
