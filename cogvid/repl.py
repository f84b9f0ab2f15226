"""The interactive session's logic without a terminal UI: settings, slash commands, history, cancellation.

``cogvid.cli.repl`` draws the prompt and the progress; everything it decides with goes through here,
so it can be tested without a terminal. No Typer, rich or prompt_toolkit in this module.
"""

from __future__ import annotations

import difflib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvid.errors import Cancelled, UsageError
from cogvid.request import GenerationRequest

SETTING_KEYS = ("steps", "guidance", "seed", "frames", "size", "fps", "sampler", "negative", "cache")
"""What ``/set KEY VALUE`` may change (``/set KEY default`` goes back to the model's value)."""

HISTORY_FILE = "repl_history"

_EXAMPLES = {"steps": "50", "frames": "49", "fps": "8"}


@dataclass(frozen=True)
class CommandInfo:
    """One slash command: its usage after the name and a one-line description."""

    usage: str
    description: str


COMMANDS: dict[str, CommandInfo] = {
    "help": CommandInfo("", "show this help"),
    "set": CommandInfo("KEY VALUE", f"change a setting: {', '.join(SETTING_KEYS)} (VALUE `default` resets it)"),
    "seed": CommandInfo("[N|random]", "show the seed, fix it to N, or draw a new one for every video"),
    "image": CommandInfo("PATH|none", "the first frame for image-to-video models"),
    "lora": CommandInfo("[PATH[:SCALE]|none]", "show the LoRA, or reload the model with this one (or none)"),
    "show": CommandInfo("", "show the current model and settings"),
    "model": CommandInfo("[NAME]", "switch model (a picker of the models whose weights are present)"),
    "again": CommandInfo("", "the last prompt again with a new seed"),
    "quit": CommandInfo("", "leave (Ctrl-D does the same)"),
}

ALIASES = {"exit": "quit", "?": "help"}


@dataclass(frozen=True)
class Command:
    """A slash command line: ``name`` without the slash (as typed) and the rest of the line."""

    name: str
    argument: str = ""


def parse_line(line: str) -> Command | str | None:
    """A slash command, a prompt, or None for a blank line. ``//text`` is the prompt ``/text``."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("//"):
        return text[1:]
    if text.startswith("/"):
        name, _, argument = text[1:].partition(" ")
        return Command(name.strip().lower(), argument.strip())
    return text


def resolve_command(name: str) -> str:
    """The full name of a command given by name, alias or unique prefix; UsageError otherwise."""
    if name in COMMANDS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    matches = [known for known in COMMANDS if name and known.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"/{name} is ambiguous: {', '.join('/' + m for m in matches)}")
    close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.5)
    raise UsageError(f"unknown command /{name}", hint=f"did you mean /{close[0]}?" if close else None)


def help_lines() -> list[str]:
    """The help text, a line per command, then how prompts and keys work."""
    width = max(len(f"/{name} {info.usage}") for name, info in COMMANDS.items())
    lines = [f"  {f'/{name} {info.usage}'.ljust(width)}  {info.description}" for name, info in COMMANDS.items()]
    return [
        "commands:",
        *lines,
        "any other line is a prompt: it makes a video with the current settings (//text for a prompt starting with /)",
        "Ctrl-C stops a generation after the current step; at the prompt it clears the line",
    ]


def history_path() -> Path:
    """Where the prompt history lives: ``$XDG_DATA_HOME/cogvid/repl_history`` (``~/.local/share`` by default)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "cogvid" / HISTORY_FILE


