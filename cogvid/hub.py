"""``cogvid models pull``: download a registry model from the Hugging Face Hub into the weights root.

Files are fetched by ``huggingface_hub.snapshot_download`` (only those the model needs; resumable;
``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` honoured) into the Hugging Face
cache, which diffusers shares, so a model already downloaded for diffusers costs nothing. The model's
folder in the weights root is then a link to that snapshot: ``<root>/<name>-diffusers`` for the diffusers
layout, the registry's SAT folder for ``--layout sat``. Before downloading, the size of what is missing is
compared with the free disk space, and the pull refuses when it would not fit.

No torch here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvid.errors import CogvidError, MissingFileError, UsageError
from cogvid.registry import ModelEntry, WeightPaths, get_model

LAYOUTS = ("diffusers", "sat")
DISK_MARGIN = 1 * 2**30  # keep this much free after a download
DIFFUSERS_FILES = (
    "model_index.json", "scheduler/*.json", "tokenizer/*",
    *(f"{part}/*.{ext}" for part in ("transformer", "vae", "text_encoder") for ext in ("json", "safetensors")),
)
TOKEN_HINT = "if the repo needs a login, set HF_TOKEN (or run `hf auth login`); HF_ENDPOINT selects a mirror"


class DownloadError(CogvidError):
    """A download that cannot be done: not enough disk space, the Hub refused or could not be reached."""

    exit_code = 1


@dataclass
class PullPlan:
    """What a pull will fetch and where it will put it; ``missing_bytes`` is None when offline (nothing is fetched)."""

    entry: ModelEntry
    layout: str
    repo: str
    revision: str | None
    patterns: tuple[str, ...]
    destination: Path
    cache_dir: Path
    offline: bool
    files: int = 0
    total_bytes: int = 0
    missing_bytes: int | None = None
    free_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.missing_bytes is None or self.missing_bytes + DISK_MARGIN <= self.free_bytes


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().lower() in ("1", "true", "yes", "on")


def _cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def layout_patterns(entry: ModelEntry, layout: str) -> tuple[str, ...]:
    """The repo files a model needs in ``layout`` (glob patterns; ``*`` also crosses folders)."""
    if layout == "diffusers":
        return DIFFUSERS_FILES
    return tuple(f"{relative}/*" if part != "vae" else relative for part, relative in sorted(entry.weights.items()))


def plan_pull(name: str, layout: str = "diffusers", revision: str | None = None, weights: str | Path | None = None) -> PullPlan:
    """Which repo, which files, where, and (online) how many bytes are missing and how much disk is free."""
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}", hint="--layout diffusers (default) or sat")
    entry = get_model(name)
    if entry.builtin:
        raise UsageError(f"{name} ships with cogvid; there is nothing to pull")
    repo = entry.hub.get(layout)
    if repo is None:
        others = ", ".join(sorted(entry.hub)) or "none"
        raise UsageError(
            f"{name} has no {layout}-layout copy on the Hugging Face Hub (layouts there: {others})",
            hint=("the diffusers copy runs with the original's numbers: `cogvid models pull " + name + "`"
                  if "diffusers" in entry.hub else "see `cogvid models show " + name + "` for the manual downloads"),
        )
    destination = entry.diffusers_dir(weights) if layout == "diffusers" else entry.model_dir(weights)
    plan = PullPlan(entry, layout, repo, revision, layout_patterns(entry, layout), destination, _cache_dir(), _offline())
    if not plan.offline:
        infos = _call_hub(lambda hub: hub.snapshot_download(
            repo, revision=revision, allow_patterns=list(plan.patterns), cache_dir=plan.cache_dir, dry_run=True), plan)
        plan.files = len(infos)
        plan.total_bytes = sum(info.file_size or 0 for info in infos)
        plan.missing_bytes = sum(info.file_size or 0 for info in infos if info.will_download)
    plan.free_bytes = _free_bytes(plan.cache_dir)
    return plan


def pull(plan: PullPlan, progress: Any = None) -> Path:
    """Fetch the planned files (refusing first when the disk is too small) and link the model folder.

    ``progress``: a tqdm-compatible class for huggingface_hub's progress bars. Returns the model folder.
    """
    if not plan.fits:
        raise DownloadError(
            f"{plan.repo} needs {_gib(plan.missing_bytes or 0)} more, but {plan.cache_dir} has {_gib(plan.free_bytes)} free "
            f"(cogvid keeps {_gib(DISK_MARGIN)} spare)",
            hint="free disk space, or point HF_HUB_CACHE at a larger disk",
        )
    _check_destination(plan.destination)
    snapshot = Path(_call_hub(lambda hub: hub.snapshot_download(
        plan.repo, revision=plan.revision, allow_patterns=list(plan.patterns), cache_dir=plan.cache_dir,
        local_files_only=plan.offline, tqdm_class=progress), plan))
    weights = plan.entry.weights
    paths = WeightPaths.diffusers(snapshot) if plan.layout == "diffusers" else WeightPaths(
        snapshot / weights["transformer"], snapshot / weights["vae"], snapshot / weights["t5"])
    missing = [s for s in paths.statuses() if not s.found]
    if missing:
        raise MissingFileError(
            f"the snapshot of {plan.repo} in {snapshot} is incomplete: " + "; ".join(f"{s.part}: {s.problem}" for s in missing),
            hint="run the pull again online (it resumes)" if plan.offline else "run the pull again (it resumes)",
        )
    _link(plan.destination, snapshot)
    return plan.destination


def _call_hub(call: Callable[[Any], Any], plan: PullPlan) -> Any:
    """Run a huggingface_hub call; its errors become cogvid errors with a hint."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return call(huggingface_hub)
    except (errors.LocalEntryNotFoundError, errors.IncompleteSnapshotError) as e:
        if plan.offline:
            raise MissingFileError(
                f"{plan.repo} is not in the Hugging Face cache ({plan.cache_dir}) and HF_HUB_OFFLINE is set",
                hint="unset HF_HUB_OFFLINE to download it, or copy a cache that holds it (HF_HUB_CACHE)",
            ) from e
        raise DownloadError(f"cannot reach the Hugging Face Hub for {plan.repo}: {_first_line(e)}", hint=TOKEN_HINT) from e
    except (errors.GatedRepoError, errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
        raise DownloadError(f"the Hub refused {plan.repo}{'@' + plan.revision if plan.revision else ''}: {_first_line(e)}",
                            hint=TOKEN_HINT) from e
    except (errors.HfHubHTTPError, errors.DryRunError, OSError) as e:
        raise DownloadError(f"downloading {plan.repo} failed: {_first_line(e)}", hint=f"run it again to resume; {TOKEN_HINT}") from e


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_destination(destination: Path) -> None:
    """A folder of the user's own at the destination is never replaced; a link (an earlier pull) is."""
    if destination.exists() and not destination.is_symlink():
        raise UsageError(
            f"{destination} already exists and is not a link made by `cogvid models pull`; not replacing it",
            hint="move it away, or pass --weights DIR to pull into another weights root",
        )


def _link(destination: Path, snapshot: Path) -> None:
    """Point ``destination`` at ``snapshot`` (atomically replacing an earlier pull's link)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.link")
    if temporary.is_symlink():
        temporary.unlink()
    try:
        temporary.symlink_to(snapshot, target_is_directory=True)
        os.replace(temporary, destination)
    except OSError as e:
        raise DownloadError(f"cannot link {destination} to {snapshot}: {e}",
                            hint="on Windows, enable developer mode (symlinks) or pass -m with the snapshot folder") from e


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def describe_plan(plan: PullPlan) -> dict[str, Any]:
    """What ``cogvid models pull`` reports before fetching."""
    return {"model": plan.entry.name, "layout": plan.layout, "repo": plan.repo, "revision": plan.revision or "main",
            "destination": str(plan.destination), "cache": str(plan.cache_dir), "offline": plan.offline, "files": plan.files,
            "total_bytes": plan.total_bytes, "missing_bytes": plan.missing_bytes, "free_bytes": plan.free_bytes, "fits": plan.fits}


def rich_progress() -> Any:
    """A tqdm class that draws huggingface_hub's download bars with rich (on stderr)."""
    import warnings

    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm_rich

    class RichBars(tqdm_rich):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TqdmExperimentalWarning)
                super().__init__(*args, **kwargs)

    return RichBars
