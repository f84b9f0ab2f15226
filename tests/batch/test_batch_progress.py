"""The batch progress display: outer bar over videos, inner bar over steps, results kept on stdout."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from types import SimpleNamespace

from cogvid.batch_run import JobResult
from cogvid.cli import console
from cogvid.cli.batch import BatchProgress, print_summary
from cogvid.pipeline import ProgressEvent


def _unit(line: int) -> SimpleNamespace:
    """What the display reads of a batch_run.Unit: its prompt-file line."""
    return SimpleNamespace(job=SimpleNamespace(line=line))


def test_live_bars_track_videos_and_steps_and_keep_paths_on_stdout(monkeypatch, capsys):
    screen = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=True, width=100))
    progress = BatchProgress()
    assert progress.live
    progress.start(2)
    progress.progress(ProgressEvent("stage", "loading"))
    progress.progress(ProgressEvent("stage_done", "loading", seconds=1.25))
    progress.video(1, _unit(line=3))
    progress.progress(ProgressEvent("stage", "denoising"))
    for index in (1, 2, 3):
        progress.progress(ProgressEvent("step", "denoising", index, 4, timestep=500))
    outer, inner = progress._progress.tasks
    assert (outer.completed, outer.total, outer.description) == (0, 2, "batch · line 3")
    assert (inner.completed, inner.total, inner.description) == (3, 4, "[1/2] denoising")
    progress.written(Path("out/0000-a-s0.mp4"), None, _unit(line=3))
    progress.advance()
    assert outer.completed == 1 and not inner.visible
    progress.close()
    assert progress._progress is None
    assert capsys.readouterr().out == "out/0000-a-s0.mp4\n"
    assert "✓ loading model (1.2 s)" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())


def test_plain_lines_carry_the_video_counter(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=False, width=100))
    progress = BatchProgress()
    assert not progress.live
    progress.start(10)
    progress.video(3, _unit(line=7))
    progress.progress(ProgressEvent("stage", "decoding"))
    progress.progress(ProgressEvent("stage_done", "decoding", seconds=2.0))
    progress.close()
    assert "[3/10] decoding..." in screen.getvalue() and "[3/10] ✓ decoding (2.0 s)" in screen.getvalue()


def test_summary_table_lists_every_status(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=False, width=160))
    print_summary(
        [
            JobResult(4, "a blue cube", "failed", None, 1.5, "the sampler produced NaN"),
            JobResult(1, "a red ball", "done", "out/0000-a-red-ball-s0.mp4", 3.25),
            JobResult(2, "{oops", "invalid", error="invalid JSON"),
            JobResult(3, "a cone", "skipped", "out/0001-a-cone-s2.mp4"),
        ],
        seconds=9.0,
    )
    text = screen.getvalue()
    rows = [line for line in text.splitlines() if "│" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "2", "3", "4"]  # sorted by line
    assert "out/0000-a-red-ball-s0.mp4" in rows[0] and "3.2" in rows[0]
    assert "invalid JSON" in rows[1] and "skipped" in rows[2] and "the sampler produced NaN" in rows[3]
    assert "1 done, 1 skipped, 1 failed, 1 invalid in 9.0 s" in text
