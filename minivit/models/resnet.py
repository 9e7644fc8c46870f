"""A BiT-style ResNet (Kolesnikov et al. 2020, "Big Transfer"), the ViT paper's convolutional baseline
(Sec. 4.1): pre-activation bottleneck units (He et al. 2016, "Identity Mappings") with Group
Normalization and Weight Standardization in place of batch norm, sized for CIFAR.

    model = ResNet.from_preset("mini")        # or ResNet(width=16, blocks=(2, 2, 2), ...)
    logits = model(images)                    # images (B, H, W, C) float -> (B, num_classes)
    model.backward(dlogits)                   # fills every parameter's .grad

What it assumes that a ViT must learn: every unit sees a 3×3 neighbourhood (locality) with the same
weights at every position (translation equivariance); the receptive field grows with depth by
construction, where a ViT's attention distance is learned (notebook 04).

The layout, channels-last like the rest of minivit:
  root       StdConv 3×3, stride 1, `width` channels (CIFAR's 32×32 needs no early downsampling; BiT's
             ImageNet root is a 7×7 stride-2 convolution and a max pool)
  stage s    blocks[s] units of output width 4·width·2^s (s from 0), each
                 h = ReLU(GN(x));  y = conv1×1(h) -> GN, ReLU -> conv3×3 -> GN, ReLU -> conv1×1
                 out = y + shortcut,  shortcut = x, or conv1×1(h) where the shape changes
             (a bottleneck of width out/4; the first unit of every stage after the first halves the
             side with stride 2 in its 3×3 convolution and its shortcut, as in BiT)
  head       GN, ReLU, the mean over positions, Linear (zero at the start, as in BiT)
"""

from dataclasses import dataclass

from .. import ops
from ..nn import GroupNorm, Linear, Module, ReLU, StdConv2d
from .inputs import check_images
from .presets import Configured, from_presets


@dataclass(frozen=True)
class ResNetConfig:
    image_size: int = 32
    num_classes: int = 10
    width: int = 24  # the root's channels; stage s has 4·width·2^s output channels
    blocks: tuple = (2, 2, 2)  # units per stage
    groups: int = 8  # GroupNorm's groups (BiT: 32, at its wider layers)
    in_channels: int = 3

    def __post_init__(self):  # a checkpoint's JSON gives a list
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.width < 1 or not self.blocks or min(self.blocks) < 1:
            raise ValueError(f"width and every stage's blocks must be >= 1, got width {self.width}, blocks {self.blocks}")
        if self.width % self.groups:  # every GroupNorm's channels (width·2^s) divide into the groups then
            raise ValueError(f"width {self.width} is not divisible into {self.groups} groups")
        if self.image_size % (1 << (len(self.blocks) - 1)):
            raise ValueError(f"image {self.image_size}×{self.image_size} does not halve {len(self.blocks) - 1} times")


PRESETS = {
    # Near the mini ViT's 0.55 M parameters: 0.48 M.
    "mini": ResNetConfig(),
    # Near the tiny ViT's 1.8 M parameters: 1.9 M.
    "tiny": ResNetConfig(width=48),
}


def preset(name, **overrides):
    """A named ResNetConfig, with any field overridden: preset("mini", num_classes=100)."""
    return from_presets(PRESETS, name, "ResNet preset", **overrides)


