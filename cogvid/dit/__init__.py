"""The CogVideoX diffusion transformer on SwissArmyTransformer (the only package that imports ``sat``).

``import cogvid.dit`` is cheap: SAT is imported when :class:`DiffusionTransformer` (or a mixin)
is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DiffusionTransformer", "build_dit", "load_dit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cogvid.dit import model

        return getattr(model, name)
    raise AttributeError(f"module 'cogvid.dit' has no attribute {name!r}")