def _parse_int(key: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{key} must be a whole number, not {text!r}", hint=f"e.g. /set {key} {_EXAMPLES[key]}") from None
    if value < minimum:
        raise UsageError(f"{key} must be at least {minimum}, not {value}")
    return value


def _parse_float(key: str, text: str, minimum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{key} must be a number, not {text!r}", hint=f"e.g. /set {key} 6") from None
    if not value >= minimum:  # also rejects nan
        raise UsageError(f"{key} must be at least {minimum:g}, not {text}")
    return value


def parse_seed(text: str) -> int | None:
    """``random`` -> None (a new seed per video); otherwise a seed >= 0."""
    if text.lower() == "random":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"seed must be a whole number or `random`, not {text!r}", hint="e.g. /seed 42") from None
    if not 0 <= value < 2**63:
        raise UsageError(f"seed must be between 0 and 2**63-1, not {value}")
    return value


def parse_setting(key: str, text: str) -> Any:
    """The value of setting ``key`` written as ``text``; None for ``default``. UsageError when invalid.

    Only the form is checked here; whether the model accepts it (frame counts, sizes, sampler
    names, step limits) is checked by the session against the loaded model.
    """
    from cogvid.spec import parse_size

    if key not in SETTING_KEYS:
        close = difflib.get_close_matches(key, SETTING_KEYS, n=1, cutoff=0.5)
        suggestion = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown setting {key!r}", hint=f"{suggestion}settings: {', '.join(SETTING_KEYS)}")
    text = text.strip()
    if not text:
        raise UsageError(f"/set {key} needs a value", hint=f"e.g. /set {key} default")
    if text.lower() == "default":
        return "" if key == "negative" else None
    if key in ("steps", "frames", "fps"):
        return _parse_int(key, text, minimum=1)
    if key == "guidance":
        return _parse_float(key, text, minimum=0.0)
    if key == "seed":
        return parse_seed(text)
    if key == "size":
        return parse_size(text)
    if key == "negative":
        return "" if text.lower() == "none" else text
    if key == "cache":
        return None if text.lower() in ("none", "off") else text  # its form is checked by the request
    return text  # sampler: checked against the model's sampler table by the session


def with_setting(template: GenerationRequest, key: str, text: str) -> GenerationRequest:
    """``template`` with setting ``key`` set from ``text`` (see :func:`parse_setting`)."""
    return template.replace(**{key: parse_setting(key, text)})


def setting_rows(template: GenerationRequest, defaults: dict[str, str]) -> list[tuple[str, str]]:
    """(name, shown value) for ``/show``; unset values show ``defaults[name]`` marked as the model's."""
    shown = {
        "steps": template.steps,
        "guidance": template.guidance,
        "seed": template.seed,
        "frames": template.frames,
        "size": f"{template.height}x{template.width}" if template.size else None,
        "fps": template.fps,
        "sampler": template.sampler,
        "negative": template.negative or None,
        "cache": template.cache,
        "image": str(template.image) if template.image else None,
    }
    rows = []
    for name, value in shown.items():
        if value is not None:
            rows.append((name, str(value)))
        elif name == "seed":
            rows.append((name, "random (a new one per video)"))
        elif name in defaults:
            rows.append((name, f"{defaults[name]} (model default)"))
        else:
            rows.append((name, "none"))
    return rows


def draw_seed(avoid: int | None = None) -> int:
    """A fresh random seed in [0, 2**31), different from ``avoid``."""
    while True:
        seed = random.randrange(2**31)
        if seed != avoid:
            return seed


class CancelFlag:
    """Set by the Ctrl-C handler, checked by the progress callback between steps.

    ``request()`` counts the Ctrl-C presses of the current generation, so a second press can stop
    at once.
    """

    def __init__(self) -> None:
        self.requests = 0

    def request(self) -> int:
        self.requests += 1
        return self.requests

    def clear(self) -> None:
        self.requests = 0

    @property
    def is_set(self) -> bool:
        return self.requests > 0

    def check(self) -> None:
        """Raise :class:`cogvid.errors.Cancelled` when a cancel was requested."""
        if self.is_set:
            raise Cancelled("cancelled")


def cancellable(callback: Callable[[Any], None], flag: CancelFlag) -> Callable[[Any], None]:
    """A progress callback that forwards each event, then stops the generation if ``flag`` is set."""

    def on_event(event: Any) -> None:
        callback(event)
        flag.check()

    return on_event


__all__ = [
    "COMMANDS",
    "SETTING_KEYS",
    "CancelFlag",
    "Command",
    "cancellable",
    "draw_seed",
    "help_lines",
    "history_path",
    "parse_line",
    "parse_seed",
    "parse_setting",
    "resolve_command",
    "setting_rows",
    "with_setting",
]
