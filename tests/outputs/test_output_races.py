"""`cogvid t2v` and `cogvid batch` processes sharing an output folder, killed, or out of disk: no
video is lost, half-written, made twice or overwritten. On the session's tiny random model."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fixtures.writers import FAST, assert_each_line_once, day_folder, start, tree, wait_for

from cogvid.cli.app import app
from cogvid.outputs import completed_outputs
from cogvid.video import read_video

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model is fastest on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prompts(folder: Path, *lines: str) -> Path:
    path = folder / "prompts.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _file_size_limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@dataclass
class Started:
    """A cogvid process of one test, started with the others so their model loads overlap."""

    process: subprocess.Popen
    folder: Path  # the test's own folder: out/, pause/, prompts.txt
    pause_at: str | None = None

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def go(self) -> tuple[str, str]:
        """Let it go on from its pause; its (stdout, stderr) once it ends."""
        (self.folder / "pause" / "go").touch()
        return self.process.communicate(timeout=180)


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Every process of this module, each stopped at its pause point (or finished)."""
    root = tmp_path_factory.mktemp("races")
    plans = {
        "t2v beside a batch": (["t2v", "still writing", "--seed", "3"], "encoded", ()),
        "batch killed": (["batch", "prompts.txt"], "sidecar-published", ("first fish", "second fish")),
        "first of two batches": (["batch", "prompts.txt"], "encoded", ("one", "two", "three", "four")),
        "t2v at a size limit": (["t2v", "a big video", "--seed", "1"], None, ()),
    }
    runs = {}
    for name, (args, pause_at, lines) in plans.items():
        folder = root / name.replace(" ", "-")
        (folder / "pause").mkdir(parents=True)
        if lines:
            args = [args[0], _prompts(folder, *lines), *args[2:]]
        process = start(
            ["-m", "cogvid", *args, *FAST, "--out", folder / "out"], pause_at, folder / "pause",
            preexec_fn=None if pause_at else _file_size_limit,
        )
        runs[name] = Started(process, folder, pause_at)
    # The second batch on the first's folder starts once the first is inside its first video.
    first = runs["first of two batches"]
    wait_for(first.folder / "pause" / "paused-encoded", first.process)
    second = ["-m", "cogvid", "batch", first.folder / "prompts.txt", *FAST, "--out", first.out, "--resume"]
    runs["second of two batches"] = Started(start(second), first.folder)
    for run in runs.values():
        if run.pause_at:
            wait_for(run.folder / "pause" / f"paused-{run.pause_at}", run.process)
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


def test_a_batch_starting_beside_a_running_t2v_leaves_its_files_alone(started):
    """Fault 1: the batch took the t2v's temporaries for leftovers, removed them, and the t2v died."""
    t2v = started["t2v beside a batch"]  # its video and sidecar are written, not yet published
    out, day = t2v.out, day_folder(t2v.out)
    in_flight = sorted(day.glob(".*.writing/*"))
    assert [p.name for p in in_flight] == ["0000-still-writing-s3.json", "0000-still-writing-s3.mp4", "owner"]
    killed = day / ".0042.writing"  # and a write whose process was killed: the batch removes it
    killed.mkdir()
    (killed / "owner").write_text("12345 elsewhere\n")
    (killed / "0042-gone-s1.mp4").write_bytes(b"half a video")

    batch = runner.invoke(app, ["batch", str(_prompts(t2v.folder, "a batch line")), *FAST, "--out", str(out)])
    assert batch.exit_code == 0, batch.output
    assert "removed 1 partial file(s)" in batch.stderr
    assert not killed.exists() and all(p.exists() for p in in_flight)

    stdout, stderr = t2v.go()
    assert t2v.process.returncode == 0, stderr[-3000:]
    video = Path(stdout.split()[-1])
    assert video == day / "0000-still-writing-s3.mp4" and read_video(video)[0].shape[0] == 9
    assert sorted(p.name for p in day.iterdir()) == [
        "0000-still-writing-s3.json", "0000-still-writing-s3.mp4", "0001-a-batch-line-s0.json", "0001-a-batch-line-s0.mp4",
    ]


def test_t2v_under_a_file_size_limit_fails_and_publishes_nothing(started):
    """Fault 2: ffmpeg was killed by SIGXFSZ, t2v exited 0 with a 4 KB MP4 no player opens."""
    run = started["t2v at a size limit"]
    stdout, stderr = run.process.communicate(timeout=180)
    assert run.process.returncode == 1, stderr[-3000:]
    assert "error: ffmpeg failed writing 0000-a-big-video-s1.mp4" in stderr and "Traceback" not in stderr
    assert [p for p in tree(run.out) if "/" in p] == [] and stdout == ""  # no file, no path printed


def test_a_batch_killed_between_sidecar_and_video_is_resumed_without_duplicates(started):
    """Fault 3: a kill between the two renames left half a pair, and --resume made that line twice."""
    batch = started["batch killed"]
    batch.process.send_signal(signal.SIGKILL)
    batch.process.communicate()
    out = batch.out
    day = day_folder(out)
    assert sorted(p.name for p in day.iterdir() if not p.name.startswith(".")) == ["0000-first-fish-s0.json"]
    assert completed_outputs(out) == {}  # a sidecar without its video is not done

    prompts = str(batch.folder / "prompts.txt")
    resumed = runner.invoke(app, ["batch", prompts, *FAST, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "removed 2 partial file(s)" in resumed.stderr  # the write folder and the orphan sidecar
    assert "2 done" in resumed.stderr
    assert_each_line_once(out, [1, 2])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the sidecar's descriptor through /proc")
def test_t2v_on_a_full_disk_exits_1_and_leaves_nothing(tmp_path, monkeypatch):
    """Fault 4: the disk filled up at the sidecar; t2v exited 70 and left an MP4 without a sidecar."""
    real_write = os.write

    def full_at_the_sidecar(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.endswith(".json") and ".writing/" in target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    out = tmp_path / "out"
    monkeypatch.setattr(os, "write", full_at_the_sidecar)
    result = runner.invoke(app, ["t2v", "no room", *FAST, "--seed", "2", "--out", str(out)])
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "no space left on the device" in result.stderr and "hint: free some space" in result.stderr
    assert [p for p in tree(out) if "/" in p] == []


def test_two_batches_on_one_folder_make_each_video_once(started):
    """Fault 5: two batches on one --out both made every video (12 files for 6 lines).

    The second starts while the first is inside its first video, so the two surely overlap; the
    second runs with --resume, the first without: with either flag they share the work."""
    first, second = started["first of two batches"], started["second of two batches"]
    _, stderr = second.process.communicate(timeout=180)
    assert second.process.returncode == 0, stderr[-3000:]
    assert "line 1: skipped, another batch is making it" in stderr
    assert "3 done, 1 skipped" in stderr

    _, stderr = first.go()
    assert first.process.returncode == 0, stderr[-3000:]
    for line in (2, 3, 4):
        assert f"line {line}: skipped, already made: " in stderr
    assert "1 done, 3 skipped" in stderr
    assert_each_line_once(first.out, [1, 2, 3, 4])
