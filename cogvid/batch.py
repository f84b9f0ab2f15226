"""Batch generation bookkeeping: prompt files as requests and resume keys.

A prompt file is either
* text: one prompt per line; ``prompt@@image`` for image-to-video (the original ``sample_video.py``
  format); a line that is the path of a cogvid sidecar (``.json``) makes that video again; blank
  lines and lines starting with ``#`` are skipped;
* JSON Lines (``.jsonl``/``.ndjson``): one object per line with ``prompt`` (or ``from``: a sidecar)
  and optional per-line settings (``negative``, ``seed``, ``steps``, ``guidance``, ``frames``,
  ``size``, ``image``, ``lora``, ``num_videos``, ``cache``); blank and ``#`` lines are skipped here too.
Both are UTF-8 with or without a BOM, with LF or CRLF line ends. Each line becomes a
:class:`~cogvid.request.GenerationRequest` built from the command line's (the template); a line that
cannot run becomes a :class:`Job` with ``error`` set (its line number is kept), so a batch reports
it and goes on.

Seeds: a line without its own seed gets ``base_seed + line_index`` (0-based line index), so reruns
are identical and commenting a line out leaves the other seeds alone. Video ``k`` of a job uses
``seed + k``. Each video has a key (:func:`job_key`), a hash of everything that decides its pixels;
it is stored in the sidecar as ``batch_key`` and ``--resume`` skips keys whose video is complete.

No typer or rich here; torch is not imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvid.claims import LOCK_NAME, BatchClaims, Claim  # the output-folder protocol, re-exported here
from cogvid.errors import CogvidError, MissingFileError, UsageError, require_file
from cogvid.outputs import SIDECAR_KEY, claim_output_folder, completed_outputs, partial_outputs
from cogvid.request import GenerationRequest, parse_loras
from cogvid.sidecar import read_request
from cogvid.spec import parse_size

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSONL_FIELDS = ("prompt", "from", "negative", "seed", "steps", "guidance", "frames", "size", "image", "lora", "num_videos", "cache")
JSONL_HINT = 'write {"prompt": "..."} on each line, with optional settings'
IMAGE_SEPARATOR = "@@"


@dataclass(frozen=True)
class Job:
    """One line of a prompt file: its request, or the reason it cannot run."""

    line: int  # 1-based line number in the file
    index: int  # 0-based position among the file's jobs (the sharding index)
    text: str  # what the line asks for, for messages and the summary (the prompt, or the sidecar path)
    request: GenerationRequest | None = None
    error: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def prompt(self) -> str:
        return self.request.prompt if self.request is not None else self.text

    def failed(self, error: CogvidError) -> Job:
        """This job marked as unable to run, with the error's message and hint."""
        return dataclasses.replace(self, error=error.message, hint=error.hint)


# ---------------------------------------------------------------------------------------------
# Reading prompt files


def read_lines(path: str | os.PathLike) -> list[str]:
    """The file's lines: UTF-8 (a BOM is dropped), LF, CRLF or CR line ends."""
    file = require_file(path, "prompt file", hint="give a text file, one prompt per line, or a .jsonl file")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise MissingFileError(f"cannot read {file}: {e}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{file} is not UTF-8 text (byte {e.start})", hint="save the prompt file as UTF-8") from e
    # Not str.splitlines(): it would also split at form feeds and Unicode separators inside prompts.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _skipped(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith("#")


def _beside(value: str, base_dir: Path) -> Path:
    """A relative path is looked up beside the prompt file first, then in the current folder."""
    path = Path(value).expanduser()
    if not path.is_absolute() and (base_dir / path).exists():
        return base_dir / path
    return path


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        return parse_size(value)
    integers = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if integers and len(value) == 2:
        return value[0], value[1]
    raise UsageError(f"must be \"HxW\" or [height, width], found {json.dumps(value)}")


