"""cogvid: generate videos with CogVideoX models in their native SAT format.

    import cogvid
    pipe = cogvid.load("cogvideox-2b")
    video = pipe.generate("a red ball bouncing", seed=42)
    video.save("ball.mp4")

The public API is imported lazily so that ``import cogvid`` (and ``cogvid --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from cogvid.errors import Cancelled, CogvidError

_LAZY = {
    "load": "cogvid.pipeline",
    "VideoPipeline": "cogvid.pipeline",
    "Video": "cogvid.pipeline",
    "ProgressEvent": "cogvid.pipeline",
    "VideoDiffusionEngine": "cogvid.engine",
}

__all__ = ["__version__", "Cancelled", "CogvidError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cogvid' has no attribute {name!r}")
