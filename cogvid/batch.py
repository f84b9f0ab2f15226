"""Batch generation bookkeeping: prompt files, jobs and resume keys.

A prompt file is either
* text: one prompt per line; ``prompt@@image`` for image-to-video (the original ``sample_video.py``
  format); blank lines and lines starting with ``#`` are skipped;
* JSON Lines (``.jsonl``/``.ndjson``): one object per line with ``prompt`` and optional per-line
  overrides (``negative``, ``seed``, ``steps``, ``guidance``, ``frames``, ``size``, ``image``,
  ``num_videos``); blank and ``#`` lines are skipped here too.
Both are UTF-8 with or without a BOM, with LF or CRLF line ends. A line that cannot run becomes a
:class:`Job` with ``error`` set (its line number is kept), so a batch reports it and goes on.

Seeds: a job without its own seed gets ``base_seed + line_index`` (0-based line index), so reruns
are identical and commenting a line out leaves the other seeds alone. Video ``k`` of a job uses
``seed + k``. Each video has a key (:func:`job_key`), a hash of everything that decides its pixels;
it is stored in the sidecar as ``batch_key`` and ``--resume`` skips keys whose video is complete.
What "complete" means, leftovers of killed runs and the claims that let two batches share one
output folder are :mod:`cogvid.outputs` and :mod:`cogvid.claims` (re-exported here).

No typer or rich here; torch is not imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvid.claims import LOCK_NAME, BatchClaims, Claim  # the output-folder protocol, re-exported here
from cogvid.errors import CogvidError, MissingFileError, UsageError
from cogvid.outputs import SIDECAR_KEY, claim_output_folder, completed_outputs, partial_outputs

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSONL_FIELDS = ("prompt", "negative", "seed", "steps", "guidance", "frames", "size", "image", "lora", "num_videos")
JSONL_HINT = 'write {"prompt": "..."} on each line, with optional settings'
IMAGE_SEPARATOR = "@@"
MAX_SEED = 2**63 - 1

@dataclass(frozen=True)
class JobDefaults:
    """The command line's generation options: what a line gets unless it overrides them."""

    negative: str = ""
    seed: int = 0  # base seed: a line without a seed gets seed + its 0-based line index
    steps: int | None = None
    guidance: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_videos: int = 1


@dataclass(frozen=True)
class Job:
    """One line of a prompt file: a prompt with its settings, or the reason it cannot run."""

    line: int  # 1-based line number in the file
    index: int  # 0-based position among the file's jobs (the sharding index)
    prompt: str = ""
    negative: str = ""
    image: Path | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_videos: int = 1
    lora: tuple[str, ...] | None = None  # "PATH[:SCALE]" values; None: the command line's --lora
    error: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, error: CogvidError | str, hint: str | None = None) -> Job:
        """This job marked as unable to run, with the error's message and hint."""
        if isinstance(error, CogvidError):
            return dataclasses.replace(self, error=error.message, hint=error.hint)
        return dataclasses.replace(self, error=error, hint=hint)


@dataclass(frozen=True)
class JobResult:
    """What became of one video of a job (or of an invalid line): for the summary and the exit code."""

    line: int
    prompt: str
    status: str  # "done", "skipped" (already complete, or another batch's), "failed", "invalid"
    path: str | None = None
    seconds: float = 0.0
    error: str | None = None
    video_index: int = 0
    rank: int = 0
    note: str | None = None  # why a video was skipped when it has no path ("another batch is making it")

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


# ---------------------------------------------------------------------------------------------
# Reading prompt files


