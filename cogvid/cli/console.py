"""Terminal output: results on stdout, everything else (progress, warnings, errors) on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout (machine-readable results)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def print_error(message: str, hint: str | None = None) -> None:
    """``error: <what>`` and ``hint: <what to do>`` on stderr."""
    err.print(f"[bold red]error:[/] {_escape(message)}")
    if hint:
        err.print(f"[bold]hint:[/] {_escape(hint)}")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
