from .igpt import IGPT, IGPTClassifier, IGPTClassifierConfig, IGPTConfig
from .vit import PRESETS, ViT, ViTConfig, preset

__all__ = ["IGPT", "IGPTClassifier", "IGPTClassifierConfig", "IGPTConfig", "PRESETS", "ViT", "ViTConfig", "preset"]
