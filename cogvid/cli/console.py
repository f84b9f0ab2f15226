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


def route_warnings() -> None:
    """Show cogvid's own warnings (CogvidWarning: a truncated prompt, unknown words) as ``warning:``
    lines, every time they happen. Other warnings keep Python's default handling."""
    import warnings

    from cogvid.errors import CogvidWarning

    default_show = warnings.showwarning
    if getattr(default_show, "routes_cogvid", False):
        return

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, CogvidWarning):
            warn(str(message))
        else:
            default_show(message, category, filename, lineno, file, line)

    show.routes_cogvid = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    # Python shows a warning once per place and text; a REPL user repeating a prompt should see it again.
    warnings.filterwarnings("always", category=CogvidWarning)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class ProgressRenderer:
    """Renders pipeline ProgressEvents: a line per stage, bars over denoising steps and decode chunks.

    On a terminal the bars are live (s/step and ETA); otherwise only plain stage lines are printed.
    """

    STAGE_LABELS = {
        "loading": "loading model",
        "text": "encoding text",
        "image": "encoding image",
        "denoising": "denoising",
        "decoding": "decoding",
        "writing": "writing",
    }

    def __init__(self, quiet: bool = False, prefix: str = "") -> None:
        self.quiet = quiet
        self.prefix = prefix
        self.live = err.is_terminal and not quiet
        self._progress = None
        self._task = None

    def _bar(self, description: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._close_bar()
        self._progress = Progress(
            TextColumn(f"{self.prefix}{description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")
        self._started = None

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, event) -> None:  # event: cogvid.pipeline.ProgressEvent
        import time

        if self.quiet:
            return
        label = self.STAGE_LABELS.get(event.stage, event.stage)
        if event.kind == "stage":
            if self.live and event.stage in ("denoising", "decoding"):
                return  # the bar appears with the first step
            if not self.live:
                err.print(f"{self.prefix}{label}...")
        elif event.kind == "stage_done":
            self._close_bar()
            err.print(f"{self.prefix}[green]✓[/] {label} ({event.seconds:.1f} s)")
        elif event.kind in ("step", "decode") and self.live:
            if self._progress is None:
                self._bar(label, event.total)
                self._started = time.perf_counter()
                self._first_index = event.index - 1
            done = event.index - self._first_index
            rate = (time.perf_counter() - self._started) / max(done, 1)
            unit = "s/step" if event.kind == "step" else "s/chunk"
            self._progress.update(self._task, completed=event.index, rate=f"{rate:.2f} {unit}")

    def close(self) -> None:
        self._close_bar()
