"""cogvid: generate videos with CogVideoX models in their native SAT format.

The public API is imported lazily so that ``import cogvid`` (and ``cogvid --help``) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from cogvid.errors import Cancelled, CogvidError

__all__ = ["__version__", "Cancelled", "CogvidError"]
