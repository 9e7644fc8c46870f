"""The benchmark scripts run end to end (tiny settings: this checks they work, it times nothing)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "train_step.py"


def test_train_step_benchmark_runs():
    args = ["--preset", "mini", "--batch-size", "4", "--rounds", "1", "--steps", "1", "--warmup", "0"]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "minivit" in result.stdout and "img/s" in result.stdout


def test_matmul_benchmark_runs():
    pytest.importorskip("torch", reason="benchmarks/matmul.py compares with torch")
    args = ["--preset", "mini", "--batch-size", "2", "--rounds", "1", "--repeats", "1"]
    result = subprocess.run([sys.executable, str(BENCHMARKS / "matmul.py"), *args], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("dW=XᵀdY") == 4 and "numpy / torch" in result.stdout
