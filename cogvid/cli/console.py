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
    """Renders pipeline ProgressEvents on stderr: a line per stage and, on a terminal, a live bar over
    the denoising steps or decode chunks (s/step and ETA). After :meth:`start` (a batch) the bars stay
    up: an outer one over the videos and an inner one over the current video's stages."""

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
        self.batch = False
        self._progress: Any = None
        self._outer: Any = None
        self._inner: Any = None
        self._started: float | None = None
        self._first_index = 0

    def _bars(self, outer_total: int | None = None) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=err, transient=True, redirect_stdout=False, redirect_stderr=False,  # results stay on stdout
            )
            self._progress.start()
            if outer_total is not None:
                self._outer = self._progress.add_task("batch", total=outer_total, info="")
            self._inner = self._progress.add_task("", total=None, info="", visible=False)
        return self._progress

    def start(self, total: int) -> None:
        """A batch of ``total`` videos begins: keep the bars up between videos."""
        self.batch = True
        if self.live:
            self._bars(outer_total=total)

    def __call__(self, event: Any) -> None:  # event: cogvid.pipeline.ProgressEvent
        import time

        if self.quiet:
            return
        label = self.STAGE_LABELS.get(event.stage, event.stage)
        if event.kind == "stage":
            self._started = None
            if not self.live:
                err.print(f"{self.prefix}{label}...", markup=False)
            elif self.batch:
                self._progress.reset(self._inner, total=None, description=f"{self.prefix}{label}", info="", visible=True)
        elif event.kind == "stage_done":
            if self.live and not self.batch:
                self.close()  # one bar per stage
            if not (self.live and self.batch):
                err.print(f"{self.prefix}[green]✓[/] {label} ({event.seconds:.1f} s)")
            elif event.stage == "loading":
                err.print(f"[green]✓[/] {label} ({event.seconds:.1f} s)")
        elif event.kind == "note":
            err.print(f"{self.prefix}{event.message}", markup=False)
        elif event.kind in ("step", "decode") and self.live:
            bars, now = self._bars(), time.perf_counter()
            if self._started is None:
                self._started, self._first_index = now, event.index - 1
                bars.update(self._inner, description=f"{self.prefix}{label}", visible=True)
            rate = (now - self._started) / max(event.index - self._first_index, 1)
            unit = "s/step" if event.kind == "step" else "s/chunk"
            bars.update(self._inner, total=event.total, completed=event.index, info=f"{rate:.2f} {unit}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
