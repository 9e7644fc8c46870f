"""The benchmark script runs end to end (a tiny setting: this checks it works, it times nothing)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def test_train_step_benchmark_runs():
    args = ["--preset", "mini", "--batch-size", "4", "--rounds", "1", "--steps", "1", "--warmup", "0"]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "minivit" in result.stdout and "img/s" in result.stdout
