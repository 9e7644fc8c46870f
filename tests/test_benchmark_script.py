"""The benchmark scripts run end to end (tiny settings: this checks they work, it times nothing)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script, *args):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_train_step_benchmark_runs():
    out = run("train_step.py", "--preset", "mini", "--batch-size", "4", "--rounds", "1", "--steps", "1",
              "--warmup", "0", "--sides", "minivit,plain")
    assert "ops: CPU kernels (minivit/kernels)" in out and "ops: plain ops" in out and "img/s" in out


def test_train_step_benchmark_runs_igpt():
    out = run("train_step.py", "--model", "igpt", "--batch-size", "2", "--rounds", "1", "--steps", "1", "--warmup",
              "0", "--sides", "minivit")  # fmt: skip
    assert "igpt preset cpu" in out and "img/s" in out


def test_generate_benchmark_runs():
    out = run("generate.py", "--image-size", "4", "--images", "1", "--completions", "2", "--rounds", "1")
    assert "identical tokens: True" in out


def test_matmul_benchmark_runs():
    pytest.importorskip("torch", reason="benchmarks/matmul.py compares with torch")
    out = run("matmul.py", "--preset", "mini", "--batch-size", "2", "--rounds", "1", "--repeats", "1")
    assert out.count("dW=XᵀdY") == 4 and "numpy / torch" in out
