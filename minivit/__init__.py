"""minivit: the Vision Transformer and iGPT in NumPy/CuPy, every forward and backward written by hand."""

import os
import sys

if "numpy" not in sys.modules:
    # OpenBLAS's idle threads spin for a while after each matmul, holding the cores that
    # the CPU kernels' row blocks (minivit/kernels) want for elementwise work; a short spin hands them back sooner.
    # OpenBLAS reads this once, when NumPy loads.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import backend, gradcheck, kernels, nn, ops, optim
from .models import IGPT, PRESETS, IGPTConfig, ViT, ViTConfig, preset

__version__ = "0.1.0"

__all__ = ["IGPT", "IGPTConfig", "PRESETS", "ViT", "ViTConfig", "backend", "gradcheck", "kernels", "nn", "ops", "optim", "preset"]
