"""One exception hierarchy for cogvid: every error carries an exit code and an optional hint; one warning base."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path


class CogvidError(Exception):
    """Base class of every error cogvid reports to a user.

    ``str(error)`` says what is wrong; ``hint`` says how to fix it.
    """

    exit_code = 70

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class GenerationError(CogvidError):
    """Generation failed (or some batch items failed)."""

    exit_code = 1


class UsageError(CogvidError, ValueError):
    """A bad argument or option value (also a ValueError, for Python callers)."""

    exit_code = 2


class ArgumentTypeError(UsageError, TypeError):
    """An argument of the wrong type (also a TypeError, for Python callers)."""


class ConfigError(UsageError):
    """A configuration file, key or value is wrong."""

    exit_code = 2


class MissingFileError(CogvidError):
    """A file cogvid needs (weights, checkpoint, image, LoRA) is missing or unreadable."""

    exit_code = 3


class CheckpointError(MissingFileError):
    """A checkpoint exists but does not fit the model (keys, shapes, layout)."""

    exit_code = 3


class DeviceError(CogvidError):
    """The requested device is unavailable or ran out of memory."""

    exit_code = 4


class Cancelled(CogvidError):
    """Raised (by a progress callback or Ctrl-C) to stop a generation cleanly between steps."""

    exit_code = 130

    def __init__(self, message: str = "interrupted", hint: str | None = None) -> None:
        super().__init__(message, hint)


def require_file(path: str | os.PathLike, what: str, hint: str) -> Path:
    """``path`` (``~`` expanded) when it is an existing file; MissingFileError naming ``what`` otherwise."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingFileError(f"{what} not found: {file}", hint=f"check the path of the {what}")
    if not file.is_file():
        raise MissingFileError(f"the {what} path is not a file: {file}", hint=hint)
    return file


class CogvidWarning(UserWarning):
    """Base class of the warnings cogvid gives a user (the CLI shows them as ``warning:`` lines)."""


def choice_hint(value: object, choices: Sequence[str], what: str = "use one of") -> str:
    """The hint for a value that is not one of ``choices``: the closest ones first, then the list."""
    close = difflib.get_close_matches(str(value), list(choices), n=2, cutoff=0.5)
    suggestion = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return f"{suggestion}{what}: {', '.join(choices)}"
