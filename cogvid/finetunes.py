"""LoRA fine-tunes as ``cogvid lora`` uses them: describe one, or merge one into a new base checkpoint.

Both return JSON-ready dicts for the CLI to render; the tensor work is :mod:`cogvid.lora`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cogvid.errors import MissingFileError
from cogvid.request import LoraSpec

BASE_DRIFT = 1e-2  # max |diff| of layer 0 qkv above which a LoRA's own base is "another model"


def inspect_lora(path: str | Path) -> dict[str, Any]:
    """Rank, scaling, layers, projections, size, dtype and the models a LoRA fits (``cogvid lora inspect``)."""
    from cogvid.lora import describe_lora, read_lora

    return describe_lora(read_lora(path))


def resolve_base(base: str, weights: str | Path | None = None) -> Path:
    """A base transformer given as a folder, or a registry model's transformer folder under the weights root."""
    from cogvid.registry import get_model, load_registry

    path = Path(base).expanduser()
    if path.exists():
        return path
    if base in load_registry():
        folder = get_model(base).paths(weights).transformer
        if not folder.exists():
            raise MissingFileError(
                f"the transformer of {base} is not at {folder}",
                hint=f"download it (`cogvid models show {base}`) or pass --weights DIR",
            )
        return folder
    raise MissingFileError(
        f"base {base!r} is neither an existing checkpoint folder nor a known model name",
        hint="pass a SAT transformer folder (holding 'latest') or a name from `cogvid models list`",
    )


def apply_lora(base: str, lora: LoraSpec, out: str | Path, weights: str | Path | None = None) -> dict[str, Any]:
    """Merge ``lora`` into ``base`` and write a plain SAT checkpoint folder ``out`` (``cogvid lora apply``).

    The result says what was written; ``base_drift`` is how far the LoRA's own base weights are from
    ``base`` (over :data:`BASE_DRIFT`: it was probably trained on another model).
    """
    from cogvid.checkpoint import read_state_dict, split_engine_state
    from cogvid.layout import check_lora_folders
    from cogvid.lora import base_difference, merge_checkpoint

    base_path = resolve_base(base, weights)
    check_lora_folders([lora.path])
    started = time.perf_counter()
    written, (weights_read,) = merge_checkpoint(base_path, [lora], out)
    seconds = time.perf_counter() - started
    drift = base_difference(weights_read, split_engine_state(read_state_dict(base_path))["dit"])
    return {
        "path": str(Path(out).expanduser()),
        "file": str(written),
        "base": str(base_path),
        "lora": str(weights_read.source),
        "scale": lora.scale,
        "scaling": weights_read.scaling * lora.scale,
        "rank": weights_read.rank,
        "layers": len(weights_read.layers),
        "base_drift": drift,
        "seconds": round(seconds, 3),
    }
