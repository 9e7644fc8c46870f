from .vit import PRESETS, ViT, ViTConfig, preset

__all__ = ["PRESETS", "ViT", "ViTConfig", "preset"]
