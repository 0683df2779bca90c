"""Every example runs end to end in its ``--smoke`` configuration (a subprocess each, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--smoke", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_has_a_smoke_test():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {"three_line_wrap.py", "train_policy.py", "training_loop.py"}


def test_three_line_wrap():
    out = run_example("three_line_wrap.py", "--alpha", "2")
    assert "mixture α=2" in out and "robust" in out


def test_train_policy_resumes(tmp_path):
    out = run_example("train_policy.py", "--checkpoint-dir", str(tmp_path))
    assert "trained 3 steps" in out and "adaptive mixture" in out
    assert (tmp_path / "trainer_state.json").exists()
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["checkpoint-00000003.safetensors"]


def test_training_loop():
    out = run_example("training_loop.py")
    assert "h fine-tuned" in out
