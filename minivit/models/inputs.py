"""The checks of a model's input images, shared by the models that read them (ViT, ResNet)."""

from .. import backend


def check_images(model, images):
    """A ValueError naming what was expected unless images are (B, H, W, C) floats of the model's size,
    channels and dtype, all finite."""
    c = model.config
    xp = backend.array_module(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, H, W, C), got an array of shape {images.shape}")
    _, h, w, ch = images.shape
    if ch != c.in_channels:
        raise ValueError(f"expected {c.in_channels} channels (NHWC images), got {ch} in shape {images.shape}")
    if (h, w) != (c.image_size, c.image_size):
        raise ValueError(f"expected {c.image_size}×{c.image_size} images, got {h}×{w}")
    if images.dtype.kind != "f":
        raise ValueError(
            f"expected floating-point images, got {images.dtype}; convert with images.astype(np.float32) / 255"
        )
    if images.dtype != model.dtype:
        raise ValueError(f"expected {model.dtype} images (the model's dtype), got {images.dtype}")
    if not bool(xp.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
