"""minivit: the Vision Transformer in NumPy/CuPy, every forward and backward written by hand."""

from . import backend, gradcheck, nn, ops, optim
from .models import PRESETS, ViT, ViTConfig, preset

__version__ = "0.1.0"

__all__ = ["PRESETS", "ViT", "ViTConfig", "backend", "gradcheck", "nn", "ops", "optim", "preset"]
