from .igpt import IGPT, IGPTConfig
from .vit import PRESETS, ViT, ViTConfig, preset

__all__ = ["IGPT", "IGPTConfig", "PRESETS", "ViT", "ViTConfig", "preset"]
