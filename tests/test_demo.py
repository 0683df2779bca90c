"""``robustmix demo --quick`` and ``robustmix train`` end to end (subprocesses, small sizes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the machines are shared: one thread avoids oversubscription
    return subprocess.run(
        [sys.executable, "-m", "robustmix.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_demo_quick_prints_the_table_and_writes_the_plot(tmp_path):
    plot = tmp_path / "sweep.png"
    # AutoAttack is switched off only to keep this test short; the table's last line says so.
    result = _cli("demo", "--quick", "--no-progress", "--autoattack", "off", "--plot", str(plot))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row in (
        "g (standard CNN, α=0)",
        "h (PGD-trained CNN, α=∞)",
        "adaptive mixture (policy)",
        "nonlinear mix (calibrated)",
        "mixture α=1 ",
    ):
        assert row in out, out
    assert "per-example worst case over" in out and "no AutoAttack" in out
    assert "tried on every other row" in out and "surrogate" in out
    assert "robust gap to h" in out and "over the best fixed α" in out
    rows = [line for line in out.splitlines() if line.startswith(("g (", "h (", "adaptive mix", "mixture", "nonlinear"))]
    rows = [line for line in rows if line.rstrip().endswith("%")]
    assert len(rows) == 5, out
    for line in rows:
        clean, robust = (float(v.rstrip("%")) for v in line.split()[-2:])
        assert 0 <= robust <= clean <= 100, line
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_command_checkpoints_and_resumes(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = _cli(
        "train",
        "--quick",
        "--no-progress",
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "policy.safetensors").exists() and (out / "checkpoints" / "trainer_state.json").exists()
    second = _cli(
        "train",
        "--quick",
        "--no-progress",
        "--steps",
        "3",
        "--resume",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 2" in second.stdout and "trained 3 steps" in second.stdout
    assert "--resume" in _cli("train", "--help").stdout
