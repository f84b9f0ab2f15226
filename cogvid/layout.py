"""The SAT checkpoint folder layout, read without torch (``--dry-run`` and ``models list`` stay light).

A SAT/DeepSpeed transformer folder looks like::

    <folder>/latest                              "1000" (an iteration) or "release"
    <folder>/1000/mp_rank_00_model_states.pt     {"module": {<engine key>: tensor, ...}, ...}
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cogvid.errors import CheckpointError, MissingFileError

MODEL_STATES = "mp_rank_00_model_states.pt"

LAYOUT_HINT = (
    "a SAT checkpoint folder holds a text file 'latest' (an iteration number such as 1000, or 'release') "
    f"and '<iteration>/{MODEL_STATES}', e.g. transformer/latest + transformer/1000/{MODEL_STATES}"
)
LORA_HINT = (
    f"pass the folder of a SAT LoRA run (it holds 'latest' and '<iteration>/{MODEL_STATES}' with "
    "...attention.query_key_value.matrix_A.0 keys), e.g. --lora ckpts/lora-09-09-21-10:0.8"
)


def is_diffusers_part(path: Path | str) -> bool:
    """Whether ``path`` is one part of a diffusers-layout model (a folder with ``config.json``: transformer/, vae/)."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def resolve_checkpoint_file(folder: Path | str) -> Path:
    """The ``mp_rank_00_model_states.pt`` file a SAT folder points at (through ``latest``).

    A path to a ``.pt`` file is returned as is (after checking that it exists).
    """
    folder = Path(folder).expanduser()
    if folder.is_file():
        return folder
    if not folder.exists():
        raise MissingFileError(f"checkpoint folder {folder} does not exist", hint=LAYOUT_HINT)
    latest = folder / "latest"
    if not latest.is_file():
        raise MissingFileError(f"{folder} has no 'latest' file, so it is not a SAT checkpoint folder", hint=LAYOUT_HINT)
    try:
        tag = latest.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {latest}: {e}", hint=LAYOUT_HINT) from e
    if tag != "release":
        try:
            iteration = int(tag)
        except ValueError:
            iteration = 0
        if iteration <= 0:
            raise CheckpointError(
                f"{latest} holds {tag[:40]!r}; expected a positive iteration number or 'release'", hint=LAYOUT_HINT
            )
        tag = str(iteration)
    path = folder / tag / MODEL_STATES
    if not path.is_file():
        raise MissingFileError(f"{latest} points at iteration {tag!r}, but {path} does not exist", hint=LAYOUT_HINT)
    return path


def check_lora_folders(paths: Iterable[Path]) -> None:
    """MissingFileError for the first LoRA checkpoint folder (or file) that is not there; no tensor is read."""
    for path in paths:
        if not path.exists():
            raise MissingFileError(f"LoRA checkpoint {path} does not exist", hint=LORA_HINT)
        resolve_checkpoint_file(path)
