"""What every model shares about its config: named presets, and building a model from a config or a
preset's name. A model's config is a frozen dataclass that checks its own fields when made, so a
model, a preset, TrainConfig.check and a checkpoint are all checked by the same lines."""

from dataclasses import asdict, replace


def from_presets(presets, name, what, **overrides):
    """presets[name] with any field overridden; an unknown name is a ValueError listing the choices."""
    if name not in presets:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(presets)}")
    return replace(presets[name], **overrides)


def check_heads(dim, heads):
    """The attention heads split the width evenly: a ValueError otherwise."""
    if dim % heads:
        raise ValueError(f"dim {dim} is not divisible by heads {heads}")


class Configured:
    """A model built from its config: `config_class` (the dataclass its keyword arguments fill) and
    `preset` (a preset's name and overrides -> a config) are set by each model."""

    config_class = preset = None

    @classmethod
    def from_config(cls, config):
        return cls(**asdict(config))

    @classmethod
    def from_preset(cls, name, *args, **overrides):
        return cls.from_config(cls.preset(name, *args, **overrides))