class Bottleneck(Module):
    """One pre-activation bottleneck unit (see the module docstring): (B, H, W, C_in) -> (B, H/s, W/s, C_out)."""

    def __init__(self, in_channels, out_channels, stride, groups):
        mid = out_channels // 4
        self.norm1, self.relu1 = GroupNorm(in_channels, groups), ReLU()
        self.conv1 = StdConv2d(in_channels, mid, 1)
        self.norm2, self.relu2 = GroupNorm(mid, groups), ReLU()
        self.conv2 = StdConv2d(mid, mid, 3, stride=stride, padding=1)
        self.norm3, self.relu3 = GroupNorm(mid, groups), ReLU()
        self.conv3 = StdConv2d(mid, out_channels, 1)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = StdConv2d(in_channels, out_channels, 1, stride=stride)

    def forward(self, x):
        h = self.relu1(self.norm1(x))  # the pre-activation, shared by the residual branch and a projection
        y = self.conv1(h)
        y = self.conv2(self.relu2(self.norm2(y)))
        y = self.conv3(self.relu3(self.norm3(y)))
        return y + (self.shortcut(h) if hasattr(self, "shortcut") else x)

    def backward(self, dout):
        dy = self.norm3.backward(self.relu3.backward(self.conv3.backward(dout)))
        dy = self.norm2.backward(self.relu2.backward(self.conv2.backward(dy)))
        dh = self.conv1.backward(dy)
        if hasattr(self, "shortcut"):
            return self.norm1.backward(self.relu1.backward(dh + self.shortcut.backward(dout)))
        return self.norm1.backward(self.relu1.backward(dh)) + dout  # the identity passes dout on unchanged


class ResNet(Configured, Module):
    """The BiT-style ResNet classifier (see the module docstring).

    Parameters (names as in state_dict()):
      root          StdConv2d(C, width, 3)
      units.i       Bottleneck: norm1..3 (GroupNorm), conv1..3 (StdConv2d), shortcut (where the shape changes)
      norm          GroupNorm of the last stage's output
      head          Linear(4·width·2^(S-1), num_classes), zero at the start
    """

    config_class = ResNetConfig
    preset = staticmethod(preset)

    def __init__(self, *fields, **config):
        """ResNet(the fields of ResNetConfig, by name or in its order), e.g. ResNet(width=8, blocks=(1, 1))."""
        c = self.config = self.config_class(*fields, **config)
        self.root = StdConv2d(c.in_channels, c.width, 3, padding=1)
        self.units, channels = [], c.width
        for stage, count in enumerate(c.blocks):
            out = 4 * c.width << stage
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                self.units.append(Bottleneck(channels, out, stride, c.groups))
                channels = out
        self.norm, self.relu = GroupNorm(channels, c.groups), ReLU()
        self.head = Linear(channels, c.num_classes)
        for p in self.head.parameters():
            p.data[...] = 0

    def features(self, images):
        """The pooled pre-logits (B, C_last): what a linear probe or few-shot evaluation reads."""
        check_images(self, images)
        x = self.root(images)
        for unit in self.units:
            x = unit(x)  # (B, H / 2^s, W / 2^s, 4·width·2^s) after stage s
        x = self.relu(self.norm(x))
        b, h, w, c = x.shape
        pooled, self._pool_cache = ops.mean_pool_forward(x.reshape(b, h * w, c))
        self._map_shape = x.shape
        return pooled

    def forward(self, images):
        """images: (B, H, W, C) floating point -> logits (B, num_classes)"""
        return self.head(self.features(images))

    def backward(self, dlogits):
        """dlogits: (B, num_classes) -> dimages (B, H, W, C); fills every parameter's grad."""
        dx = ops.mean_pool_backward(self.head.backward(dlogits), self._pool_cache).reshape(self._map_shape)
        dx = self.norm.backward(self.relu.backward(dx))
        for unit in reversed(self.units):
            dx = unit.backward(dx)
        return self.root.backward(dx)

    def flops(self):
        """Multiply-adds of one image's forward (the convolutions and the head), counted from the shapes."""
        side, total = self.config.image_size, 0
        for conv, stride in self._convolutions():
            side //= stride
            k, _, c_in, c_out = conv.weight.shape
            total += side * side * k * k * c_in * c_out
        return total + self.head.weight.shape[0] * self.head.weight.shape[1]

    def _convolutions(self):
        """(StdConv2d, how much it shrinks the side before it) in forward order, shortcuts beside their unit."""
        yield self.root, 1
        for unit in self.units:
            stride = unit.conv2.stride
            yield unit.conv1, 1
            yield unit.conv2, stride
            yield unit.conv3, 1
            if hasattr(unit, "shortcut"):
                yield unit.shortcut, 1  # at the unit's output side, already shrunk
