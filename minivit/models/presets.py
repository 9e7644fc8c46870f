"""Named model configs: one lookup for every model's presets."""

from dataclasses import replace


def from_presets(presets, name, what, **overrides):
    """presets[name] with any field overridden; an unknown name is a ValueError listing the choices."""
    if name not in presets:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(presets)}")
    return replace(presets[name], **overrides)
