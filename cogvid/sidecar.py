"""Reading a video's JSON sidecar back as the request that made it (``--from``, batch lines, the API).

A sidecar written by this cogvid stores the prepared request under ``"request"`` (see
:meth:`cogvid.request.GenerationRequest.to_json`). Sidecars of cogvid 0.1, written before that field
existed, hold the same settings as flat fields; they are read too. No torch here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cogvid.errors import MissingFileError, UsageError
from cogvid.request import GenerationRequest, LoraSpec, ModelChoice

SIDECAR_HINT = "give the .json file cogvid wrote beside a video"


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar's JSON object (MissingFileError if missing, UsageError if it is not one)."""
    file = Path(path).expanduser()
    if file.suffix.lower() == ".mp4" and file.with_suffix(".json").is_file():
        file = file.with_suffix(".json")  # the video's own sidecar
    if not file.is_file():
        raise MissingFileError(f"sidecar not found: {file}", hint=SIDECAR_HINT)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{file} is not a cogvid sidecar: {e}", hint=SIDECAR_HINT) from e
    if not isinstance(data, dict):
        raise UsageError(f"{file} is not a cogvid sidecar (no JSON object)", hint=SIDECAR_HINT)
    return data


def read_request(path: str | os.PathLike) -> GenerationRequest:
    """The request that made the video of sidecar ``path`` (a ``.json``, or its ``.mp4``)."""
    data = read_sidecar(path)
    if "request" in data:
        return GenerationRequest.from_json(data["request"], where=f"{path}: the request")
    return _legacy_request(data, path)


def replay_request(path: str | os.PathLike, changes: dict[str, Any] | None = None, model_changes: dict[str, Any] | None = None) -> GenerationRequest:
    """The request of sidecar ``path`` with ``changes`` (request fields) and ``model_changes`` (model choice
    fields) applied: the same video, but for what was changed. Another model name drops the recorded
    ``configs``/``overrides`` unless given too. The recorded offload mode is dropped unless given: where
    the parts sat changes no frame, so this machine's ``--memory`` picks again (VAE tiling, which
    changes pixels, is kept)."""
    recorded = read_request(path)
    model_changes = {"offload": None, **(model_changes or {})}
    if "name" in model_changes:
        model_changes.setdefault("configs", ())
        model_changes.setdefault("overrides", ())
    return recorded.replace(model=recorded.model.replace(**model_changes), **(changes or {}))


def _legacy_request(data: dict[str, Any], path: str | os.PathLike) -> GenerationRequest:
    """A request from the flat fields of a cogvid 0.1 sidecar."""
    if not isinstance(data.get("prompt"), str) or not isinstance(data.get("seed"), int):
        raise UsageError(f"{path} is not a cogvid sidecar (no prompt and seed)", hint=SIDECAR_HINT)
    decode = "diffusers" if data.get("decode") == "1.5-diffusers" else "original"
    size = (data.get("height"), data.get("width")) if data.get("image") is None else (None, None)
    loras = tuple(LoraSpec.from_json(item) for item in data.get("loras") or ())
    return GenerationRequest(
        prompt=data["prompt"],
        negative=data.get("negative_prompt") or "",
        image=data.get("image"),
        frames=data.get("requested_frames", data.get("frames")),
        height=size[0],
        width=size[1],
        fps=data.get("fps"),
        steps=data.get("steps"),
        guidance=data.get("guidance"),
        sampler=data.get("sampler"),
        seed=data["seed"],
        decode=decode,
        vae_tiling=bool(data.get("vae_tiling", False)),
        model=ModelChoice(name=data.get("model"), loras=loras),
    )


__all__ = ["read_request", "read_sidecar", "replay_request"]
