"""``cogvid batch FILE``: many prompts with one model load; resumable and shardable over torchrun ranks."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli.generate import report, show_dry_run
from cogvid.cli.options import DRY_RUN, MODEL_OPTIONS, NUM_VIDEOS, OUTPUT_OPTIONS, VIDEO_OPTIONS, CliOptions, _Option, with_options

EXAMPLES = """\
Examples:

  cogvid batch prompts.txt                     one prompt per line, # comments
  cogvid batch prompts.txt -m cogvideox-5b --resume
  cogvid batch images.txt -m cogvideox-5b-i2v  lines: the dog turns@@dog.png
  cogvid batch jobs.jsonl --json               {"prompt": "...", "seed": 7}
  torchrun --nproc_per_node 4 -m cogvid batch prompts.txt -m cogvideox-2b
"""

RESUME = _Option("resume", bool, typer.Option(False, "--resume", help="Skip videos already complete in --out (same prompt, image, seed and settings)."))
WANDB = _Option("wandb", Optional[str], typer.Option(None, "--wandb", metavar="PROJECT", help="Log each video and its settings to this Weights & Biases project (WANDB_MODE=offline logs locally)."))
# The batch's --seed is a base seed: a line without its own uses SEED + its line index.
BATCH_VIDEO_OPTIONS = tuple(
    _Option("seed", Optional[int], typer.Option(None, "--seed", help="Base seed: a line without its own seed uses SEED + its line index (default 0, so reruns repeat)."))
    if option.name == "seed" else option
    for option in VIDEO_OPTIONS
)

STATUS_STYLES = {"done": "green", "skipped": "cyan", "failed": "red", "invalid": "red"}


class BatchProgress(console.ProgressRenderer):
    """Renders a batch (a :class:`cogvid.batch_run.BatchObserver`): an outer bar over its videos and an
    inner one over the current video's stages (on a terminal); ``[i/n]`` stage lines otherwise."""

    def __init__(self, quiet: bool = False, as_json: bool = False) -> None:
        super().__init__(quiet=quiet)
        self.as_json = as_json
        self.total = 0

    def notice(self, text: str) -> None:
        console.warn(text) if text.startswith("removed") else console.err.print(text, markup=False)

    def start(self, total: int) -> None:
        self.total = total
        super().start(total)

    def video(self, position: int, unit: Any) -> None:
        """The ``position``-th video (1-based) of this run starts (a :class:`cogvid.batch_run.Unit`)."""
        self.prefix = f"[{position}/{self.total}] "
        if self._progress is not None:
            self._progress.update(self._outer, description=f"batch · line {unit.job.line}")

    def progress(self, event: Any) -> None:
        self(event)

    def advance(self) -> None:
        """The current video is finished (written, failed or skipped)."""
        if self._progress is not None:
            self._progress.advance(self._outer)
            self._progress.update(self._inner, visible=False)

    def written(self, path: Path, video: Any, unit: Any) -> None:
        """A finished video: its JSON record (--json), or its path on stdout (above the bars on a terminal)."""
        if self.as_json:
            report(path, video, as_json=True)
        elif self._progress is not None and console.out.is_terminal:
            console.err.print(str(path), markup=False, highlight=False)
        else:
            console.out.print(str(path), markup=False, highlight=False)

    def skipped(self, unit: Any, reason: str, path: str | None) -> None:
        console.err.print(f"line {unit.job.line}: skipped, {reason}" + (f": {path}" if path else ""), markup=False)

    def failed(self, unit: Any, error: BaseException) -> None:
        message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        console.print_error(f"line {unit.job.line}: {message}", getattr(error, "hint", None))


def print_summary(results: list, seconds: float) -> None:
    """The rich summary table (line, prompt, status, output, seconds) and a totals line, on stderr."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="batch summary", title_justify="left", show_lines=False, expand=False)
    table.add_column("line", justify="right")
    table.add_column("prompt", max_width=40, overflow="ellipsis", no_wrap=True)
    table.add_column("status")
    table.add_column("output", overflow="fold")
    table.add_column("seconds", justify="right")
    for result in sorted(results, key=lambda r: (r.line, r.video_index)):
        style = STATUS_STYLES.get(result.status, "")
        output = Text(result.path or result.note or "") if result.ok else Text(result.error or "", style="red")
        secs = f"{result.seconds:.1f}" if result.status in ("done", "failed") else ""
        table.add_row(str(result.line), Text(result.prompt), Text(result.status, style=style), output, secs)
    console.err.print(table)
    counts = {status: sum(r.status == status for r in results) for status in STATUS_STYLES}
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    console.err.print(f"{', '.join(parts)} in {seconds:.1f} s")


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends (main thread only), then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


@with_options(MODEL_OPTIONS, BATCH_VIDEO_OPTIONS, NUM_VIDEOS, OUTPUT_OPTIONS, RESUME, WANDB, DRY_RUN)
def batch(
    file: Path = typer.Argument(
        ..., help="Prompt file: one prompt per line (prompt@@image for I2V), or .jsonl with per-line settings."
    ),
    *,
    options: CliOptions,
) -> None:
    """Generate a video for every line of FILE, loading the model once.

    Bad lines are reported before the model loads, with their numbers; the rest still run (exit 1 if any failed).

    Under torchrun, the i-th prompt runs on rank i % WORLD_SIZE; rank 0 prints the summary.
    """
    from cogvid.batch_run import BatchRun, check_results, gather_results, plan_batch, run_plan
    from cogvid.errors import Cancelled

    started = time.perf_counter()
    plan = plan_batch(file, options.request())  # every line checked before anything loads
    for job in plan.announced():
        console.print_error(f"line {job.line}: {job.error}", job.hint)
    if options.dry_run:
        show_dry_run([unit.prepared for unit in plan.units], options.as_json)
        check_results(plan.invalid_results())
        return
    from cogvid.outputs import check_output_folder

    check_output_folder(options.out)
    progress = BatchProgress(quiet=not plan.lead, as_json=options.as_json)
    run = BatchRun(options.out, progress, options.resume, debug=options.debug, wandb=options.wandb, write_guard=_defer_sigint)
    try:
        results = run_plan(plan, run)
    except (KeyboardInterrupt, Cancelled):
        progress.close()
        if plan.world_size == 1:
            print_summary(run.results, time.perf_counter() - started)
        raise Cancelled("interrupted", hint="run the same command with --resume to make only what is missing") from None
    finally:
        progress.close()
    everyone = gather_results(plan, results)
    if plan.lead or everyone is None:
        print_summary(everyone if everyone is not None else results, time.perf_counter() - started)
    if not plan.lead and everyone is not None:
        if any(not r.ok for r in everyone):
            raise typer.Exit(1)  # rank 0 says why
        return
    check_results(everyone if everyone is not None else results)
