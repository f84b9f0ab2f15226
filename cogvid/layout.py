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
    "...attention.query_key_value.matrix_A.0 keys), e.g. --lora ckpts/lora-09-09-21-10:0.8, or a PEFT/diffusers "
    "LoRA (pytorch_lora_weights.safetensors, or a folder holding it or adapter_model.safetensors)"
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


PEFT_LORA_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")  # diffusers', PEFT's


def peft_lora_file(path: Path) -> Path | None:
    """The safetensors file of a PEFT/diffusers LoRA at ``path`` (the file, or a folder holding one); None
    for anything else (a SAT LoRA run folder holds ``latest``)."""
    if path.is_file():
        return path if path.suffix == ".safetensors" else None
    if path.is_dir() and not (path / "latest").exists():
        return next((path / name for name in PEFT_LORA_FILES if (path / name).is_file()), None)
    return None


def check_lora_folders(paths: Iterable[Path]) -> None:
    """MissingFileError for the first LoRA (SAT run folder or file, or PEFT/diffusers safetensors) that is not
    there; no tensor is read."""
    for path in paths:
        if not path.exists():
            raise MissingFileError(f"LoRA checkpoint {path} does not exist", hint=LORA_HINT)
        if peft_lora_file(path) is None:
            resolve_checkpoint_file(path)