def read_lines(path: str | os.PathLike) -> list[str]:
    """The file's lines: UTF-8 (a BOM is dropped), LF, CRLF or CR line ends."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingFileError(f"prompt file not found: {file}", hint="check the path of the prompt file")
    if not file.is_file():
        raise MissingFileError(f"not a file: {file}", hint="give a text file, one prompt per line, or a .jsonl file")
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


def _image_path(value: str, base_dir: Path) -> Path:
    """A relative image path is looked up beside the prompt file first, then in the current folder."""
    path = Path(value).expanduser()
    if not path.is_absolute() and (base_dir / path).exists():
        return base_dir / path
    return path


def _int_field(data: dict, name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name!r} must be an integer, found {json.dumps(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise UsageError(f"{name!r} must be {bound}, found {value}")
    return value


def _size_field(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        from cogvid.spec import parse_size

        return parse_size(value)
    integers = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if integers and len(value) == 2:
        return value[0], value[1]
    raise UsageError(f"'size' must be \"HxW\" or [height, width], found {json.dumps(value)}")


def _job_from_object(data: Any, line: int, index: int, defaults: JobDefaults, base_dir: Path) -> Job:
    if not isinstance(data, dict):
        raise UsageError(f"expected a JSON object, found {type(data).__name__}", hint=JSONL_HINT)
    unknown = sorted(set(data) - set(JSONL_FIELDS))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UsageError(f"unknown field(s) {names}", hint=f"known fields: {', '.join(JSONL_FIELDS)}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("'prompt' is missing or empty", hint=JSONL_HINT)
    negative = data.get("negative")  # null means "not given", as for every field
    negative = defaults.negative if negative is None else negative
    if not isinstance(negative, str):
        raise UsageError(f"'negative' must be a string, found {json.dumps(negative)}")
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise UsageError(f"'image' must be a path, found {json.dumps(image)}")
    guidance = data.get("guidance")
    guidance = defaults.guidance if guidance is None else guidance
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance < 0):
        raise UsageError(f"'guidance' must be a number >= 0, found {json.dumps(guidance)}")
    seed = _int_field(data, "seed", 0, MAX_SEED)
    steps = _int_field(data, "steps", 1)
    frames = _int_field(data, "frames", 1)
    num_videos = _int_field(data, "num_videos", 1)
    size = _size_field(data.get("size"))
    height, width = size if size is not None else (defaults.height, defaults.width)
    lora = _lora_field(data.get("lora"), base_dir)
    return Job(
        line=line,
        index=index,
        prompt=prompt.strip(),
        negative=negative,
        image=_image_path(image.strip(), base_dir) if image is not None else None,
        seed=seed if seed is not None else defaults.seed + line - 1,
        steps=steps if steps is not None else defaults.steps,
        guidance=float(guidance) if guidance is not None else None,
        frames=frames if frames is not None else defaults.frames,
        height=height,
        width=width,
        num_videos=num_videos if num_videos is not None else defaults.num_videos,
        lora=lora,
    )


def _lora_field(value: Any, base_dir: Path) -> tuple[str, ...] | None:
    """``"PATH[:SCALE]"`` or a list of them (``[]`` for none); relative paths as for images."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        raise UsageError(f"'lora' must be \"PATH[:SCALE]\" or a list of them, found {json.dumps(value)}")
    resolved = []
    for item in items:
        path, sep, scale = item.strip().rpartition(":")
        if not sep or not _is_number(scale):
            path, scale = item.strip(), ""
        located = str(_image_path(path, base_dir))
        resolved.append(f"{located}:{scale}" if scale else located)
    return tuple(resolved)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _job_from_text(text: str, line: int, index: int, defaults: JobDefaults, base_dir: Path) -> Job:
    prompt, image = text.strip(), None
    if IMAGE_SEPARATOR in prompt:
        prompt, _, image_text = prompt.rpartition(IMAGE_SEPARATOR)
        prompt, image_text = prompt.strip(), image_text.strip()
        if not image_text:
            raise UsageError("nothing after '@@'", hint="write prompt@@path/to/image.png")
        image = _image_path(image_text, base_dir)
    if not prompt:
        raise UsageError("the prompt is empty", hint="write prompt@@path/to/image.png")
    return Job(
        line=line,
        index=index,
        prompt=prompt,
        negative=defaults.negative,
        image=image,
        seed=defaults.seed + line - 1,
        steps=defaults.steps,
        guidance=defaults.guidance,
        frames=defaults.frames,
        height=defaults.height,
        width=defaults.width,
        num_videos=defaults.num_videos,
    )


def parse_prompt_file(path: str | os.PathLike, defaults: JobDefaults = JobDefaults()) -> list[Job]:
    """Every prompt line of ``path`` as a Job, in file order; a bad line is a Job with ``error``.

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
        index = len(jobs)
        try:
            if jsonl:
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as e:
                    raise UsageError(f"invalid JSON: {e.msg} (column {e.colno})", hint=JSONL_HINT) from e
                jobs.append(_job_from_object(data, number, index, defaults, base_dir))
            else:
                jobs.append(_job_from_text(text, number, index, defaults, base_dir))
        except UsageError as e:
            jobs.append(Job(line=number, index=index, prompt=text.strip(), error=e.message, hint=e.hint))
    if not jobs:
        kind = "JSON objects" if jsonl else "prompts"
        raise UsageError(f"no {kind} in {file}", hint="write one prompt per line (lines starting with # are comments)")
    return jobs


# ---------------------------------------------------------------------------------------------
# Validation and keys


def validate_jobs(
    jobs: Sequence[Job],
    check: Callable[[Job], Any],
    check_image: Callable[[Path], Any] | None = None,
) -> list[Job]:
    """Run ``check_image`` and ``check`` (e.g. ``validate_request`` for the model) on every runnable
    job; a job whose check raises a CogvidError comes back failed with its message and hint."""
    checked = []
    for job in jobs:
        if job.ok:
            try:
                if job.image is not None and check_image is not None:
                    check_image(job.image)
                check(job)
            except CogvidError as e:
                job = job.failed(e)
        checked.append(job)
    return checked


def job_key(job: Job, video_index: int, model: str, sampler: str | None) -> str:
    """A stable hash of everything that decides a video's pixels (used by ``--resume``)."""
    fields = {
        "prompt": job.prompt,
        "negative": job.negative,
        "image": str(job.image.resolve()) if job.image is not None else None,
        "seed": job.seed,
        "steps": job.steps,
        "guidance": job.guidance,
        "frames": job.frames,
        "size": [job.height, job.width],
        "sampler": sampler,
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
    "JobDefaults",
    "JobResult",
    "claim_output_folder",
    "completed_outputs",
    "job_key",
    "parse_prompt_file",
    "partial_outputs",
    "read_lines",
    "validate_jobs",
]