def _from_sidecar(value: Any, base_dir: Path, template: GenerationRequest) -> GenerationRequest:
    """The request a sidecar recorded, to run on the batch's model (its LoRAs kept)."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"'from' must be the path of a cogvid sidecar (.json), found {json.dumps(value)}")
    recorded = read_request(_beside(value.strip(), base_dir))
    batch_model = template.model.name
    if batch_model is not None and recorded.model.name not in (None, batch_model):
        raise UsageError(
            f"{value} was made with {recorded.model.name}; this batch runs {batch_model}",
            hint=f"run it in a batch with -m {recorded.model.name}",
        )
    return recorded.replace(model=template.model.replace(loras=recorded.model.loras))


def _job_request(data: Any, line: int, template: GenerationRequest, base_dir: Path) -> GenerationRequest:
    """A JSONL object as a request: the template (or a sidecar's request), then each field in turn."""
    if not isinstance(data, dict):
        raise UsageError(f"expected a JSON object, found {type(data).__name__}", hint=JSONL_HINT)
    unknown = sorted(set(data) - set(JSONL_FIELDS))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UsageError(f"unknown field(s) {names}", hint=f"known fields: {', '.join(JSONL_FIELDS)}")
    given = {key: value for key, value in data.items() if value is not None}  # null: the command line's value
    if "from" in given:
        request = _from_sidecar(given.pop("from"), base_dir, template)
    else:
        prompt = given.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("'prompt' is missing or empty", hint=JSONL_HINT)
        request = template.replace(seed=(template.seed or 0) + line - 1)
    for key, value in given.items():
        try:
            if key == "prompt":
                request = request.replace(prompt=value.strip() if isinstance(value, str) else value)
            elif key == "size":
                request = request.replace(size=_size(value))
            elif key == "image":
                if not isinstance(value, str) or not value.strip():
                    raise UsageError(f"must be a path, found {json.dumps(value)}")
                request = request.replace(image=_beside(value.strip(), base_dir))
            elif key == "lora":
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
                    raise UsageError(f"must be \"PATH[:SCALE]\" or a list of them, found {json.dumps(value)}")
                request = request.replace(model=request.model.replace(loras=parse_loras(items, base_dir)))
            else:
                request = request.replace(**{key: value})
        except UsageError as e:
            raise type(e)(f"{key!r}: {e.message}", hint=e.hint) from None
    return request


def _text_request(text: str, line: int, template: GenerationRequest, base_dir: Path) -> GenerationRequest:
    prompt, image = text.strip(), None
    if prompt.lower().endswith(".json") and _beside(prompt, base_dir).is_file():
        return _from_sidecar(prompt, base_dir, template)
    if IMAGE_SEPARATOR in prompt:
        prompt, _, image_text = prompt.rpartition(IMAGE_SEPARATOR)
        prompt, image_text = prompt.strip(), image_text.strip()
        if not image_text:
            raise UsageError("nothing after '@@'", hint="write prompt@@path/to/image.png")
        image = _beside(image_text, base_dir)
    if not prompt:
        raise UsageError("the prompt is empty", hint="write prompt@@path/to/image.png")
    return template.replace(prompt=prompt, image=image, seed=(template.seed or 0) + line - 1)


def parse_prompt_file(path: str | os.PathLike, template: GenerationRequest = GenerationRequest()) -> list[Job]:
    """Every prompt line of ``path`` as a Job, in file order; a bad line is a Job with ``error``.

    ``template`` holds the command line's settings; its ``seed`` is the base seed (None: 0).
    MissingFileError (exit 3) when the file is missing, UsageError (exit 2) when it is not UTF-8
    or holds no prompt at all.
    """
    file = Path(path).expanduser()
    lines = read_lines(file)
    jsonl = file.suffix.lower() in JSONL_SUFFIXES
    base_dir = file.parent
    jobs: list[Job] = []
    for number, text in enumerate(lines, start=1):
        if _skipped(text):
            continue
        job = Job(line=number, index=len(jobs), text=text.strip())
        try:
            if jsonl:
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as e:
                    raise UsageError(f"invalid JSON: {e.msg} (column {e.colno})", hint=JSONL_HINT) from e
                job = dataclasses.replace(job, request=_job_request(data, number, template, base_dir))
            else:
                job = dataclasses.replace(job, request=_text_request(text, number, template, base_dir))
        except CogvidError as e:
            job = job.failed(e)
        jobs.append(job)
    if not jobs:
        kind = "JSON objects" if jsonl else "prompts"
        raise UsageError(f"no {kind} in {file}", hint="write one prompt per line (lines starting with # are comments)")
    return jobs


# ---------------------------------------------------------------------------------------------
# Keys


def model_key(request: GenerationRequest, model: str, decode_schedule: str | None) -> str:
    """What besides a line's settings changes its pixels: the model, its LoRAs, the decode, tiling and
    the speed settings that change numbers (all of them off leave the key as cogvid 0.1 made it)."""
    key = model + "".join(f"+lora:{spec.path.resolve()}:{spec.scale}" for spec in request.model.loras)
    if decode_schedule is not None:
        key += f"+decode:{decode_schedule}"
    choice = request.model
    speed = [f"quantize:{choice.quantize}" + ("+text" if choice.quantize_text else "")] if choice.quantize else []
    speed += ["compile"] if choice.compile else []
    speed += [f"attention:{choice.attention}"] if choice.attention != "sdpa" else []
    speed += [f"cache:{request.cache}"] if request.cache else []
    return key + ("+vae-tiling" if request.vae_tiling else "") + "".join(f"+{part}" for part in speed)


def job_key(request: GenerationRequest, video_index: int, model: str) -> str:
    """A stable hash of everything that decides a video's pixels (used by ``--resume``).

    ``request`` is the line's request before the model's defaults are filled in, and ``model`` its
    :func:`model_key`; the hash is the same as cogvid 0.1's for the same line and settings.
    """
    fields = {
        "prompt": request.prompt,
        "negative": request.negative,
        "image": str(request.image.resolve()) if request.image is not None else None,
        "seed": request.seed,
        "steps": request.steps,
        "guidance": request.guidance,
        "frames": request.frames,
        "size": [request.height, request.width],
        "sampler": request.sampler,
        "model": model,
        "video_index": video_index,
    }
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


__all__ = [
    "JSONL_FIELDS",
    "LOCK_NAME",
    "SIDECAR_KEY",
    "BatchClaims",
    "Claim",
    "Job",
    "claim_output_folder",
    "completed_outputs",
    "job_key",
    "model_key",
    "parse_prompt_file",
    "partial_outputs",
    "read_lines",
]
